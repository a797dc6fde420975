"""What the runtime adds on top of git: ``status`` and ``log`` over HTTP against the same git commands run raw.

``python bench/git_overhead.py`` builds a repository with 10,000 files and
5,000 commits (in seconds, through ``git fast-import``), makes a few changes
in it, starts wsruntime on it, and then, alternating call by call so that
both see the same machine, times:

- ``GET .../version-control/status`` against ``git status --porcelain=v2 -z --branch …`` (the command the
  runtime runs, with the same options), and
- ``GET .../version-control/log?limit=50`` (and a deep page, ``skip=4000``) against the matching ``git log``.

The raw commands are started from this process with ``subprocess.run``, the way any Python caller would;
the difference of the medians is the runtime's overhead per call: HTTP, the event loop, spawning through
the subprocess registry, parsing and JSON. Target: under 10 ms. Results go to
``bench/results/git-overhead-<timestamp>.json``. Nothing here asserts a timing (see bench/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from harness import free_port, start_runtime, stop

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
WORKSPACE_ID = "bench"
LOG_FORMAT = "tformat:" + "%x00".join(
    ["%H", "%h", "%an", "%ae", "%at", "%cn", "%ce", "%ct", "%P", "%D", "%s", "%b"]
)  # the runtime's (wsruntime_ext/git/parse.py)


def git_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "WSRUNTIME_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    return env


def build_repository(repo: Path, env: dict[str, str], files: int, commits: int) -> float:
    """A repository of ``files`` files and ``commits`` commits via fast-import; returns the seconds it took."""
    started = time.monotonic()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], env=env, check=True)
    stream: list[bytes] = []
    stamp = 1_700_000_000

    def data(payload: bytes) -> None:
        stream.append(b"data %d\n%s\n" % (len(payload), payload))

    for n in range(commits):
        stream.append(b"commit refs/heads/main\n")
        stream.append(b"committer Bench <bench@example.com> %d +0000\n" % (stamp + n))
        data(b"Commit %d\n\nA body line for commit %d." % (n, n))
        if n == 0:
            for i in range(files):
                stream.append(b"M 100644 inline src/d%03d/file%05d.txt\n" % (i // 100, i))
                data(b"file %d\n" % i)
        else:
            i = (n * 7919) % files  # each later commit changes one file
            stream.append(b"M 100644 inline src/d%03d/file%05d.txt\n" % (i // 100, i))
            data(b"file %d changed in commit %d\n" % (i, n))
        stream.append(b"\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=repo, env=env, input=b"".join(stream), check=True, capture_output=True
    )
    subprocess.run(["git", "reset", "-q", "--hard", "main"], cwd=repo, env=env, check=True)
    # A realistic working state: a few modified, a few new files.
    for i in range(0, files, files // 10):
        path = repo / "src" / f"d{i // 100:03d}" / f"file{i:05d}.txt"
        path.write_text(f"locally modified {i}\n")
    for i in range(10):
        (repo / f"untracked {i}.txt").write_text("new\n")
    # Refresh the index once the files' timestamps are in the past, so that no entry stays "racily clean"
    # (re-read on every status): the state of any repository a moment after its last change.
    built = time.monotonic() - started
    time.sleep(1.1)
    subprocess.run(["git", "status", "--porcelain"], cwd=repo, env=env, check=True, capture_output=True)
    return built


class Api:
    """One keep-alive connection to the runtime, as a frontend would hold."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, endpoint: str) -> bytes:
        self.conn.request("GET", f"/api/v1/workspaces/{WORKSPACE_ID}/version-control/{endpoint}")
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{endpoint}: {response.status} {body[:300]!r}")
        return body


def raw_git(repo: Path, env: dict[str, str], args: list[str]) -> Callable[[], bytes]:
    """The git command the runtime runs, with the runtime's fixed options, started from here."""
    argv = ["git", "-c", f"safe.directory={repo}", "-c", "core.quotepath=false", "-c", "color.ui=false"]
    argv += ["-c", "user.useConfigOnly=true", "--no-optional-locks", *args]

    def call() -> bytes:
        return subprocess.run(argv, cwd=repo, env=env, capture_output=True, check=True).stdout

    return call


def measure(pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], rounds: int, warmup: int) -> dict[str, Any]:
    """Alternate runtime and raw calls of each pair; milliseconds per call."""
    timings: dict[str, dict[str, list[float]]] = {name: {"runtime": [], "git": []} for name in pairs}
    for round_no in range(warmup + rounds):
        for name, (runtime_call, git_call) in pairs.items():
            for side, call in (("runtime", runtime_call), ("git", git_call)):
                started = time.perf_counter()
                call()
                elapsed = (time.perf_counter() - started) * 1000
                if round_no >= warmup:
                    timings[name][side].append(elapsed)
    results: dict[str, Any] = {}
    for name, sides in timings.items():
        summary: dict[str, Any] = {side: summarise(values) for side, values in sides.items()}
        summary["overhead_ms"] = round(summary["runtime"]["median_ms"] - summary["git"]["median_ms"], 2)
        summary["overhead_p90_ms"] = round(summary["runtime"]["p90_ms"] - summary["git"]["p90_ms"], 2)
        results[name] = summary
    return results


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "min_ms": round(ordered[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=10_000, help="files in the repository (default 10000)")
    parser.add_argument("--commits", type=int, default=5_000, help="commits in the repository (default 5000)")
    parser.add_argument("--rounds", type=int, default=40, help="measured calls per side and operation (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured calls first (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository and the server log")
    parser.add_argument(
        "--wsruntime-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for wsruntime, repeatable (e.g. --wsruntime-arg=--watch=off)",
    )
    opts = parser.parse_args()

    temp = Path(tempfile.mkdtemp(prefix="wsruntime-git-bench-"))
    home = temp / "home"
    home.mkdir()
    env = git_env(home)
    repo = temp / "repo"
    proc = None
    try:
        load_before = os.getloadavg()[0]
        print(f"1-minute load before: {load_before:.2f} on {os.cpu_count()} cores")
        built = build_repository(repo, env, opts.files, opts.commits)
        count = subprocess.run(
            ["git", "rev-list", "--count", "HEAD"], cwd=repo, env=env, capture_output=True, text=True
        )
        print(f"repository: {opts.files} files, {count.stdout.strip()} commits, built in {built:.1f} s")
        port = free_port()
        proc = start_runtime(repo, port, env, temp / "wsruntime.log", WORKSPACE_ID, opts.wsruntime_arg)
        api = Api(port)
        status_args = ["status", "--porcelain=v2", "-z", "--branch", "--show-stash", "--untracked-files=all"]
        status_args += ["--", ":(literal)."]
        log_args = ["log", "-z", f"--format={LOG_FORMAT}", "--no-show-signature", "--max-count=51"]
        pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "status": (lambda: api.get("status"), raw_git(repo, env, status_args)),
            "log (limit=50)": (lambda: api.get("log?limit=50"), raw_git(repo, env, [*log_args, "--skip=0", "--"])),
            "log (limit=50, skip=4000)": (
                lambda: api.get("log?limit=50&skip=4000"),
                raw_git(repo, env, [*log_args, "--skip=4000", "--"]),
            ),
        }
        files_in_status = len(json.loads(api.get("status"))["files"])
        results = measure(pairs, opts.rounds, opts.warmup)
        load_after = os.getloadavg()[0]
    finally:
        if proc is not None:
            stop(proc)
        if not opts.keep:
            shutil.rmtree(temp, ignore_errors=True)

    print(f"status lists {files_in_status} changed files; {opts.rounds} calls per side, medians (p90) in ms\n")
    print(f"{'operation':<28}{'wsruntime':>18}{'raw git':>18}{'overhead':>12}")
    for name, r in results.items():
        runtime = f"{r['runtime']['median_ms']:.2f} ({r['runtime']['p90_ms']:.2f})"
        raw = f"{r['git']['median_ms']:.2f} ({r['git']['p90_ms']:.2f})"
        print(f"{name:<28}{runtime:>18}{raw:>18}{r['overhead_ms']:>10.2f}ms")
    print(f"\n1-minute load after: {load_after:.2f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS_DIR / f"git-overhead-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "files": opts.files,
                "commits": opts.commits,
                "rounds": opts.rounds,
                "warmup": opts.warmup,
                "wsruntime_args": opts.wsruntime_arg,
                "load_before": load_before,
                "load_after": load_after,
                "python": platform.python_version(),
                "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                "results": results,
            },
            indent=2,
        )
    )
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
