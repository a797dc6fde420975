"""Processes and terminals: keystroke echo latency through a pty over the WebSocket, and output throughput.

``python bench/processes.py [--keys 500] [--mib 1024] [--clients 3]`` starts wsruntime on a temp
workspace and measures:

1. **echo, local**: ``bash --norc --noprofile`` under a pty opened by this process; one key is
   written to the master and timed until its echo comes back (p50/p99 over ``--keys`` keys);
2. **echo, runtime**: the same shell as a terminal of the runtime (``POST /api/v1/processes``
   with ``pty``); one binary WebSocket frame per key, timed until the frame with its echo arrives;
3. **output, raw pipe**: ``head -c N /dev/zero | tr '\\0' x`` into a pipe read by this process (MiB/s);
4. **output, runtime**: the same command as a process on pipes, ``--clients`` WebSocket clients
   (lean ones: a blocking socket per thread whose frames are walked, not decoded, so that the
   clients' own CPU is not what is measured on two cores) reading every frame to the close
   (MiB/s per client = N / time to its exit frame; bytes
   each received; ``output_dropped`` markers when a client fell behind what is kept on disk);
5. the runtime's RSS before 4 and its peak during it (sampled every 5 ms).

Goals (issue 17): echo p99 ≤ 5 ms on loopback, output ≥ 0.5 × the raw pipe, RSS growth < 16 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import json
import os
import pty
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import tornado.httpclient
import tornado.websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import free_port, start_runtime, stop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.memory import PeakRss

MIB = 1 << 20
SHELL = ["bash", "--norc", "--noprofile"]
KEYS = b"abcdefghijklmnopqrstuvwxyz"


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:6.3f} ms   p99 {p99:6.3f} ms   max {ordered[-1] * 1000:6.3f} ms"


def echo_local(keys: int) -> list[float]:
    """Key → echo through a pty of our own (no runtime): the floor."""
    env = {**os.environ, "PS1": "$ ", "TERM": "xterm-256color"}
    pid, master = pty.fork()
    if pid == 0:  # the child: exec the shell on the pty
        os.execvpe(SHELL[0], SHELL, env)  # noqa: S606 (argv, no shell line)
    try:
        time.sleep(0.5)
        _drain(master)
        samples = []
        for i in range(keys):
            key = KEYS[i % len(KEYS) : i % len(KEYS) + 1]
            started = time.perf_counter()
            os.write(master, key)
            got = b""
            while key not in got:
                select.select([master], [], [], 5)
                got += os.read(master, 4096)
            samples.append(time.perf_counter() - started)
            if i % 50 == 49:
                os.write(master, b"\x15")  # Ctrl-U: an empty line again
                time.sleep(0.01)
                _drain(master)
        return samples
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(master)


def _drain(fd: int) -> None:
    while select.select([fd], [], [], 0.05)[0]:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


async def echo_runtime(url: str, keys: int) -> list[float]:
    client = tornado.httpclient.AsyncHTTPClient()
    body = {"command": SHELL, "pty": {"cols": 120, "rows": 40}, "env": {"PS1": "$ "}}
    r = await client.fetch(f"{url}/api/v1/processes", method="POST", body=json.dumps(body))
    proc = json.loads(r.body)
    ws = await tornado.websocket.websocket_connect(url.replace("http", "ws") + f"/api/v1/ws/processes/{proc['id']}")
    await ws.read_message()  # hello
    await asyncio.sleep(0.5)
    await _drain_ws(ws)
    samples = []
    for i in range(keys):
        key = KEYS[i % len(KEYS) : i % len(KEYS) + 1]
        started = time.perf_counter()
        await ws.write_message(key, binary=True)
        got = b""
        while key not in got:
            message = await ws.read_message()
            if isinstance(message, bytes):
                got += message
        samples.append(time.perf_counter() - started)
        if i % 50 == 49:
            await ws.write_message(b"\x15", binary=True)
            await asyncio.sleep(0.01)
            await _drain_ws(ws)
    ws.close()
    await client.fetch(f"{url}/api/v1/processes/{proc['id']}", method="DELETE")
    return samples


async def _drain_ws(ws: tornado.websocket.WebSocketClientConnection) -> None:
    while True:
        try:
            await asyncio.wait_for(ws.read_message(), 0.05)
        except asyncio.TimeoutError:
            return


def output_command(mib: int) -> str:
    return f"head -c {mib * MIB} /dev/zero | tr '\\0' x"


def raw_pipe(mib: int) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", output_command(mib)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(1 << 16):
        total += len(chunk)
    proc.wait()
    return total / MIB / (time.perf_counter() - started)


def read_stream(host: str, port: int, path: str) -> tuple[int, int]:
    """A lean WebSocket client on a blocking socket (one per thread): frames are walked, never decoded.

    Returns (output bytes, ``output_dropped`` markers), counting the ``data`` of each output frame as
    its payload less the JSON around it (~60 bytes). The clients must not be what is measured: a
    full client (Tornado's) spends more CPU than the runtime on a two-core machine.
    """
    sock = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(4096)
        if not more:
            raise ConnectionError("no handshake")
        head += more
    status_line, _, rest = head.partition(b"\r\n\r\n")
    if b" 101 " not in status_line.split(b"\r\n", 1)[0]:
        raise ConnectionError(status_line.decode("latin-1"))
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    carried = bytes(rest)  # bytes of a frame header (and payload start) that arrived after the last frame
    skip = 0  # payload bytes of the current frame still to come
    received = markers = 0
    try:
        while True:
            size = sock.recv_into(view)
            if not size:
                return received, markers
            data: bytes | memoryview = view[:size]
            if skip:
                taken = min(skip, size)
                skip -= taken
                data = data[taken:]
            if carried:
                data = carried + bytes(data)
                carried = b""
            pos, end = 0, len(data)
            while pos < end:
                if end - pos < 2:
                    carried = bytes(data[pos:])
                    break
                opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
                header = 2
                if length == 126:
                    header, length = 4, int.from_bytes(data[pos + 2 : pos + 4], "big") if end - pos >= 4 else -1
                elif length == 127:
                    header, length = 10, int.from_bytes(data[pos + 2 : pos + 10], "big") if end - pos >= 10 else -1
                if length < 0 or end - pos < header + min(length, 32):
                    carried = bytes(data[pos:])  # the header (or the start of a text payload) is cut: wait
                    break
                if opcode == 8:
                    return received, markers
                if opcode == 1:
                    start = bytes(data[pos + header : pos + header + 32])
                    if start.startswith(b'{"type":"output_dropped"'):
                        markers += 1
                    elif start.startswith(b'{"type":"output"'):
                        received += max(0, length - 60)
                available = end - pos - header
                if available >= length:
                    pos += header + length
                else:
                    skip = length - available
                    pos = end
    finally:
        sock.close()


async def output_runtime(url: str, server: psutil.Process, mib: int, clients: int, top: float) -> None:
    http = tornado.httpclient.AsyncHTTPClient()
    baseline = server.memory_info().rss
    cpu_before = server.cpu_times()
    sampler = PeakRss(server.pid).__enter__()  # sampled in a thread (tests/memory.py) while the clients read
    started = time.perf_counter()
    r = await http.fetch(f"{url}/api/v1/processes", method="POST", body=json.dumps({"shell": output_command(mib)}))
    proc = json.loads(r.body)
    host, port = url.split("//", 1)[1].split(":")
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=clients)

    def client() -> tuple[float, int, int]:
        received, markers = read_stream(host, int(port), f"/api/v1/ws/processes/{proc['id']}")
        return time.perf_counter() - started, received, markers

    results = await asyncio.gather(*(loop.run_in_executor(pool, client) for _ in range(clients)))
    pool.shutdown()
    cpu_after = server.cpu_times()
    sampler.__exit__()
    peak = max(sampler.peak, baseline)
    r = await http.fetch(f"{url}/api/v1/processes/{proc['id']}")
    final: dict[str, Any] = json.loads(r.body)
    for index, (seconds, received, markers) in enumerate(results):
        print(
            f"  client {index + 1}: {mib / seconds:8.1f} MiB/s  ({seconds:.2f} s, ~{received / MIB:.0f} MiB received, "
            f"{markers} output_dropped)"
        )
    slowest = max(seconds for seconds, _, _ in results)
    print(f"  ratio: {mib / slowest / top:.2f}x the raw pipe for the slowest client (goal >= 0.5x)")
    print(f"  process: {final['status']} exit {final['exit_code']}, output_bytes {final['output_bytes'] / MIB:.0f} MiB")
    print(f"  runtime RSS {baseline / MIB:.1f} MiB before, peak {peak / MIB:.1f} MiB (+{(peak - baseline) / MIB:.1f})")
    # the runtime's own, not its child's
    used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    print(f"  runtime CPU {used / (mib / 1024):.2f} s a GiB of output (user + system, all its threads)")


async def main(keys: int, mib: int, clients: int, extra: list[str]) -> None:
    workspace = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    port = free_port()
    log = workspace.parent / f"{workspace.name}.log"
    server = start_runtime(workspace, port, dict(os.environ), log, "bench", extra)
    url = f"http://127.0.0.1:{port}"
    try:
        print(
            f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, {os.cpu_count()} CPUs"
        )
        print(f"echo, local pty          ({keys} keys): {percentiles(echo_local(keys))}")
        print(f"echo, runtime pty over WS ({keys} keys): {percentiles(await echo_runtime(url, keys))}")
        top = raw_pipe(mib)
        print(f"output, raw pipe ({mib} MiB): {top:8.1f} MiB/s")
        print(f"output, runtime → {clients} WebSocket clients ({mib} MiB), raw pipe = {top:.1f} MiB/s:")
        await output_runtime(url, psutil.Process(server.pid), mib, clients, top)
    finally:
        stop(server)
        shutil.rmtree(workspace, ignore_errors=True)
        log.unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=500, help="keystrokes timed (default 500)")
    parser.add_argument("--mib", type=int, default=1024, help="MiB the process prints (default 1024)")
    parser.add_argument("--clients", type=int, default=3, help="WebSocket clients of the output (default 3)")
    parser.add_argument("--output-limit", default=None, help="the runtime's --process-output-limit")
    args = parser.parse_args()
    runtime_args = ["--process-output-limit", args.output_limit] if args.output_limit else []
    asyncio.run(main(args.keys, args.mib, args.clients, runtime_args))
