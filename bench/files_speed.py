"""Issue 16's table in one command: Files and /health against their peers, side by side, in alternating rounds.

``python bench/files_speed.py`` starts wsruntime, jupyter_server and a bare Tornado app (``run.py``'s
targets, each in its own temporary workspace), then for every row runs wsruntime and its peer in
turn, ``--rounds`` times with the order alternating (A B, B A, A B, ...), and takes each side's
median. While one side is measured every other server is stopped (SIGSTOP to its process group,
SIGCONT after), so an idle peer's timers cannot take CPU from it on a two-core machine. The upload
row compares a streamed multipart ``POST /api/v1/files/upload`` of ``--upload-size`` bytes with
``cp`` of a file of the same size on the same file system (dirty pages flushed with ``sync`` before
each; cp's source read into the page cache first, as the upload's body is in memory), shows a durable
copy (the same copy, then ``fsync``: the upload fsyncs before it answers, cp does not) beside them, and
samples the server's RSS while it runs. Prints the table with the ratios, the goals
and the 1-minute load average before and after, and writes ``bench/results/files-speed-<ts>.json``.
Nothing here asserts timings; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
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
from run import (
    PUT_4K,
    RESULTS_DIR,
    TARGETS,
    BenchError,
    Request,
    Scenario,
    Server,
    Target,
    bench_target,
    environment,
    seconds,
    start_server,
    stop_server,
    wait_ready,
    write_files_workspace,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.memory import MIB, PeakRss, body_pieces  # noqa: E402  (run as a script: the project root first)

SMALL_1K = (b"wsruntime bench 1 KiB file, " * 40)[:1024]


def write_workspace(target: str, workspace: Path) -> None:
    """run.py's Files workspace plus the 1 KiB file of the issue's first row."""
    write_files_workspace(workspace)
    (workspace / "small1k.txt").write_bytes(SMALL_1K)


@dataclass(frozen=True)
class Row:
    """One line of the table: a wrk scenario (wsruntime and ``peer``), or the upload (``scenario`` None)."""

    name: str
    what: str
    peer: str
    goal: float | None  # the wanted wsruntime/peer ratio (None: keep what it is)
    scenario: Scenario | None = None
    min_duration: int = 0  # a row whose peer answers every few seconds needs a longer wrk window
    context: bool = False  # not a goal: how close wsruntime is to a floor


def _scenario(name: str, ws: Request, peer_name: str, peer: Request, connections: int | None = None) -> Scenario:
    return Scenario(name, name, {"wsruntime": ws, peer_name: peer}, prepare=write_workspace, connections=connections)


ROWS = [
    Row(
        "get-1k",
        "GET a 1 KiB file (raw)",
        "jupyter_server",
        4.0,
        _scenario(
            "get-1k",
            Request("/api/v1/files/small1k.txt"),
            "jupyter_server",
            Request("/api/contents/small1k.txt?content=1&format=text&type=file"),
        ),
    ),
    Row(
        "put-4k",
        "PUT a 4 KiB file (raw body)",
        "jupyter_server",
        3.0,
        _scenario(
            "put-4k",
            Request("/api/v1/files/put.txt", method="PUT", body=PUT_4K),
            "jupyter_server",
            Request(
                "/api/contents/put.txt",
                method="PUT",
                body=json.dumps({"type": "file", "format": "text", "content": PUT_4K.decode()}).encode(),
                headers={"Content-Type": "application/json"},
            ),
        ),
    ),
    Row(
        "put-floor",
        "PUT 4 KiB, against the same write in bare Tornado",
        "bare_tornado",
        None,
        _scenario(
            "put-floor",
            Request("/api/v1/files/put.txt", method="PUT", body=PUT_4K),
            "bare_tornado",
            Request("/files/put.txt", method="PUT", body=PUT_4K),
        ),
        context=True,
    ),
    Row(
        "list-10k",
        "list a 10k-entry folder (2 connections)",
        "jupyter_server",
        None,
        _scenario(
            "list-10k",
            Request("/api/v1/files?path=dir10k"),
            "jupyter_server",
            Request("/api/contents/dir10k?content=1"),
            connections=2,  # a jupyter_server listing takes ~2 s: 32 queued ones would measure the queue
        ),
        min_duration=15,
    ),
    Row(
        "get-10m",
        "GET a 10 MB file",
        "jupyter_server",
        3.0,
        _scenario(
            "get-10m",
            Request("/api/v1/files/big.txt"),
            "jupyter_server",
            Request("/api/contents/big.txt?content=1&format=text&type=file"),
        ),
    ),
    Row("upload", "POST /api/v1/files/upload, multipart (MiB/s)", "cp", 0.5),
    Row(
        "health",
        "GET /health",
        "bare_tornado",
        0.9,
        _scenario("health", Request("/health"), "bare_tornado", Request("/health")),
    ),
]


def adapted(target: Target, limit: int, checkout: Path) -> Target:
    """wsruntime from ``checkout`` (this one by default), with ``--max-upload-size`` raised so that the
    upload and its multipart framing fit; other targets as they are."""
    if target.name != "wsruntime":
        return target
    ours = str(ROOT / "wsruntime.py")

    def command(port: int, workspace: Path, opts: argparse.Namespace) -> list[str]:
        argv = [str(checkout / "wsruntime.py") if arg == ours else arg for arg in target.command(port, workspace, opts)]
        return [*argv, "--max-upload-size", str(limit)]

    return dataclasses.replace(target, command=command)


def load1() -> float:
    return os.getloadavg()[0]


@contextlib.contextmanager
def only_running(servers: dict[str, Server], name: str | None) -> Iterator[None]:
    """Every server but ``name`` stopped (SIGSTOP to its process group) for the duration of the block."""
    paused = [s for n, s in servers.items() if n != name and s.proc.poll() is None]
    for server in paused:
        os.killpg(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for server in paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGCONT)


def upload_once(port: int, size: int, name: str) -> float:
    """One streamed multipart upload of ``size`` bytes; its throughput in MiB/s (the answer included)."""
    boundary = "benchBoundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from body_pieces(size)
        yield tail

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        started = time.perf_counter()
        conn.request(
            "POST",
            "/api/v1/files/upload?overwrite=true",
            body=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            },
        )
        response = conn.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(f"upload answered {response.status}: {answer[:300]!r}")
    return size / MIB / elapsed


def cache(path: Path) -> None:
    """Read ``path`` whole, so that a copy of it reads the page cache, not the disk (this machine's kernel
    may have evicted it since it was written: a cp that reads the disk measured the disk)."""
    with path.open("rb") as f:
        while f.read(8 * MIB):
            pass


def cp_once(source: Path, target: Path, size: int) -> float:
    cache(source)
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    return size / MIB / (time.perf_counter() - started)


def durable_copy_once(source: Path, target: Path, size: int) -> float:
    """cp's copy, then an fsync of the copy (what an upload does before it answers): the disk's share."""
    cache(source)
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / MIB / (time.perf_counter() - started)


def measure_upload(servers: dict[str, Server], opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Alternating rounds of the upload and of ``cp``, ``sync`` before each; RSS growth of each upload."""
    ws = servers["wsruntime"]
    size = opts.upload_size
    source = tmp / "cp-source.bin"
    with source.open("wb") as f:
        for piece in body_pieces(size):
            f.write(piece)
    copy = ws.workspace / "cp-copy.bin"
    with only_running(servers, "wsruntime"):
        upload_once(ws.port, 8 * MIB, "warm.bin")  # imports, thread pool, buffers
    samples: dict[str, list[float]] = {"wsruntime": [], "cp": [], "cp+fsync": []}
    growth: list[float] = []
    cpu: list[float] = []  # the server's CPU seconds per GiB uploaded
    for round_no in range(opts.rounds):
        order = ["wsruntime", "cp", "cp+fsync"] if round_no % 2 == 0 else ["cp+fsync", "cp", "wsruntime"]
        for side in order:
            subprocess.run(["sync"], check=True)  # every side starts with no dirty pages of the one before
            with only_running(servers, "wsruntime" if side == "wsruntime" else None):
                if side != "wsruntime":
                    copier = cp_once if side == "cp" else durable_copy_once
                    samples[side].append(copier(source, copy, size))
                    copy.unlink()
                else:
                    baseline = psutil.Process(ws.proc.pid).memory_info().rss
                    before = cpu_seconds(ws)
                    with PeakRss(ws.proc.pid) as rss:
                        samples["wsruntime"].append(upload_once(ws.port, size, "upload.bin"))
                    growth.append((rss.peak - baseline) / MIB)
                    cpu.append((cpu_seconds(ws) - before) / (size / (1 << 30)))
            print(f"    upload round {round_no + 1} {side}: {samples[side][-1]:.0f} MiB/s", flush=True)
    source.unlink()
    (ws.workspace / "upload.bin").unlink(missing_ok=True)
    return {"samples": samples, "rss_growth_mib": growth, "server_cpu_s_per_gib": cpu, "unit": "MiB/s"}


def measure_wrk(row: Row, servers: dict[str, Server], opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Alternating wrk rounds of wsruntime and the row's peer, each with the other stopped."""
    assert row.scenario is not None
    sides = ["wsruntime", row.peer]
    samples: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    records: list[dict[str, Any]] = []
    for round_no in range(opts.rounds):
        for side in sides if round_no % 2 == 0 else list(reversed(sides)):
            server = servers[side]
            duration = max(opts.duration, row.min_duration)
            with only_running(servers, side):
                if opts.warmup > 0:  # run here, so that the CPU time below covers the measured run alone
                    warm = argparse.Namespace(**{**vars(opts), "duration": opts.warmup, "warmup": 0})
                    bench_target(row.scenario, server, warm, tmp / "wrk")
                before = cpu_seconds(server)
                measured = argparse.Namespace(**{**vars(opts), "duration": duration, "warmup": 0})
                record = bench_target(row.scenario, server, measured, tmp / "wrk")
                record["server_cpu_us_per_request"] = (cpu_seconds(server) - before) / max(1, record["requests"]) * 1e6
            cpu[side].append(record["server_cpu_us_per_request"])
            errors = {k: v for k, v in record["errors"].items() if v}
            if errors:
                print(f"    ! {side}: {errors}", file=sys.stderr)
            samples[side].append(record["requests_per_s"])
            records.append({k: v for k, v in record.items() if k != "wrk_output"})
            print(
                f"    {row.name} round {round_no + 1} {side}: {record['requests_per_s']:.1f} req/s, "
                f"{record['server_cpu_us_per_request']:.0f} µs CPU a request",
                flush=True,
            )
    return {"samples": samples, "cpu_us_per_request": cpu, "unit": "req/s", "records": records}


def cpu_seconds(server: Server) -> float:
    """User and system CPU time of a server and its children so far."""
    process = psutil.Process(server.proc.pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'row':10} {'what':46} {'wsruntime':>10} {'peer':>22} {'ratio':>7} {'goal':>7}  met  "
        f"{'µs CPU/request: ws':>8} {'peer':>8} {'ratio':>7}"
    ]
    for row in ROWS:
        result = results.get(row.name)
        if result is None:
            continue
        ws, peer = result["median"]["wsruntime"], result["median"][row.peer]
        ratio = ws / peer if peer else float("nan")
        goal = "floor" if row.context else "keep" if row.goal is None else f">={row.goal:.2f}x"
        met = "-" if row.goal is None else "yes" if ratio >= row.goal else "NO"
        peer_cell = f"{row.peer} {peer:.1f}"
        cpu = result.get("cpu_us_per_request")
        if cpu:  # CPU time a request, each side's median: steadier than req/s when others load the machine
            ws_cpu, peer_cpu = statistics.median(cpu["wsruntime"]), statistics.median(cpu[row.peer])
            cpu_cell = f"{ws_cpu:8.0f} {peer_cpu:8.0f} {peer_cpu / ws_cpu:6.2f}x"
        else:
            cpu_cell = (
                f"{statistics.median(result['server_cpu_s_per_gib']):8.2f} s/GiB"
                if "server_cpu_s_per_gib" in result
                else ""
            )
        lines.append(
            f"{row.name:10} {row.what:46} {ws:10.1f} {peer_cell:>22} {ratio:6.2f}x {goal:>7}  {met:3}  {cpu_cell}"
        )
        if "cp+fsync" in result["median"]:
            durable = result["median"]["cp+fsync"]
            lines.append(
                f"{'':10} {'  against cp + fsync (a durable copy)':46} {ws:10.1f} {'cp+fsync ' + f'{durable:.1f}':>22} "
                f"{ws / durable:6.2f}x"
            )
        if "rss_growth_mib" in result:
            growth = max(result["rss_growth_mib"])
            lines.append(f"{'':10} {'  RSS growth of the upload (MiB, max of rounds)':46} {growth:10.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/files_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (default: 3)")
    parser.add_argument("--duration", type=seconds, default=5, help="measured wrk seconds per round (default: 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: 2)")
    parser.add_argument("--warmup", type=seconds, default=1, help="unmeasured wrk seconds before each round (1)")
    parser.add_argument("--upload-size", type=int, default=1 << 30, help="bytes per upload (default: 1 GiB)")
    names = [row.name for row in ROWS]
    parser.add_argument("--only", action="append", default=[], choices=names, help="run only this row; repeatable")
    parser.add_argument("--wsruntime-log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--wrk-timeout", type=seconds, default=30)
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--wsruntime",
        default=str(ROOT),
        metavar="DIR",
        help="the checkout whose wsruntime.py is measured (default: this one; e.g. an older commit's "
        "`git archive` for a before/after table)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    rows = [row for row in ROWS if not opts.only or row.name in opts.only]
    wanted = {"wsruntime"} | {row.peer for row in rows if row.scenario is not None}
    checkout = Path(opts.wsruntime).resolve()
    if not (checkout / "wsruntime.py").is_file():
        print(f"files_speed: error: no wsruntime.py in {checkout}", file=sys.stderr)
        return 2
    targets = [adapted(t, opts.upload_size + 2 * MIB, checkout) for t in TARGETS if t.name in wanted]
    tmp = Path(tempfile.mkdtemp(prefix="wsruntime-files-speed-"))
    load_before = load1()
    print(
        f"files_speed: {opts.rounds} alternating rounds, wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s, "
        f"upload {opts.upload_size / MIB:.0f} MiB; load {load_before:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results: dict[str, dict[str, Any]] = {}
    servers: dict[str, Server] = {}
    try:
        for target in targets:
            servers[target.name] = start_server(target, tmp, opts)
            write_workspace(target.name, servers[target.name].workspace)
        for server in servers.values():
            wait_ready(server, opts.start_timeout)
        for row in rows:
            print(f"  {row.name}: {row.what}", flush=True)
            if row.scenario is None:
                result = measure_upload(servers, opts, tmp)
            else:
                result = measure_wrk(row, servers, opts, tmp)
            result["median"] = {side: statistics.median(values) for side, values in result["samples"].items()}
            result["load1_after"] = load1()
            results[row.name] = result
    except BenchError as exc:
        print(f"files_speed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("files_speed: interrupted", file=sys.stderr)
        return 130
    finally:
        for server in servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGCONT)
            stop_server(server)
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = load1()
    print()
    print(format_table(results))
    print(f"wsruntime from {checkout}; load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"files-speed-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    payload = {
        "wsruntime_checkout": str(checkout),
        "load1_before": load_before,
        "load1_after": load_after,
        **environment(opts),
        "rows": results,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
