"""Scripts: throughput of a script's output through the runtime to a WebSocket client, and the server's memory.

``python bench/scripts_output.py [--mib 50]`` starts wsruntime on a temp workspace whose
``scripts/big.sh`` prints N MiB (1 KiB lines), and measures:

1. **ceiling**: the same script into a pipe read by this process (MiB/s);
2. **stream**: ``POST /api/v1/scripts/big.sh/run`` and a WebSocket client on
   ``/api/v1/ws/scripts/runs/{id}`` reading every frame to the ``exit`` frame (MiB/s, and the
   ratio to the ceiling; a client slower than the script may get an ``output_dropped`` marker,
   counted);
3. **wait**: ``?wait=true`` for the same output (seconds to the answer);
4. the server's RSS before and its peak during 2 and 3 (sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
import tornado.httpclient
import tornado.websocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
BIG = (
    "#!/bin/sh\nexec python3 -c \"import sys\nline = 'x' * 1023 + '\\n'\n"
    'for _ in range(int(sys.argv[1])): sys.stdout.write(line)" "$1"\n'
)


def ceiling(script: str, kib: int) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([script, str(kib)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(1 << 16):
        total += len(chunk)
    proc.wait()
    return total / MIB / (time.perf_counter() - started)


def prepare() -> tuple[str, str, subprocess.Popen[str]]:
    """A workspace with scripts/big.sh, and wsruntime started on it."""
    workspace = tempfile.mkdtemp(prefix="bench-scripts-")
    os.makedirs(os.path.join(workspace, "scripts"))
    script = os.path.join(workspace, "scripts", "big.sh")
    with open(script, "w") as f:
        f.write(BIG)
    os.chmod(script, 0o700)
    argv = [sys.executable, os.path.join(ROOT, "wsruntime.py"), "--workspace", workspace, "--port", "0"]
    server = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return workspace, script, server


async def main(mib: int) -> None:
    workspace, script, server = prepare()
    try:
        assert server.stdout is not None
        url = ""
        while not url:
            line = server.stdout.readline()
            if "URL:" in line:
                url = line.split("URL:", 1)[1].split()[0]
        client = tornado.httpclient.AsyncHTTPClient()
        proc = psutil.Process(server.pid)
        kib = mib * 1024
        top = ceiling(script, kib)

        async def post(query: str) -> dict[str, Any]:
            r = await client.fetch(
                f"{url}/api/v1/scripts/big.sh/run{query}",
                method="POST",
                body=json.dumps({"args": [str(kib)]}),
                request_timeout=600,
            )
            answer: dict[str, Any] = json.loads(r.body)
            return answer

        await post("?wait=true")  # warm-up
        baseline = proc.memory_info().rss
        peak = baseline
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, proc.memory_info().rss)
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())
        cpu_server, cpu_client = proc.cpu_times(), psutil.Process().cpu_times()
        started = time.perf_counter()
        run = await post("")
        ws = await tornado.websocket.websocket_connect(
            url.replace("http", "ws") + f"/api/v1/ws/scripts/runs/{run['run_id']}", max_message_size=64 * MIB
        )
        received, markers = 0, 0
        while (message := await ws.read_message()) is not None:
            frame = json.loads(message)
            if frame["type"] == "output":
                received += len(frame["data"])
            elif frame["type"] == "output_dropped":
                markers += 1
        stream_s = time.perf_counter() - started
        server_cpu = sum(proc.cpu_times()[:2]) - sum(cpu_server[:2])
        client_cpu = sum(psutil.Process().cpu_times()[:2]) - sum(cpu_client[:2])
        started = time.perf_counter()
        waited = await post("?wait=true")
        wait_s = time.perf_counter() - started
        sampling = False
        await sampler
        rate = mib / stream_s
        print(f"ceiling (script → pipe → this process): {top:8.1f} MiB/s")
        print(
            f"stream  (script → runtime → disk → WS):  {rate:8.1f} MiB/s  = {rate / top:.2f} × ceiling; "
            f"{received / MIB:.1f} of {mib} MiB received, {markers} output_dropped marker(s)"
        )
        print(
            f"        CPU during the stream: runtime {server_cpu:.2f} s, this client {client_cpu:.2f} s, "
            f"in {stream_s:.2f} s"
        )
        print(
            f"wait    (?wait=true, {mib} MiB):           {wait_s:8.2f} s  (output tail {len(waited['output'])} chars)"
        )
        print(
            f"server RSS: {baseline / MIB:.1f} MiB before, peak {peak / MIB:.1f} MiB "
            f"(+{(peak - baseline) / MIB:.1f} MiB for {2 * mib} MiB of output)"
        )
        client.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=50, help="MiB the script prints (default 50)")
    asyncio.run(main(parser.parse_args().mib))
