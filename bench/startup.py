"""Start-up of ``dist/wsruntime.pyz`` against the same code installed in a venv, side by side in one run.

``python bench/startup.py`` measures, for each target, the time from spawning
the process to its first ``200`` from ``GET /health`` — cold and warm — and its
resident memory once idle; and the pyz's size:

* **pyz cold**: an empty cache directory (``WSRUNTIME_CACHE_DIR``), so the start
  extracts everything and compiles what it imports; **pyz warm**: the cache
  that an earlier start left.
* **venv**: ``pip install`` of this checkout (and the locked wheels, by hash) into
  a fresh venv, started through its ``wsruntime`` console script. pip
  byte-compiles at install time, so its *warm* start is what users get; its
  *cold* start has every ``__pycache__`` of our code and its dependencies removed
  first, for comparison with the pyz's cold start.

Both run on the same interpreter, the venv's (the pyz ignores its
site-packages): an interpreter whose global site-packages is crowded with
``.pth`` hooks would otherwise charge its own start-up to the pyz alone. Every
process runs with ``python -I`` on 127.0.0.1, ``--log-level warning``, in a
fresh workspace; the runs of all targets are interleaved so that a load
spike hits them alike; the table shows medians (min–max) and the targets, and
``bench/results/startup-<UTC timestamp>.json`` keeps everything. The machine
should be quiet: the 1-minute load is printed and, with ``--max-load``, waited
for. Nothing here asserts; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import free_port

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"
MIB = 1 << 20
TARGETS_S = {"cold": 0.7, "warm": 0.35}
TARGET_RSS_MIB = 45.0
TARGET_SIZE_MIB = 2.0
OUR_PACKAGES = ("wsruntime_ext", "tornado", "psutil", "python_multipart", "multipart")


class BenchError(Exception):
    """Ends the run with a message instead of a traceback."""


@dataclass
class Sample:
    seconds: float  # wall clock from spawn to the first 200 from /health
    cpu_s: float  # user + system CPU the process used until then: hardly moved by other load
    rss_mib: float


@dataclass
class Mode:
    """One way of starting the runtime: a command line for a port and workspace, a hook before each run."""

    name: str
    command: Callable[[int, Path], list[str]]
    env: dict[str, str]
    before: Callable[[], None] = lambda: None
    samples: list[Sample] = field(default_factory=list)


def first_health(port: int, proc: subprocess.Popen[bytes], started: float, timeout: float = 30.0) -> float:
    """Seconds from ``started`` until /health answers 200 (polled every 2 ms)."""
    request = f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with {proc.returncode} before answering")
        try:
            with socket.create_connection((HOST, port), timeout=5) as sock:
                sock.sendall(request)
                head = sock.recv(64)
            if head.startswith(b"HTTP/1.1 200"):
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.002)
    raise BenchError(f"no answer from /health within {timeout:.0f}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (clock-tick resolution, usually 10 ms)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for {pid}")


def run_once(mode: Mode, scratch: Path, idle_s: float) -> Sample:
    mode.before()
    workspace = Path(tempfile.mkdtemp(prefix="ws-", dir=scratch))
    port = free_port()
    command = mode.command(port, workspace)
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=workspace,
        env=mode.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        seconds = first_health(port, proc, started)
        cpu = cpu_seconds(proc.pid)
        time.sleep(idle_s)
        rss = rss_mib(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Sample(seconds, cpu, rss)


def make_venv(path: Path, python: str) -> Path:
    """A venv with the locked dependency wheels (hash-checked) and this checkout installed (not editable)."""
    subprocess.run([python, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    lock = ROOT / "zipapp" / "requirements.lock"
    subprocess.run([*pip, "--only-binary=:all:", "--require-hashes", "-r", str(lock)], check=True)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)
    return path


def purge_bytecode(venv: Path) -> Callable[[], None]:
    site = next((venv / "lib").glob("python3.*/site-packages"))

    def purge() -> None:
        for package in OUR_PACKAGES:
            for cache in (site / package).rglob("__pycache__"):
                shutil.rmtree(cache, ignore_errors=True)

    return purge


def fresh_cache(scratch: Path, env: dict[str, str]) -> Callable[[], None]:
    def prepare() -> None:
        env["WSRUNTIME_CACHE_DIR"] = tempfile.mkdtemp(prefix="cold-cache-", dir=scratch)

    return prepare


def base_env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSRUNTIME_", "PYTHON"))}
    env.update(HOME=str(scratch / "home"), TMPDIR=str(scratch))
    return env


def wait_for_quiet(max_load: float | None, patience_s: float = 300) -> float:
    load = os.getloadavg()[0]
    deadline = time.monotonic() + patience_s
    while max_load is not None and load > max_load and time.monotonic() < deadline:
        print(f"1-minute load {load:.2f} > {max_load}: waiting 30 s", flush=True)
        time.sleep(30)
        load = os.getloadavg()[0]
    return load


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cell(values: list[float], unit: str, digits: int) -> str:
    s = summary(values)
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pyz", default=str(ROOT / "dist" / "wsruntime.pyz"), help="default: dist/wsruntime.pyz")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the venv (default: this one)")
    parser.add_argument("--runs", type=int, default=7, help="starts per mode (default: 7)")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS (default: 1)")
    parser.add_argument("--venv", help="reuse this venv instead of creating one (it must have wsruntime installed)")
    parser.add_argument("--max-load", type=float, default=None, help="wait (up to 5 min) for a lower 1-minute load")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        help="an extra runtime argument for both targets, repeatable (e.g. --arg=--claude-bin=/nonexistent "
        "leaves out the agent CLI probe that start-up waits for)",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wsruntime-startup-"))
    (path / "home").mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pyz = Path(args.pyz).resolve()
    if not pyz.is_file():
        raise BenchError(f"{pyz} does not exist: run python zipapp/build.py first")
    with scratch_dir() as scratch:
        print("preparing the venv (pip install of the locked wheels and this checkout) ...", flush=True)
        venv = Path(args.venv) if args.venv else make_venv(scratch / "venv", args.python)
        venv_python = str(venv / "bin" / "python")
        common = ["--host", HOST, "--log-level", "warning", *args.arg]
        warm_env = base_env(scratch)
        warm_env["WSRUNTIME_CACHE_DIR"] = str(scratch / "warm-cache")
        cold_env = base_env(scratch)

        def pyz_command(port: int, workspace: Path) -> list[str]:
            return [venv_python, "-I", str(pyz), "--port", str(port), "--workspace", str(workspace), *common]

        def venv_command(port: int, workspace: Path) -> list[str]:
            script = str(venv / "bin" / "wsruntime")
            return [venv_python, "-I", script, "--port", str(port), "--workspace", str(workspace), *common]

        modes = [
            Mode("pyz cold", pyz_command, cold_env, fresh_cache(scratch, cold_env)),
            Mode("pyz warm", pyz_command, warm_env),
            Mode("venv cold", venv_command, base_env(scratch), purge_bytecode(venv)),
            Mode("venv warm", venv_command, base_env(scratch)),
        ]
        for mode in modes:  # one discarded start each: warms the page cache and the warm targets' bytecode
            run_once(mode, scratch, 0)
        load_before = wait_for_quiet(args.max_load)
        print(
            f"1-minute load before measuring: {load_before:.2f}; {args.runs} starts per mode, interleaved", flush=True
        )
        for _ in range(args.runs):
            for mode in modes:
                mode.samples.append(run_once(mode, scratch, args.idle))
        load_after = os.getloadavg()[0]
        size = pyz.stat().st_size
        python_version = subprocess.run(
            [venv_python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"interpreter for both: {venv_python} (CPython {python_version})")

    by_name = {m.name: m for m in modes}
    print()
    print(f"{'':24} {'size':>9}   {'cold start':>20}   {'warm start':>20}   {'idle RSS (warm)':>22}")
    for label, prefix, size_text in (
        ("wsruntime.pyz", "pyz", f"{size / MIB:.2f} MiB"),
        ("venv (pip install .)", "venv", "—"),
    ):
        cold, warm = by_name[f"{prefix} cold"], by_name[f"{prefix} warm"]
        print(
            f"{label:24} {size_text:>9}   {cell([s.seconds for s in cold.samples], ' s', 3):>20}   "
            f"{cell([s.seconds for s in warm.samples], ' s', 3):>20}   "
            f"{cell([s.rss_mib for s in warm.samples], ' MiB', 1):>22}"
        )
        print(
            f"{'  CPU time until then':24} {'':>9}   {cell([s.cpu_s for s in cold.samples], ' s', 2):>20}   "
            f"{cell([s.cpu_s for s in warm.samples], ' s', 2):>20}"
        )
    print(f"{'target (pyz)':24} {'< 2 MiB':>9}   {'≤ 0.700 s':>20}   {'≤ 0.350 s':>20}   {'≤ 45.0 MiB':>22}")
    ratios = {
        f"{kind} start pyz/venv": statistics.median(s.seconds for s in by_name[f"pyz {kind}"].samples)
        / statistics.median(s.seconds for s in by_name[f"venv {kind}"].samples)
        for kind in ("cold", "warm")
    }
    ratios["idle RSS pyz/venv"] = statistics.median(s.rss_mib for s in by_name["pyz warm"].samples) / statistics.median(
        s.rss_mib for s in by_name["venv warm"].samples
    )
    print("  ".join(f"{name}: {value:.2f}x" for name, value in ratios.items()))
    print(f"1-minute load: {load_before:.2f} before, {load_after:.2f} after")

    verdicts = {
        "size": size / MIB < TARGET_SIZE_MIB,
        "cold": summary([s.seconds for s in by_name["pyz cold"].samples])["median"] <= TARGETS_S["cold"],
        "warm": summary([s.seconds for s in by_name["pyz warm"].samples])["median"] <= TARGETS_S["warm"],
        "rss": summary([s.rss_mib for s in by_name["pyz warm"].samples])["median"] <= TARGET_RSS_MIB,
    }
    print("targets (medians): " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in verdicts.items()))
    results_dir = BENCH_DIR / "results"
    results_dir.mkdir(exist_ok=True)
    out = results_dir / f"startup-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    record: dict[str, Any] = {
        "pyz": str(pyz),
        "pyz_bytes": size,
        "python": venv_python,
        "python_version": python_version,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_1min": {"before": load_before, "after": load_after},
        "runs": args.runs,
        "extra_args": args.arg,
        "idle_s": args.idle,
        "modes": {
            m.name: [{"seconds": s.seconds, "cpu_s": s.cpu_s, "rss_mib": s.rss_mib} for s in m.samples] for m in modes
        },
        "ratios": ratios,
        "targets_met": verdicts,
    }
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"startup.py: {exc}", file=sys.stderr)
        sys.exit(1)
