"""Live events: how fast a change on disk reaches a WebSocket client, and what watching costs when idle.

``python bench/events_latency.py`` starts wsruntime twice side by side — ``--watch inotify`` and
``--watch poll`` — and measures, in one run:

1. **latency**: from ``os.write()`` returning to the ``file_changed`` event arriving on the
   socket, for ``--events`` writes (each to a different, already existing file, one at a time,
   with a random pause of up to ``--gap-ms`` between them so that writes fall at every phase
   of a polling pass), per backend: p50, p90, p99, max;
2. **idle CPU**: both servers watch the same tree of ``--idle-files`` files (100 per directory)
   with a client connected, and nothing changes; the CPU time of each server process
   (psutil ``cpu_times``, user + system) over ``--idle-seconds`` seconds, as a share of one core.

It waits for a quiet machine first (1-minute load ≤ ``--max-load``, up to ``--load-wait`` seconds)
and records the load it measured under. Results go to ``bench/results/events-<timestamp>.json``.
Targets (issue 5): inotify p50 ≤ 5 ms, p99 ≤ 20 ms; idle CPU < 1 % with inotify.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import tornado.httpclient
import tornado.websocket

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BACKENDS = ("inotify", "poll")
TARGETS = {"p50_ms": 5.0, "p99_ms": 20.0, "idle_cpu_percent": 1.0}  # for inotify


@dataclass
class Server:
    """A wsruntime process started for the benchmark."""

    backend: str
    proc: subprocess.Popen[str]
    url: str
    workspace: Path
    started: float  # monotonic, when the process was spawned

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "/api/v1/ws?topics=file_changed"


def start_server(backend: str, workspace: Path, state_dir: Path, log: Path) -> Server:
    command = [sys.executable, str(ROOT / "wsruntime.py"), "--host", "127.0.0.1", "--port", "0"]
    command += ["--workspace", str(workspace), "--state-dir", str(state_dir), "--watch", backend]
    command += ["--log-level", "warning"]
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, start_new_session=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{backend} server exited: {log.read_text()[-2000:]}")
        if "URL:" in line:
            return Server(backend, proc, line.split("URL:", 1)[1].split()[0], workspace, started)
    raise RuntimeError(f"{backend} server did not start")


def stop_server(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


@contextlib.contextmanager
def servers(workspaces: dict[str, Path], tmp: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for backend, workspace in workspaces.items():
            state = tmp / f"state-{backend}-{workspace.name}"
            started[backend] = start_server(backend, workspace, state, tmp / f"{backend}-{workspace.name}.log")
        yield started
    finally:
        for server in started.values():
            stop_server(server)


async def health(server: Server) -> dict[str, Any]:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(server.url + "/health", request_timeout=10)
    finally:
        client.close()
    return json.loads(response.body)  # type: ignore[no-any-return]


async def wait_ready(server: Server, timeout: float = 600) -> float:
    """Seconds from the start of the process until its watcher finished its first walk (±50 ms)."""
    while not (await health(server))["watch"]["ready"]:
        if time.monotonic() - server.started > timeout:
            raise RuntimeError(f"{server.backend}: the watcher is not ready after {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - server.started


async def connect(server: Server) -> tornado.websocket.WebSocketClientConnection:
    ws = await tornado.websocket.websocket_connect(server.ws_url)
    hello = json.loads(await ws.read_message() or "{}")
    assert hello.get("type") == "hello", hello
    return ws


# -- latency ----------------------------------------------------------------------------


async def measure_latency(server: Server, count: int, timeout: float, gap: float) -> dict[str, Any]:
    """Write to ``count`` existing files one at a time; time write() → its first event on the socket."""
    directory = server.workspace / "latency"
    await wait_ready(server)
    ws = await connect(server)
    latencies: list[float] = []
    missed = 0
    try:
        for i in range(count):
            rel = f"latency/f{i:04d}.txt"
            fd = os.open(directory / f"f{i:04d}.txt", os.O_WRONLY)
            try:
                os.write(fd, b"changed\n")
                written = time.perf_counter()
                deadline = written + timeout
                while True:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        missed += 1
                        break
                    try:
                        text = await asyncio.wait_for(ws.read_message(), remaining)
                    except asyncio.TimeoutError:
                        continue
                    arrived = time.perf_counter()
                    if text is None:
                        raise RuntimeError(f"{server.backend}: the socket closed")
                    event = json.loads(text)
                    if event.get("type") == "file_changed" and event.get("path") == rel:
                        latencies.append((arrived - written) * 1000)
                        break
            finally:
                os.close(fd)
            # A random pause, so that writes fall at every phase of a polling pass, as real ones do.
            await asyncio.sleep(random.uniform(0.002, gap))
    finally:
        ws.close()
    return summarize(latencies) | {"events": count, "missed": missed}


def summarize(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "p50_ms": pick(0.50),
        "p90_ms": pick(0.90),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


# -- idle CPU ---------------------------------------------------------------------------


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    """``files`` empty files, ``per_dir`` to a directory, in two levels of directories."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(0, files, per_dir):
        d = root / f"g{n // (per_dir * 100):03d}" / f"d{n // per_dir:05d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_dir, files - n)):
            (d / f"file{i:03d}.txt").touch()


async def measure_idle(
    started: dict[str, Server], ready: dict[str, float], seconds: float, settle: float
) -> dict[str, Any]:
    """CPU share of one core of each server, all measured over the same window."""
    results: dict[str, Any] = {backend: {"ready_s": round(ready[backend], 3)} for backend in started}
    sockets = [await connect(server) for server in started.values()]
    try:
        await asyncio.sleep(settle)
        processes = {b: psutil.Process(s.proc.pid) for b, s in started.items()}
        before = {b: p.cpu_times() for b, p in processes.items()}
        began = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - began
        for backend, process in processes.items():
            after = process.cpu_times()
            used = (after.user - before[backend].user) + (after.system - before[backend].system)
            watch = (await health(started[backend]))["watch"]
            results[backend].update(
                cpu_s=round(used, 3),
                wall_s=round(wall, 1),
                idle_cpu_percent=round(100 * used / wall, 3),
                rss_mb=round(process.memory_info().rss / 2**20, 1),
                watch=watch,
            )
    finally:
        for ws in sockets:
            ws.close()
    return results


# -- the run ----------------------------------------------------------------------------


def wait_for_quiet(max_load: float, wait: float) -> list[float]:
    deadline = time.monotonic() + wait
    while True:
        load = list(os.getloadavg())
        if load[0] <= max_load or time.monotonic() > deadline:
            if load[0] > max_load:
                print(f"warning: 1-minute load {load[0]:.2f} > {max_load}: numbers are skewed", file=sys.stderr)
            return load
        print(f"waiting for a quieter machine: 1-minute load {load[0]:.2f} > {max_load}", file=sys.stderr, flush=True)
        time.sleep(15)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="writes timed per backend (default 1000)")
    parser.add_argument("--idle-files", type=int, default=100_000, help="files watched while idle (default 100000)")
    parser.add_argument("--idle-seconds", type=float, default=30, help="idle CPU measured over (default 30)")
    parser.add_argument("--settle", type=float, default=5, help="seconds after the first walk before measuring")
    parser.add_argument("--gap-ms", type=float, default=200, help="random pause of up to this between writes")
    parser.add_argument("--timeout", type=float, default=10, help="seconds to wait for one event before a miss")
    parser.add_argument("--only", choices=BACKENDS, action="append", help="one backend only (repeatable)")
    parser.add_argument("--skip-idle", action="store_true", help="latency only")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait until the 1-minute load is at most this")
    parser.add_argument("--load-wait", type=float, default=300, help="but no longer than this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (workspaces, server logs)")
    return parser.parse_args(argv)


async def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    backends = opts.only or list(BACKENDS)
    report: dict[str, Any] = {"latency": {}, "idle": {}}

    workspaces = {}
    for backend in backends:
        workspace = tmp / f"latency-{backend}"
        (workspace / "latency").mkdir(parents=True)
        for i in range(opts.events):
            (workspace / "latency" / f"f{i:04d}.txt").write_bytes(b"initial\n")
        workspaces[backend] = workspace
    with servers(workspaces, tmp) as started:
        report["load_latency"] = wait_for_quiet(opts.max_load, opts.load_wait)
        for backend, server in started.items():
            print(f"latency: {backend}, {opts.events} writes …", flush=True)
            report["latency"][backend] = await measure_latency(server, opts.events, opts.timeout, opts.gap_ms / 1000)

    if not opts.skip_idle:
        tree = tmp / "tree"
        print(f"idle: creating {opts.idle_files} files …", flush=True)
        make_tree(tree, opts.idle_files)
        with servers(dict.fromkeys(backends, tree), tmp) as started:
            ready = {backend: await wait_ready(server) for backend, server in started.items()}
            report["load_idle"] = wait_for_quiet(opts.max_load, opts.load_wait)
            print(f"idle: {opts.idle_seconds:g} s with {opts.idle_files} files watched …", flush=True)
            report["idle"] = await measure_idle(started, ready, opts.idle_seconds, opts.settle)
            report["load_idle_after"] = list(os.getloadavg())
    return report


def print_table(report: dict[str, Any]) -> None:
    print("\nlatency, write() returning → file_changed on the socket (ms)")
    print(f"{'backend':<10}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>10}{'mean':>9}{'missed':>8}")
    for backend, r in report["latency"].items():
        cells = [
            r[k] if r[k] is not None else float("nan") for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")
        ]
        print(
            f"{backend:<10}{cells[0]:>9.2f}{cells[1]:>9.2f}{cells[2]:>9.2f}{cells[3]:>10.2f}{cells[4]:>9.2f}"
            f"{r['missed']:>8}"
        )
    if report["idle"]:
        print("\nidle, nothing changing, one client connected (CPU share of one core)")
        print(f"{'backend':<10}{'files':>8}{'dirs':>8}{'walk s':>9}{'cpu %':>9}{'rss MB':>9}")
        for backend, r in report["idle"].items():
            watch = r["watch"]
            dirs = watch.get("directories", 0)
            files = watch.get("files", "")
            print(
                f"{backend:<10}{files!s:>8}{dirs:>8}{r['ready_s']:>9.2f}{r['idle_cpu_percent']:>9.3f}{r['rss_mb']:>9.1f}"
            )
    ino_lat, ino_idle = report["latency"].get("inotify"), report["idle"].get("inotify")
    if ino_lat and ino_lat["p50_ms"] is not None:
        print(
            f"\ntargets (inotify): p50 {ino_lat['p50_ms']:.2f} ≤ 5 ms, p99 {ino_lat['p99_ms']:.2f} ≤ 20 ms"
            + (f", idle CPU {ino_idle['idle_cpu_percent']:.3f} % < 1 %" if ino_idle else "")
        )
    print(
        f"load average (1, 5, 15 min) at latency start {report.get('load_latency')}, "
        f"at idle start {report.get('load_idle')}"
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("this benchmark needs Linux (inotify)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="wsruntime-events-bench-"))
    started = time.gmtime()
    try:
        report = asyncio.run(run(opts, tmp))
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if opts.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(report)
    payload = {
        "benchmark": "events",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
        "settings": {k: v for k, v in vars(opts).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "targets_inotify": TARGETS,
        **report,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"events-{time.strftime('%Y%m%dT%H%M%SZ', started)}.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
