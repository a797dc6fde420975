"""SIGKILL in the middle of each kind of write, then a restart on the same workspace: nothing is left behind.

A real ``python wsruntime.py`` is killed while a body is still arriving (a
raw PUT of a new file, a PUT over an existing one, a multipart upload of
several parts, settings PUTs); the temporary files it was writing are on disk
then, and the next start removes them before it answers — the listing with
``hidden=true`` shows none, and each target holds its old content or nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.parse

from tests.conftest import RuntimeProcess
from tests.test_files import leftovers

MIB = 1 << 20
PIECE = 64 << 10


def start(workspace: str, *args: str) -> tuple[RuntimeProcess, int]:
    runtime = RuntimeProcess(
        "--workspace", workspace, "--port", "0", "--host", "127.0.0.1", "--log-level", "warning", *args
    )
    url = runtime.wait_ready()
    return runtime, int(urllib.parse.urlsplit(url).port or 0)


def kill(runtime: RuntimeProcess) -> None:
    runtime.proc.send_signal(signal.SIGKILL)
    runtime.proc.wait(10)


def trickle(port: int, head: bytes, body: bytes, stop: threading.Event) -> None:
    """Send ``head`` then ``body`` 64 KiB every 50 ms, until the body is sent, the server dies or ``stop``."""
    try:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head)
        for i in range(0, len(body), PIECE):
            if stop.is_set():
                break
            sock.sendall(body[i : i + PIECE])
            time.sleep(0.05)
        sock.close()
    except OSError:
        pass  # the server was killed


def get_json(port: int, path: str) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def listed_names(port: int, path: str = "") -> list[str]:
    status, body = get_json(port, "/api/v1/files?" + urllib.parse.urlencode({"path": path, "hidden": "true"}))
    assert status == 200, body
    assert isinstance(body, dict)
    return [entry["name"] for entry in body["entries"]]


def kill_mid_body(workspace: str, head: bytes, body: bytes) -> None:
    """Start, send ``head`` + ``body`` slowly, SIGKILL after ~1.5 s (a temporary is on disk then)."""
    runtime, port = start(workspace)
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(port, head, body, stop))
    try:
        sender.start()
        time.sleep(1.5)
        assert leftovers(workspace), "the write should be under way, its temporary on disk"
        kill(runtime)
    finally:
        stop.set()
        if runtime.proc.poll() is None:
            kill(runtime)
        sender.join(30)


def put_head(path: str, size: int) -> bytes:
    return f"PUT /api/v1/files/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n".encode()


def test_a_put_of_a_new_file_cut_by_sigkill_leaves_nothing() -> None:
    workspace = tempfile.mkdtemp(prefix="wsrt-temps-")
    body = b"n" * (4 * MIB)
    kill_mid_body(workspace, put_head("sub/new.bin", len(body)), body)
    runtime, port = start(workspace)
    try:
        assert not any("wsrt-tmp" in n for n in listed_names(port))
        assert leftovers(workspace) == []
        status, _ = get_json(port, "/api/v1/files/sub/new.bin?format=json")
        assert status == 404  # nothing (not even the parent was created)
    finally:
        runtime.stop()


def test_a_put_over_an_existing_file_cut_by_sigkill_leaves_the_old_content() -> None:
    workspace = tempfile.mkdtemp(prefix="wsrt-temps-")
    os.makedirs(os.path.join(workspace, "docs"))
    old = b"old content\n" * 1000
    with open(os.path.join(workspace, "docs", "a.bin"), "wb") as f:
        f.write(old)
    body = b"r" * (4 * MIB)
    kill_mid_body(workspace, put_head("docs/a.bin", len(body)), body)
    runtime, port = start(workspace)
    try:
        assert not any("wsrt-tmp" in n for n in listed_names(port, "docs"))
        assert leftovers(workspace) == []
        with open(os.path.join(workspace, "docs", "a.bin"), "rb") as f:
            assert f.read() == old
    finally:
        runtime.stop()


def test_a_multipart_upload_cut_by_sigkill_leaves_nothing() -> None:
    workspace = tempfile.mkdtemp(prefix="wsrt-temps-")
    os.makedirs(os.path.join(workspace, "up"))
    old = b"the old one"
    with open(os.path.join(workspace, "up", "p1.bin"), "wb") as f:
        f.write(old)
    boundary = "killBoundary"
    parts = b""
    for i in range(4):
        parts += (
            (f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="p{i}.bin"\r\n\r\n').encode()
            + bytes([97 + i]) * MIB
            + b"\r\n"
        )
    body = parts + f"--{boundary}--\r\n".encode()
    head = (
        "POST /api/v1/files/upload?path=up&overwrite=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    kill_mid_body(workspace, head, body)
    runtime, port = start(workspace)
    try:
        assert not any("wsrt-tmp" in n for n in listed_names(port, "up"))
        assert leftovers(workspace) == []
        assert sorted(os.listdir(os.path.join(workspace, "up"))) == ["p1.bin"]
        with open(os.path.join(workspace, "up", "p1.bin"), "rb") as f:
            assert f.read() == old
    finally:
        runtime.stop()


QUERIES = ("scope=project", "scope=local", "scope=user", "agent=gemini&scope=user", "agent=codex&scope=project")


def test_settings_writes_cut_by_sigkill_leave_nothing() -> None:
    """Settings PUTs in a loop (Claude Code's and other agents'), killed at some moment, three times: no
    temporary remains, each file is whole."""
    workspace = tempfile.mkdtemp(prefix="wsrt-temps-")
    home = tempfile.mkdtemp(prefix="wsrt-home-")
    big = {f"VAR_{i}": "v" * 200 for i in range(2000)}  # ~0.5 MiB: a write takes a while
    for round_number in range(3):
        runtime, port = start(workspace, "--home", home)
        stop = threading.Event()

        def writer(query: str, port: int = port, stop: threading.Event = stop) -> None:
            i = 0
            while not stop.is_set():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    payload = json.dumps({"settings": {"env": {**big, "N": str(i)}}})
                    conn.request("PUT", f"/api/v1/settings?{query}", body=payload)
                    conn.getresponse().read()
                    conn.close()
                except (OSError, http.client.HTTPException):
                    return
                i += 1

        threads = [threading.Thread(target=writer, args=(query,)) for query in QUERIES]
        for thread in threads:
            thread.start()
        time.sleep(0.8 + 0.3 * round_number)
        kill(runtime)
        stop.set()
        for thread in threads:
            thread.join(30)
    runtime, port = start(workspace, "--home", home)
    try:
        assert leftovers(workspace) == []
        assert leftovers(home) == []
        for query in QUERIES:  # each file whole: Claude Code's JSON, Gemini's JSON with comments, Codex's TOML
            status, body = get_json(port, f"/api/v1/settings?{query}")
            assert status == 200, body
    finally:
        runtime.stop()


FAKE_AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_agent.py")


def post_json(port: int, path: str, body: object) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_session_logs_and_script_output_cut_by_sigkill_read_back_whole() -> None:
    """An agent session appending its log and a script run appending output segments when the runtime is killed:
    after the restart both are ``interrupted``, their stored frames read back whole and in order, nothing is left."""
    workspace = tempfile.mkdtemp(prefix="wsrt-temps-")
    os.makedirs(os.path.join(workspace, ".wsruntime"))
    spew = "import sys\nwhile True:\n    sys.stdout.write('x' * 300 + '\\n')\n    sys.stdout.flush()\n"
    with open(os.path.join(workspace, ".wsruntime", "scripts.json"), "w") as f:
        json.dump({"spew": {"command": ["python3", "-c", spew]}}, f)
    runtime, port = start(workspace, "--claude-bin", FAKE_AGENT)
    try:
        status, session = post_json(port, "/api/v1/agent-sessions", {"prompt": "paced 100000 3000"})
        assert status == 201, session
        status, run = post_json(port, "/api/v1/scripts/custom:spew/run", {})
        assert status == 202, run
        time.sleep(1.5)
        kill(runtime)
    finally:
        if runtime.proc.poll() is None:
            kill(runtime)
    assert isinstance(session, dict) and isinstance(run, dict)
    runtime, port = start(workspace, "--claude-bin", FAKE_AGENT)
    try:
        status, record = get_json(port, f"/api/v1/agent-sessions/{session['id']}")
        assert status == 200 and isinstance(record, dict) and record["status"] == "interrupted", record
        status, messages = get_json(port, f"/api/v1/agent-sessions/{session['id']}/messages?limit=1000")
        assert status == 200 and isinstance(messages, dict)
        seqs = [m["seq"] for m in messages["messages"]]
        assert len(seqs) > 10 and seqs == list(range(1, len(seqs) + 1))
        status, record = get_json(port, f"/api/v1/scripts/runs/{run['run_id']}")
        assert status == 200 and isinstance(record, dict) and record["status"] == "interrupted", record
        lines = record["output"].splitlines()  # the tail kept: its first line may be cut at the front
        assert len(lines) > 2 and all(line == "x" * 300 for line in lines[1:-1])
        assert leftovers(workspace) == []
    finally:
        runtime.stop()
