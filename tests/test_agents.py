"""Agent sessions with tests/fake_agent.py standing in for ``claude``: what the real CLI won't do on demand.

Crash with stderr, hang, garbage, a 100k-line flood, very long lines, an
escaped grandchild, limits, validation, and a client too slow to keep up.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.agents_support import check_stream, create, get_session, kinds, stream, wait_for_frame, wait_status
from tests.conftest import RuntimeProcess, ServerPool, ServerThread

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_agent.py")


@pytest.fixture(scope="module")
def fake(servers: ServerPool) -> Iterator[ServerThread]:
    server = servers.fresh("--claude-bin", FAKE, "--max-sessions", "3")
    yield server
    server.stop()


async def test_the_agent_gets_its_cwd_as_pwd(fake: ServerThread) -> None:
    """Like every subprocess: opencode takes its project (and its project settings) from PWD, not getcwd()."""
    os.makedirs(os.path.join(fake.workspace, "pwd-sub"), exist_ok=True)
    record = await create(fake, prompt="pwd", cwd="pwd-sub")
    frames, _ = await stream(fake, record["id"])
    assert frames[-2]["content"] == f"pwd: {os.path.join(fake.workspace, 'pwd-sub')}", frames


async def test_fake_agent_is_detected(fake: ServerThread) -> None:
    agents = (await fake.request("GET", "/api/v1/agents")).body["agents"]
    assert [a["name"] for a in agents] == ["claude-code", "codex", "gemini", "qwen-code", "opencode"]
    assert agents[0] == {
        "name": "claude-code",
        "available": True,
        "version": "0.0.0-fake",
        "path": FAKE,
        "options": agents[0]["options"],
        "capabilities": ["deltas", "interactive", "interrupt", "permission_prompts", "resume"],
        "settings_files": agents[0]["settings_files"],  # tests/test_settings_agents.py checks them
    }


async def test_crash_ends_the_turn_with_the_stderr_tail(fake: ServerThread) -> None:
    record = await create(fake, prompt="crash now")
    frames, code = await stream(fake, record["id"])
    assert code == 1000
    check_stream(frames, record["id"])
    assert kinds(frames) == ["status:running", "error", "status:failed"]
    assert frames[1]["error"] == "fake agent: something went badly wrong"
    record = await get_session(fake, record["id"])
    assert record["exit_code"] == 3 and record["status"] == "failed"


async def test_garbage_output_is_skipped_and_reported(fake: ServerThread) -> None:
    record = await create(fake, prompt="garbage")
    frames, _ = await stream(fake, record["id"])
    assert kinds(frames) == ["status:running", "error", "status:failed"]
    assert "this is not json" in frames[1]["error"]


async def test_hang_is_terminated(fake: ServerThread) -> None:
    record = await create(fake, prompt="hang")
    await wait_status(fake, record["id"], "running")
    response = await fake.request("DELETE", f"/api/v1/agent-sessions/{record['id']}")
    assert response.status == 200 and response.body["status"] == "terminated"
    frames, _ = await stream(fake, record["id"])
    assert kinds(frames) == ["status:running", "error", "status:terminated"]
    assert frames[1]["error"] == "terminated"


async def test_escaped_grandchild_is_killed_on_terminate(fake: ServerThread) -> None:
    record = await create(fake, prompt="spawn", interactive=True)
    ws = await fake.websocket(f"/api/v1/ws/agent-sessions/{record['id']}")
    frames: list[dict] = []
    spawned = await wait_for_frame(ws, "text", frames)
    child = psutil.Process(int(spawned["content"].split()[1]))
    assert child.status() != psutil.STATUS_ZOMBIE
    assert os.getsid(child.pid) != os.getsid(record["pid"] or (await get_session(fake, record["id"]))["pid"])
    response = await fake.request("DELETE", f"/api/v1/agent-sessions/{record['id']}")
    assert response.status == 200
    await wait_for_frame(ws, "status", frames, status="terminated")
    deadline = time.monotonic() + 5
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the escaped grandchild survived"
        await asyncio.sleep(0.05)


async def test_flood_of_100k_lines_arrives_whole_and_in_order(fake: ServerThread) -> None:
    record = await create(fake, prompt="flood 100000")
    frames, code = await stream(fake, record["id"], timeout=110)
    assert code == 1000
    check_stream(frames, record["id"])
    assert len(frames) == 100_000 + 3
    texts = [f["content"] for f in frames if f["type"] == "text"]
    assert [int(t.split()[1]) for t in texts] == list(range(100_000))
    assert frames[-2] == {**frames[-2], "type": "done", "content": "flooded 100000"}
    record = await get_session(fake, record["id"])
    assert record["message_count"] == 100_003
    page = (await fake.request("GET", f"/api/v1/agent-sessions/{record['id']}/messages?after=99999&limit=10")).body
    assert [m["seq"] for m in page["messages"]] == [100_000, 100_001, 100_002, 100_003]


async def test_very_long_line_is_relayed(fake: ServerThread) -> None:
    record = await create(fake, prompt="long 3000000")
    frames, _ = await stream(fake, record["id"])
    assert kinds(frames) == ["status:running", "text", "done", "status:completed"]
    assert len(frames[1]["content"]) == 3_000_000


async def test_follow_ups_interrupts_and_answers_are_refused_where_they_cannot_apply(fake: ServerThread) -> None:
    record = await create(fake, prompt="hang")
    sid = record["id"]
    response = await fake.request("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": "more"})
    assert response.status == 409 and response.error_code == "session_not_interactive"
    response = await fake.request("POST", f"/api/v1/agent-sessions/{sid}/permissions/x", {"behavior": "allow"})
    assert response.status == 404 and response.error_code == "permission_request_not_found"
    response = await fake.request("POST", f"/api/v1/agent-sessions/{sid}/interrupt")
    assert response.status == 202
    frames, _ = await stream(fake, sid)
    assert kinds(frames) == ["status:running", "error", "status:failed"]
    assert frames[1]["error"] == "interrupted"
    for method, path, body in (
        ("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": "more"}),
        ("POST", f"/api/v1/agent-sessions/{sid}/interrupt", None),
    ):
        response = await fake.request(method, path, body)
        assert response.status == 409 and response.error_code == "session_ended"


async def test_interactive_follow_ups_take_turns(fake: ServerThread) -> None:
    record = await create(fake, prompt="echo one", interactive=True)
    sid = record["id"]
    ws = await fake.websocket(f"/api/v1/ws/agent-sessions/{sid}")
    frames: list[dict] = []
    await wait_for_frame(ws, "status", frames, status="idle")
    response = await fake.request("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": "echo two"})
    assert response.status == 202 and response.body == {"accepted": True}
    ws.write_message(json.dumps({"type": "user", "content": "echo three"}))
    ws.write_message(json.dumps({"type": "bogus"}))
    # The reply and the turns race: wait for the last turn, then find the reply wherever it came.
    await wait_for_frame(ws, "done", frames, content="echo: echo three")
    replies = [f for f in frames if f["type"] == "reply"]
    reply = replies[0] if replies else await wait_for_frame(ws, "reply", frames)
    assert reply["ok"] is False and reply["error"]["code"] == "unknown_frame" and "seq" not in reply
    await fake.request("DELETE", f"/api/v1/agent-sessions/{sid}")
    await wait_for_frame(ws, "status", frames, status="terminated")
    stored = [f for f in frames if f["type"] != "reply"]
    assert [f["content"] for f in stored if f["type"] == "done"] == [
        "echo: echo one",
        "echo: echo two",
        "echo: echo three",
    ]
    assert [f["seq"] for f in stored] == list(range(1, len(stored) + 1))


@pytest.mark.parametrize("follow_up", ["crash", "garbage"])
async def test_an_interactive_agent_that_dies_mid_turn_goes_to_failed_never_idle(
    fake: ServerThread, follow_up: str
) -> None:
    record = await create(fake, prompt="echo one", interactive=True)
    sid = record["id"]
    ws = await fake.websocket(f"/api/v1/ws/agent-sessions/{sid}")
    frames: list[dict] = []
    idle = await wait_for_frame(ws, "status", frames, status="idle")
    ws.close()
    response = await fake.request("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": follow_up})
    assert response.status == 202, response.body
    rest, code = await stream(fake, sid, after=idle["seq"])
    assert code == 1000
    # The turn ends with the agent's error and the session with "failed": no "idle" (waiting for input) between.
    assert kinds(rest) == ["status:running", "error", "status:failed"], rest
    assert (await get_session(fake, sid))["status"] == "failed"


async def test_max_sessions_answers_429(fake: ServerThread) -> None:
    running = [await create(fake, prompt="hang") for _ in range(3)]
    response = await fake.request("POST", "/api/v1/agent-sessions", {"prompt": "hang"})
    assert response.status == 429 and response.error_code == "too_many_sessions"
    await asyncio.gather(*(fake.request("DELETE", f"/api/v1/agent-sessions/{r['id']}") for r in running))
    listed = (await fake.request("GET", "/api/v1/agent-sessions?status=terminated")).body["sessions"]
    assert {r["id"] for r in running} <= {s["id"] for s in listed}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "invalid_field"),
        ({"prompt": ""}, 400, "invalid_field"),
        ({"prompt": "x", "agent": "nope"}, 400, "unknown_agent"),
        ({"prompt": "x", "model": "--dangerously-skip-permissions"}, 400, "invalid_field"),
        ({"prompt": "x", "allowed_tools": ["Bash", "\x00"]}, 400, "invalid_field"),
        ({"prompt": "x", "permission_mode": "yolo"}, 400, "invalid_field"),
        ({"prompt": "x", "max_turns": 0}, 400, "invalid_field"),
        ({"prompt": "x", "max_turns": True}, 400, "invalid_field"),
        ({"prompt": "x", "max_turns": 2.5}, 400, "invalid_field"),
        ({"prompt": "x", "cwd": "../.."}, 403, "path_outside_workspace"),
        ({"prompt": "x", "cwd": "no-such-dir"}, 404, "cwd_not_found"),
        ({"prompt": " \n"}, 400, "invalid_field"),
        ({"prompt": "x", "model": " sonnet"}, 400, "invalid_field"),
        ({"resume": "as_nope", "model": "a\x00b"}, 400, "invalid_field"),
        ({"prompt": "x", "interactive": "yes"}, 400, "invalid_field"),
    ],
)
async def test_bad_create_requests(fake: ServerThread, body: dict, status: int, code: str) -> None:
    before = len((await fake.request("GET", "/api/v1/agent-sessions")).body["sessions"])
    response = await fake.request("POST", "/api/v1/agent-sessions", body)
    assert (response.status, response.error_code) == (status, code)
    assert len((await fake.request("GET", "/api/v1/agent-sessions")).body["sessions"]) == before


async def test_unknown_session_everywhere(fake: ServerThread) -> None:
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/messages"), ("POST", "/interrupt")):
        response = await fake.request(method, f"/api/v1/agent-sessions/as_nope{path}")
        assert response.status == 404 and response.error_code == "session_not_found"
    with pytest.raises(Exception) as info:
        await fake.websocket("/api/v1/ws/agent-sessions/as_nope")
    assert "404" in str(info.value)
    response = await fake.request("GET", "/api/v1/agent-sessions?status=sleeping")
    assert response.status == 400


async def test_missing_cli_is_422(servers: ServerPool) -> None:
    server = servers.fresh("--claude-bin", "/nonexistent/claude")
    try:
        response = await server.request("POST", "/api/v1/agent-sessions", {"prompt": "hi"})
        assert response.status == 422 and response.error_code == "agent_unavailable"
        assert response.body["error"]["details"]["binary"] == "/nonexistent/claude"
        agents = (await server.request("GET", "/api/v1/agents")).body["agents"]
        assert agents[0]["available"] is False and agents[0]["version"] is None
    finally:
        server.stop()


async def test_a_slow_probe_of_another_cli_does_not_delay_a_session(servers: ServerPool, tmp_path: Any) -> None:
    """Creating a session waits for its own agent's detection only, not for a CLI whose --version hangs."""
    slow = os.path.join(os.fspath(tmp_path), "slow-codex")
    with open(slow, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\nsleep 4\necho 'codex-cli 0.0.1'\n")
    os.chmod(slow, 0o755)
    server = servers.fresh("--claude-bin", FAKE, "--codex-bin", slow)
    try:
        session = await create(server, prompt="hi")
        assert server.runtime is not None
        detection = server.runtime.ctx.agents._detection
        assert detection is not None and not detection.done(), "the session waited for the slow probe"
        await wait_status(server, session["id"], "completed")
    finally:
        server.stop()


async def test_a_stalled_client_is_closed_with_1013_and_slows_no_one(fake: ServerThread) -> None:
    assert fake.runtime is not None
    agents = fake.runtime.ctx.agents
    agents.client_backlog = 5000  # below what the kernel's socket buffers swallow for a client that never reads
    record = await create(fake, prompt="hang", interactive=True)
    sid = record["id"]
    # A raw client that completes the handshake, then never reads (a tiny receive buffer fills at once).
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", fake.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        f"GET /api/v1/ws/agent-sessions/{sid} HTTP/1.1\r\nHost: 127.0.0.1:{fake.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.sleep(0.3)
    healthy = asyncio.ensure_future(stream(fake, sid))  # reconnects with ?after= when it is cut off too
    await fake.request("POST", f"/api/v1/agent-sessions/{sid}/interrupt")
    await fake.request("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": "flood 50000"})
    await wait_status(fake, sid, "idle")
    await fake.request("DELETE", f"/api/v1/agent-sessions/{sid}")
    frames, code = await healthy
    assert code == 1000
    check_stream(frames, sid)
    assert frames[0]["seq"] == 1 and sum(1 for f in frames if f["type"] == "text") == 50_000
    assert any(f["type"] == "done" and f["content"] == "flooded 50000" for f in frames)
    # The stalled client was cut off: a close frame with 1013 sits somewhere in what it was sent, and the
    # connection waits for it to be read (longer than Tornado's own 5 s after a close frame).
    await asyncio.sleep(6)
    raw.setblocking(False)
    data = bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = raw.recv(1 << 20)
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        if not chunk:
            break
        data += chunk
    raw.close()
    agents.client_backlog = 100_000
    assert (
        b"\x88\x02\x03\xf5" in data
        or b"\x88" + bytes([2 + len("too far behind")]) in data
        or ((1013).to_bytes(2, "big") + b"too far behind" in data)
    )


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
async def test_no_zombies_are_left(fake: ServerThread) -> None:
    record = await create(fake, prompt="echo bye")
    await stream(fake, record["id"])
    me = psutil.Process()
    zombies = [c for c in me.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (["status:running", "text"], ["status:running", "text", "error", "status:interrupted"]),
        (["status:running", "text", "done"], ["status:running", "text", "done", "status:interrupted"]),
        (
            ["status:running", "text", "done", "status:idle"],
            ["status:running", "text", "done", "status:idle", "status:interrupted"],
        ),
    ],
)
async def test_a_runtime_killed_mid_session_leaves_it_interrupted(
    servers: ServerPool, tmp_path: pytest.TempPathFactory, stored: list[str], expected: list[str]
) -> None:
    """No graceful shutdown (SIGKILL): the record still says running; the message log decides what ended."""
    workspace = str(tmp_path)
    sid = "as_killed0000001"
    directory = os.path.join(workspace, ".wsruntime", "agent-sessions", sid)
    os.makedirs(directory)
    record = {
        "id": sid, "agent": "claude-code", "status": "running", "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z", "ended_at": None, "prompt": "p", "cwd": "", "model": None,
        "agent_session_id": "abc", "pid": 99999999, "message_count": 1, "result": None, "usage": None,
        "cost_usd": None, "exit_code": None, "error": None, "interactive": True, "permission_prompts": False,
        "resumed_from": None,
    }  # fmt: skip
    with open(os.path.join(directory, "session.json"), "w") as f:
        json.dump(record, f)
    with open(os.path.join(directory, "messages.jsonl"), "w") as f:
        for seq, kind in enumerate(stored, 1):
            frame = (
                {"type": "status", "status": kind[7:]} if kind.startswith("status:") else {"type": kind, "content": "x"}
            )
            f.write(json.dumps({**frame, "seq": seq, "ts": "t", "session_id": sid}) + "\n")
        f.write('{"type": "text", "content": "torn by the kil')  # a line cut short by the crash is dropped
    server = servers.fresh("--claude-bin", FAKE, workspace=workspace)
    try:
        got = await get_session(server, sid)
        assert got["status"] == "interrupted" and got["pid"] is None and got["message_count"] == len(expected)
        frames, code = await stream(server, sid)
        assert code == 1000 and kinds(frames) == expected
        check_stream(frames, sid)
        with open(os.path.join(directory, "messages.jsonl")) as f:
            assert [json.loads(line)["seq"] for line in f] == list(range(1, len(expected) + 1))
    finally:
        server.stop()


async def test_status_changes_are_published_on_the_event_hub(fake: ServerThread) -> None:
    ws = await fake.websocket("/api/v1/ws?topics=agent_session")
    hello = json.loads(await asyncio.wait_for(ws.read_message(), 10))  # type: ignore[arg-type]
    assert hello["type"] == "hello"
    record = await create(fake, prompt="echo published")
    statuses: list[str] = []
    while not statuses or statuses[-1] != "completed":
        event = json.loads(await asyncio.wait_for(ws.read_message(), 10))  # type: ignore[arg-type]
        if event["type"] == "agent_session" and event["id"] == record["id"]:
            assert event["agent"] == "claude-code" and event["session_id"] == record["id"]  # the alias
            statuses.append(event["status"])
    assert statuses == ["starting", "running", "completed"]
    ws.close()


async def test_resume_refuses_a_running_session_and_names_an_unknown_one_as_the_agents(fake: ServerThread) -> None:
    running = await create(fake, prompt="hang")
    response = await fake.request("POST", "/api/v1/agent-sessions", {"prompt": "again", "resume": running["id"]})
    assert response.status == 409 and response.error_code == "session_running"
    await fake.request("DELETE", f"/api/v1/agent-sessions/{running['id']}")
    resumed = await create(fake, prompt="echo resumed", resume=running["id"])
    assert resumed["resumed_from"] == running["id"]
    assert resumed["agent_session_id"] == (await get_session(fake, running["id"]))["agent_session_id"]
    foreign = await create(fake, prompt="echo foreign", resume="some-agent-session-id")
    assert foreign["resumed_from"] == "some-agent-session-id" and foreign["agent_session_id"] == "some-agent-session-id"
    for record in (resumed, foreign):
        await stream(fake, record["id"])
    # Resumed without a prompt: an interactive session waits for one ("idle"); any other just runs.
    quiet = await create(fake, resume=resumed["id"])
    assert quiet["status"] == "running" and quiet["interactive"] is False, quiet
    frames, _ = await stream(fake, quiet["id"])
    assert "status:idle" not in kinds(frames), frames
    waiting = await create(fake, resume=resumed["id"], interactive=True)
    assert waiting["status"] == "idle", waiting
    await fake.request("DELETE", f"/api/v1/agent-sessions/{waiting['id']}")


def test_sigterm_stops_every_agent_within_5_s(tmp_path: pytest.TempPathFactory) -> None:
    workspace = str(tmp_path)
    runtime = RuntimeProcess("--workspace", workspace, "--port", "0", "--claude-bin", FAKE)
    url = runtime.wait_ready()

    def post(prompt: str) -> dict:
        import urllib.request

        request = urllib.request.Request(
            url + "/api/v1/agent-sessions",
            data=json.dumps({"prompt": prompt, "interactive": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return dict(json.load(answer))

    hanging = [post("hang"), post("spawn")]
    time.sleep(1.5)  # the spawned grandchild is up and seen by a descendant scan
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/agent-sessions/{hanging[1]['id']}/messages", timeout=10) as answer:
        texts = [m["content"] for m in json.load(answer)["messages"] if m["type"] == "text"]
    grandchild = int(texts[0].split()[1])  # "spawned <pid>": a sleep in a session of its own
    pids = [r["pid"] for r in hanging] + [grandchild]
    assert runtime.stop(timeout=10) == 0
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    for record in hanging:
        with open(os.path.join(workspace, ".wsruntime", "agent-sessions", record["id"], "session.json")) as f:
            assert json.load(f)["status"] == "interrupted"


def test_a_sigkilled_runtime_stops_its_agents_at_the_next_start(tmp_path: pytest.TempPathFactory) -> None:
    """The sessions read ``interrupted`` after the restart, and nothing of them runs on: not the agent in the
    middle of a turn, not the one waiting, not the server a tool started in a session of its own."""
    import urllib.request

    workspace = str(tmp_path)
    runtime = RuntimeProcess("--workspace", workspace, "--port", "0", "--claude-bin", FAKE)
    url = runtime.wait_ready()

    def call(method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    sessions = [
        call("POST", "/api/v1/agent-sessions", {"prompt": "spawn"}),
        call("POST", "/api/v1/agent-sessions", {"prompt": "hang", "interactive": True}),
    ]
    deadline = time.monotonic() + 20
    texts: list[str] = []
    while not texts:
        assert time.monotonic() < deadline, "the spawn scenario never said its grandchild"
        messages = call("GET", f"/api/v1/agent-sessions/{sessions[0]['id']}/messages")["messages"]
        texts = [m["content"] for m in messages if m["type"] == "text"]
        time.sleep(0.05)
    grandchild = int(texts[0].split()[1])  # "spawned <pid>": a sleep in a session of its own
    pids = [s["pid"] for s in sessions] + [grandchild]
    try:
        runtime.proc.kill()
        runtime.proc.wait(10)
        time.sleep(0.3)
        assert all(psutil.pid_exists(p) for p in pids), "nothing stopped them before the restart"
        runtime = RuntimeProcess("--workspace", workspace, "--port", "0", "--claude-bin", FAKE)
        url = runtime.wait_ready()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.05)
        assert [p for p in pids if _running(p)] == []
        for record in sessions:
            after = call("GET", f"/api/v1/agent-sessions/{record['id']}")
            assert after["status"] == "interrupted" and after["pid"] is None, after
    finally:
        runtime.stop(timeout=10)
        for pid in pids:
            if _running(pid):
                os.kill(pid, 9)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
