"""How much a 1 GiB upload and a 1 GiB download raise wsruntime's memory (issue 4: under 32 MiB each).

``python bench/files_memory.py`` starts ``wsruntime.py`` on a free port with a
temporary workspace, warms every path up once, then for each transfer samples
the server's RSS (psutil, every 5 ms) and prints the peak above the baseline
taken just before it. ``--size 1G`` by default; ``--keep`` keeps the workspace.
Exits 1 when a transfer grows the RSS by ``--limit`` (32 MiB) or more.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
from harness import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.memory import MIB, PeakRss, body_pieces  # noqa: E402  (run as a script: the project root first)


def wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"wsruntime exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("wsruntime did not answer within 30 s")


def transfer(port: int, kind: str, size: int) -> float:
    """One transfer; returns its throughput in MiB/s."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    if kind == "PUT (raw body)":
        conn.request("PUT", "/api/v1/files/up.bin", body=body_pieces(size), headers={"Content-Length": str(size)})
        response = conn.getresponse()
        response.read()
        assert response.status in (200, 201), response.status
    elif kind == "POST upload (multipart)":
        boundary = "benchBoundary"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="multi.bin"\r\n\r\n'.encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            yield from body_pieces(size)
            yield tail

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
        response.read()
        assert response.status == 201, response.status
    else:
        conn.request("GET", "/api/v1/files/up.bin")
        response = conn.getresponse()
        assert response.status == 200
        received = 0
        while True:
            chunk = response.read(MIB)
            if not chunk:
                break
            received += len(chunk)
        assert received == size, received
    conn.close()
    return size / MIB / (time.perf_counter() - started)


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("b").rstrip("i")
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="bytes per transfer (default: 1G)")
    parser.add_argument("--limit", type=parse_size, default=32 * MIB, help="allowed RSS growth (default: 32M)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    opts = parser.parse_args()
    workspace = tempfile.mkdtemp(prefix="wsruntime-files-memory-")
    port = free_port()
    command = [
        sys.executable, str(ROOT / "wsruntime.py"), "--host", "127.0.0.1", "--port", str(port),
        "--workspace", workspace, "--log-level", "warning", "--max-upload-size", str(opts.size + 2 * MIB),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    failed = False
    try:
        wait_up(port, proc)
        for kind in ("PUT (raw body)", "POST upload (multipart)", "GET"):
            transfer(port, kind, 8 * MIB)  # warm-up: imports, thread pool, buffers
        transfer(port, "PUT (raw body)", 8 * MIB)
        print(f"{opts.size / MIB:.0f} MiB per transfer; server pid {proc.pid}")
        print(f"{'transfer':26} {'baseline':>10} {'peak':>10} {'growth':>10} {'MiB/s':>8}")
        for kind in ("PUT (raw body)", "POST upload (multipart)", "GET"):
            if kind == "GET":
                transfer(port, "PUT (raw body)", opts.size)  # the file to read back
            baseline = psutil.Process(proc.pid).memory_info().rss
            with PeakRss(proc.pid) as rss:
                speed = transfer(port, kind, opts.size)
            growth = rss.peak - baseline
            failed = failed or growth >= opts.limit
            print(
                f"{kind:26} {baseline / MIB:9.1f}M {rss.peak / MIB:9.1f}M {growth / MIB:9.1f}M {speed:8.0f}"
                + ("  OVER THE LIMIT" if growth >= opts.limit else "")
            )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        if opts.keep:
            print(f"kept {workspace}")
        else:
            shutil.rmtree(workspace, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
