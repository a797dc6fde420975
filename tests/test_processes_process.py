"""Process-level tests of processes and terminals: a SIGKILLed runtime, a graceful stop, and memory under output.

They run ``python wsruntime.py`` as a separate process (RuntimeProcess) so that
the kill is real and the memory measured is the server's alone.
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
import tornado.websocket

from tests.memory import PeakRss
from tests.test_scripts_process import call, start
from wsruntime_ext.procs import _alive

MIB = 1 << 20


@pytest.fixture
def workspace() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="wsrt-procs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="wsrt-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def wait_for_file(path: str, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never written")


async def wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):  # noqa: ASYNC110 (polling /proc)
        await asyncio.sleep(0.05)
    return [p for p in pids if _alive(p)]


async def start_escapees(url: str, d: str) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """A terminal whose shell started a setsid child and a nohup one, and an exec process with a setsid child."""
    status, term = await call(
        url,
        "POST",
        "/api/v1/processes",
        {
            "shell": f"setsid sh -c 'echo $$ > {d}/t1; exec sleep 1000' & "
            f"nohup sh -c 'echo $$ > {d}/t2; exec sleep 1001' >/dev/null 2>&1 & exec bash --norc --noprofile",
            "pty": {"cols": 80, "rows": 24},
        },
    )
    assert status == 201, term
    status, exe = await call(
        url,
        "POST",
        "/api/v1/processes",
        {"shell": f"(setsid sh -c 'echo $$ > {d}/e1; exec sleep 1002' &); exec sleep 1003"},
    )
    assert status == 201, exe
    pids = [await wait_for_file(f"{d}/{name}") for name in ("t1", "t2", "e1")]
    return term, exe, [*pids, term["pid"], exe["pid"]]


async def test_a_sigkilled_runtime_leaves_nothing_after_its_restart(workspace: str, home: str, tmp_path: Any) -> None:
    d = os.fspath(tmp_path)
    runtime, url = start(workspace, home)
    try:
        term, exe, pids = await start_escapees(url, d)
        assert [p for p in pids if not _alive(p)] == [], (pids, await call(url, "GET", "/api/v1/processes"))
        runtime.proc.send_signal(signal.SIGKILL)
        runtime.proc.wait(10)
    finally:
        runtime.stop()
    try:
        # Nothing stopped them (the terminal's shell may have died of the hang-up of its pty).
        await asyncio.sleep(0.3)
        assert [p for p in pids if not _alive(p)] in ([], [term["pid"]])
        runtime, url = start(workspace, home)
        try:
            left = await wait_gone(pids)
            assert left == [], (
                [(p, psutil.Process(p).cmdline(), psutil.Process(p).environ().get("WSRUNTIME_PROCESS")) for p in left]
                + [term["id"], exe["id"]]
                + runtime.banner
            )
            for proc in (term, exe):
                status, after = await call(url, "GET", f"/api/v1/processes/{proc['id']}")
                assert status == 200 and after["status"] == "interrupted" and after["pid"] is None
            status, listed = await call(url, "GET", "/api/v1/processes?status=interrupted")
            assert {p["id"] for p in listed["processes"]} == {term["id"], exe["id"]}
        finally:
            runtime.stop()
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_a_graceful_stop_leaves_nothing(workspace: str, home: str, tmp_path: Any) -> None:
    d = os.fspath(tmp_path)
    runtime, url = start(workspace, home)
    try:
        term, _exe, pids = await start_escapees(url, d)
        runtime.proc.send_signal(signal.SIGTERM)
        assert runtime.proc.wait(20) == 0
        assert await wait_gone(pids, 2) == []
    finally:
        runtime.stop()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    runtime, url = start(workspace, home)
    try:
        status, after = await call(url, "GET", f"/api/v1/processes/{term['id']}")
        assert status == 200 and after["status"] == "interrupted"
    finally:
        runtime.stop()


async def test_max_processes(workspace: str, home: str) -> None:
    runtime, url = start(workspace, home, "--max-processes", "2")
    try:
        ids = []
        for _ in range(2):
            status, proc = await call(url, "POST", "/api/v1/processes", {"command": ["sleep", "30"]})
            assert status == 201
            ids.append(proc["id"])
        status, refused = await call(url, "POST", "/api/v1/processes", {"command": ["sleep", "30"]})
        assert status == 429 and refused["error"]["code"] == "too_many_processes"
        status, _ = await call(url, "DELETE", f"/api/v1/processes/{ids[0]}")
        status, proc = await call(url, "POST", "/api/v1/processes", {"command": ["true"]})
        assert status == 201
    finally:
        runtime.stop()


async def test_output_to_three_clients_keeps_the_server_memory_flat(workspace: str, home: str) -> None:
    runtime, url = start(workspace, home)
    server = psutil.Process(runtime.proc.pid)
    size = 256 * MIB
    try:
        status, _ = await call(url, "POST", "/api/v1/processes?wait=true", {"shell": "head -c 1000000 /dev/zero"})
        assert status == 200
        baseline = server.memory_info().rss
        with PeakRss(server.pid) as sampler:
            body = {"shell": f"head -c {size} /dev/zero | tr '\\0' x"}
            status, proc = await call(url, "POST", "/api/v1/processes", body)
            assert status == 201
            ws_url = url.replace("http://", "ws://") + f"/api/v1/ws/processes/{proc['id']}"

            async def client() -> tuple[int, dict[str, Any] | None]:
                ws = await tornado.websocket.websocket_connect(ws_url, max_message_size=64 * MIB)
                received = 0
                exit_frame = None
                while (message := await asyncio.wait_for(ws.read_message(), 60)) is not None:
                    frame = json.loads(message)
                    if frame["type"] == "output":
                        received += len(frame["data"])
                    elif frame["type"] == "exit":
                        exit_frame = frame
                return received, exit_frame

            results = await asyncio.gather(client(), client(), client())
        peak = max(sampler.peak, baseline)
        for _received, exit_frame in results:
            assert exit_frame == {"type": "exit", "code": 0, "signal": None, "status": "exited"}
        growth = peak - baseline
        print(f"256 MiB to 3 clients: server RSS {baseline / MIB:.1f} → {peak / MIB:.1f} MiB (+{growth / MIB:.1f})")
        assert growth < 16 * MIB, f"the server grew by {growth / MIB:.1f} MiB"
    finally:
        runtime.stop()
