"""Process-level Files tests: SIGKILL in the middle of writes, and memory that stays flat while streaming.

Both run ``python wsruntime.py`` as a separate process (RuntimeProcess) so
that the kill is real and the memory measured is the server's alone.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import RuntimeProcess
from tests.memory import MIB, PeakRss, body_pieces

A = b"a" * MIB
B = b"b" * MIB


def start(workspace: str, *args: str) -> tuple[RuntimeProcess, int]:
    runtime = RuntimeProcess(
        "--workspace", workspace, "--port", "0", "--host", "127.0.0.1", "--log-level", "warning", *args
    )
    url = runtime.wait_ready()
    return runtime, int(urllib.parse.urlsplit(url).port or 0)


def put_in_pieces(port: int, path: str, data: bytes, piece: int = 64 << 10, pause: float = 0.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("PUT", path)
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        for i in range(0, len(data), piece):
            conn.send(data[i : i + piece])
            if pause:
                time.sleep(pause)
        return conn.getresponse().status
    finally:
        conn.close()


def kill(runtime: RuntimeProcess) -> None:
    runtime.proc.send_signal(signal.SIGKILL)
    runtime.proc.wait(10)


def test_sigkill_mid_write_leaves_one_whole_version() -> None:
    """Writes alternating two 1 MiB contents; SIGKILL lands mid-stream; the file is exactly one of the two."""
    workspace = tempfile.mkdtemp(prefix="wsrt-kill-")
    target = os.path.join(workspace, "doc.bin")
    rng = random.Random(4)
    for round_number in range(8):
        runtime, port = start(workspace)
        try:
            if round_number == 0:
                assert put_in_pieces(port, "/api/v1/files/doc.bin", A) == 201
            stop = threading.Event()
            writes = [0]

            def writer(port: int = port, stop: threading.Event = stop, writes: list[int] = writes) -> None:
                i = 0
                while not stop.is_set():
                    try:
                        put_in_pieces(port, "/api/v1/files/doc.bin", B if i % 2 else A, pause=0.0005)
                        writes[0] += 1
                    except (OSError, http.client.HTTPException):
                        return  # the server is gone
                    i += 1

            threads = [threading.Thread(target=writer) for _ in range(3)]
            for thread in threads:
                thread.start()
            if round_number % 2:
                # Make sure one write is surely in flight: half a body sent, then the kill.
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(f"PUT /api/v1/files/doc.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {MIB}\r\n\r\n".encode())
                sock.sendall(B[: MIB // 2])
                time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 0.6))
            kill(runtime)
            stop.set()
            for thread in threads:
                thread.join(30)
        finally:
            if runtime.proc.poll() is None:
                kill(runtime)
        with open(target, "rb") as f:
            content = f.read()
        assert content in (A, B), f"round {round_number}: a torn file of {len(content)} bytes"
    # What a kill leaves behind is only unfinished temporary files, never the target.
    assert all(".wsrt-tmp" in name or name in ("doc.bin", ".wsruntime") for name in os.listdir(workspace))


@pytest.mark.parametrize("kind", ["put", "get", "upload"])
def test_streaming_keeps_memory_flat(kind: str) -> None:
    """256 MiB through a write, a read and a multipart upload raise the server's RSS by less than 32 MiB
    (bench/files_memory.py measures the same with 1 GiB)."""
    size = 256 * MIB
    workspace = tempfile.mkdtemp(prefix="wsrt-rss-")
    runtime, port = start(workspace)
    try:
        # Warm up every code path once, so lazy imports and pools are not counted.
        assert put_in_pieces(port, "/api/v1/files/warm.bin", b"w" * (4 * MIB)) == 201
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/v1/files/warm.bin")
        conn.getresponse().read()
        conn.close()
        if kind == "get":
            with open(os.path.join(workspace, "big.bin"), "wb") as f:
                for piece in body_pieces(size):
                    f.write(piece)
        process = psutil.Process(runtime.proc.pid)
        baseline = process.memory_info().rss
        with PeakRss(runtime.proc.pid) as rss:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            if kind == "put":
                conn.request(
                    "PUT", "/api/v1/files/big.bin", body=body_pieces(size), headers={"Content-Length": str(size)}
                )
                assert conn.getresponse().status == 201
            elif kind == "get":
                conn.request("GET", "/api/v1/files/big.bin")
                response = conn.getresponse()
                received = 0
                while True:
                    chunk = response.read(MIB)
                    if not chunk:
                        break
                    received += len(chunk)
                    time.sleep(0.0002)  # a slower reader than the disk: back-pressure must hold
                assert received == size
            else:
                boundary = "rssBoundary"
                head = (f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="up.bin"\r\n\r\n').encode()
                tail = f"\r\n--{boundary}--\r\n".encode()

                def multipart() -> Iterator[bytes]:
                    yield head
                    yield from body_pieces(size)
                    yield tail

                conn.request(
                    "POST",
                    "/api/v1/files/upload",
                    body=multipart(),
                    headers={
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Content-Length": str(len(head) + size + len(tail)),
                    },
                )
                assert conn.getresponse().status == 201
            conn.close()
        growth = rss.peak - baseline
        assert growth < 32 * MIB, f"{kind}: RSS grew by {growth / MIB:.1f} MiB"
    finally:
        runtime.stop()
