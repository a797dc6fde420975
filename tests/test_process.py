"""The runtime as a process: banner, state directory, logs, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request

import pytest
import tornado.websocket

from tests.conftest import RuntimeProcess, ServerPool

LOOPBACK = ["--host", "127.0.0.1", "--port", "0"]


def get_json(url: str, token: str | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_banner_and_health(tmp_path: os.PathLike[str]) -> None:
    workspace = os.fspath(tmp_path)
    proc = RuntimeProcess(*LOOPBACK, "--workspace", workspace, "--workspace-id", "demo")
    try:
        url = proc.wait_ready()
        text = "\n".join(proc.banner)
        assert url.startswith("http://127.0.0.1:")
        assert f"{url}/docs" in text
        assert workspace in text and "demo" in text
        assert "Auth:  OFF" in text
        assert "WARNING" not in text  # loopback: no warning
        body = get_json(url + "/health")
        assert body["status"] == "ok" and body["workspace_id"] == "demo"
        with open(os.path.join(workspace, ".wsruntime", ".gitignore")) as f:
            assert f.read().strip() == "*"
    finally:
        assert proc.stop() == 0


def test_loud_warning_when_exposed_without_token(tmp_path: os.PathLike[str]) -> None:
    proc = RuntimeProcess("--host", "0.0.0.0", "--port", "0", "--workspace", os.fspath(tmp_path))
    try:
        proc.wait_ready()
        assert proc.proc.stdout is not None
        rest = [proc.proc.stdout.readline() for _ in range(4)]
        assert any("WARNING" in line and "WITHOUT A TOKEN" in line for line in rest)
    finally:
        assert proc.stop() == 0


def test_no_warning_with_token(tmp_path: os.PathLike[str]) -> None:
    proc = RuntimeProcess(
        "--host", "0.0.0.0", "--port", "0", "--workspace", os.fspath(tmp_path), env={"WSRUNTIME_TOKEN": "tok"}
    )
    try:
        url = proc.wait_ready()
        assert "Auth:  bearer token required" in "\n".join(proc.banner)
        assert get_json(url + "/health", token="tok")["auth"] is True
        assert proc.proc.stdout is not None
    finally:
        assert proc.stop() == 0
    assert proc.proc.stdout is not None
    assert "WARNING" not in proc.proc.stdout.read()


def test_subprocesses_never_see_the_token(tmp_path: os.PathLike[str]) -> None:
    """A script (and so an agent, git hook, ...) inherits the runtime's environment, but not WSRUNTIME_TOKEN."""
    workspace = os.fspath(tmp_path)
    os.makedirs(os.path.join(workspace, "scripts"))
    script = os.path.join(workspace, "scripts", "show-env.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nenv\n")
    os.chmod(script, 0o755)
    proc = RuntimeProcess(
        *LOOPBACK, "--workspace", workspace, env={"WSRUNTIME_TOKEN": "tok-secret-1", "WSRT_TEST_MARK": "inherited"}
    )
    try:
        url = proc.wait_ready()
        request = urllib.request.Request(
            url + "/api/v1/scripts/show-env.sh/run?wait=true",
            data=b"{}",
            headers={"Authorization": "Bearer tok-secret-1", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            run = json.loads(response.read())
        assert run["status"] == "succeeded"
        assert "WSRT_TEST_MARK=inherited" in run["output"]
        assert "tok-secret-1" not in run["output"] and "WSRUNTIME_TOKEN" not in run["output"]
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(tmp_path: os.PathLike[str], signum: int) -> None:
    proc = RuntimeProcess(*LOOPBACK, "--workspace", os.fspath(tmp_path))
    url = proc.wait_ready()
    # An idle keep-alive connection must not hold the shutdown up.
    port = int(url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    idle.recv(4096)
    proc.proc.send_signal(signum)
    code = proc.proc.wait(10)  # an idle connection would hold it up for good
    idle.close()
    assert code == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_json_logs_and_no_token_in_them(tmp_path: os.PathLike[str]) -> None:
    proc = RuntimeProcess(*LOOPBACK, "--workspace", os.fspath(tmp_path), "--log-format", "json", "--token", "hunter2")
    try:
        url = proc.wait_ready()
        try:
            urllib.request.urlopen(url + "/nope?token=hunter2", timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        proc.stop()
    assert proc.proc.stderr is not None
    lines = [line for line in proc.proc.stderr.read().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any(r["logger"] == "wsruntime.access" and "/nope" in r["message"] for r in records)
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert "hunter2" not in "\n".join(lines)


def test_port_in_use_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        proc = RuntimeProcess("--host", "127.0.0.1", "--port", str(port), "--workspace", os.fspath(tmp_path))
        code = proc.proc.wait(20)
        assert proc.proc.stderr is not None
        err = proc.proc.stderr.read()
        assert code == 1
        assert "cannot listen" in err and "Traceback" not in err
    finally:
        taken.close()


def test_unwritable_state_dir_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    blocker = os.path.join(os.fspath(tmp_path), "file")
    open(blocker, "w").close()
    proc = RuntimeProcess(*LOOPBACK, "--workspace", os.fspath(tmp_path), "--state-dir", os.path.join(blocker, "state"))
    code = proc.proc.wait(20)
    assert proc.proc.stderr is not None
    err = proc.proc.stderr.read()
    assert code == 2
    assert "state directory" in err and "Traceback" not in err


async def test_shutdown_closes_websockets_with_1001(servers: ServerPool) -> None:
    from tests.support import EXTRA

    server = servers.fresh(extra_handlers=EXTRA)
    ws = await server.websocket("/test/ws")
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    assert await ws.read_message() is None
    assert ws.close_code == 1001
    assert isinstance(ws, tornado.websocket.WebSocketClientConnection)
