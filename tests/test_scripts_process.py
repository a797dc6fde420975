"""Process-level script tests: 50 MB of output with the server's memory flat, and a SIGKILLed runtime.

Both run ``python wsruntime.py`` as a separate process (RuntimeProcess) so
that the memory measured is the server's alone and the kill is real.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import tornado.httpclient
import tornado.websocket

from tests.conftest import RuntimeProcess
from tests.test_scripts import populate, wait_for_file
from wsruntime_ext.procs import _alive

MIB = 1 << 20


@pytest.fixture
def workspace() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="wsrt-scripts-")
    populate(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(workspace: str, home: str, *args: str) -> tuple[RuntimeProcess, str]:
    runtime = RuntimeProcess(
        "--workspace", workspace, "--port", "0", "--host", "127.0.0.1", "--log-level", "warning", *args,
        env={"HOME": home},
    )  # fmt: skip
    return runtime, runtime.wait_ready()


async def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        r = await client.fetch(
            url + path,
            method=method,
            body=json.dumps(body) if body is not None else (b"" if method == "POST" else None),
            headers={"Content-Type": "application/json"},
            raise_error=False,
            request_timeout=60,
        )
    finally:
        client.close()
    return r.code, json.loads(r.body) if r.body else None


async def test_fifty_megabytes_of_output_keep_the_server_memory_flat(workspace: str) -> None:
    home = tempfile.mkdtemp(prefix="wsrt-home-")
    runtime, url = start(workspace, home)
    server = psutil.Process(runtime.proc.pid)
    try:
        # Warm up every code path once (discovery, a run, a stream) before the baseline.
        status, done = await call(url, "POST", "/api/v1/scripts/big.sh/run?wait=true", {"args": ["64"]})
        assert status == 200 and done["status"] == "succeeded"
        baseline = server.memory_info().rss
        peak = baseline
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, server.memory_info().rss)
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())
        status, started = await call(url, "POST", "/api/v1/scripts/big.sh/run", {"args": ["51200"]})  # 50 MiB
        assert status == 202
        run_id = started["run_id"]
        ws_url = url.replace("http://", "ws://") + f"/api/v1/ws/scripts/runs/{run_id}"
        ws = await tornado.websocket.websocket_connect(ws_url, max_message_size=16 * MIB)
        received = 0
        last_seq = 0
        dropped_markers = 0
        exit_frame = None
        while True:
            message = await asyncio.wait_for(ws.read_message(), 120)  # type: ignore[arg-type]
            if message is None:
                break
            frame = json.loads(message)
            if frame["type"] == "output":
                assert frame["seq"] == last_seq + 1, "frames out of order or lost without a marker"
                last_seq = frame["seq"]
                received += len(frame["data"])
            elif frame["type"] == "output_dropped":
                dropped_markers += 1
                last_seq = frame["next_seq"] - 1
            else:
                exit_frame = frame
        sampling = False
        await sampler
        status, final = await call(url, "GET", f"/api/v1/scripts/runs/{run_id}")
        assert exit_frame == {"type": "exit", "code": 0, "status": "succeeded", "signal": None}
        assert final["output_bytes"] == 50 * MIB and last_seq == final["last_seq"]
        # A client that keeps up gets every byte; one that fell behind the on-disk limit (a busy machine) gets
        # a marker for each gap instead, and the seqs above prove nothing else went missing.
        assert received == 50 * MIB or (dropped_markers >= 1 and received < 50 * MIB)
        growth = peak - baseline
        print(f"50 MiB streamed: server RSS {baseline / MIB:.1f} MiB → peak {peak / MIB:.1f} MiB (+{growth / MIB:.1f})")
        assert growth < 32 * MIB, f"the server grew by {growth / MIB:.1f} MiB for 50 MiB of output"
        kept = os.path.join(workspace, ".wsruntime", "script-runs", run_id)
        on_disk = sum(os.path.getsize(os.path.join(kept, n)) for n in os.listdir(kept) if n.startswith("out-"))
        assert on_disk <= 16 * MIB + 2 * MIB
    finally:
        runtime.stop()
        shutil.rmtree(home, ignore_errors=True)


async def test_a_run_of_a_killed_runtime_is_interrupted_after_restart(workspace: str, tmp_path: Any) -> None:
    home = tempfile.mkdtemp(prefix="wsrt-home-")
    pidfile = os.path.join(os.fspath(tmp_path), "pid")
    runtime, url = start(workspace, home)
    try:
        status, started = await call(url, "POST", "/api/v1/scripts/escape.sh/run", {"args": [pidfile]})
        assert status == 202
        escaped = int(await wait_for_file(pidfile))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, run = await call(url, "GET", f"/api/v1/scripts/runs/{started['run_id']}")
            if "started" in run["output"]:
                break
            await asyncio.sleep(0.05)
        runtime.proc.send_signal(signal.SIGKILL)
        runtime.proc.wait(10)
    finally:
        runtime.stop()
    # The script itself outlives a SIGKILLed runtime (nothing could stop it); it is ours to clean up here.
    for pid in (started["pid"], escaped):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    runtime, url = start(workspace, home)
    try:
        status, run = await call(url, "GET", f"/api/v1/scripts/runs/{started['run_id']}")
        assert status == 200 and run["status"] == "interrupted" and run["pid"] is None
        assert run["output"] == "started\n" and run["last_seq"] == 1
        ws_url = url.replace("http://", "ws://") + f"/api/v1/ws/scripts/runs/{started['run_id']}"
        ws = await tornado.websocket.websocket_connect(ws_url)
        frames = []
        while (message := await asyncio.wait_for(ws.read_message(), 30)) is not None:  # type: ignore[arg-type]
            frames.append(json.loads(message))
        assert frames == [
            {"type": "output", "seq": 1, "stream": "stdout", "data": "started\n"},
            {"type": "exit", "code": None, "status": "interrupted", "signal": None},
        ]
        status, listed = await call(url, "GET", "/api/v1/scripts/runs?status=interrupted")
        assert [r["run_id"] for r in listed["runs"]] == [started["run_id"]]
    finally:
        runtime.stop()
        shutil.rmtree(home, ignore_errors=True)
