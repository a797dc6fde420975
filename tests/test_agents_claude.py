"""Agent sessions with the REAL ``claude`` CLI (2.1.197) through the runtime, against tests/mock_anthropic.py.

Each test gets a fresh HOME for the CLI; independent sessions run concurrently
to keep the wall time down (each CLI run costs about a second).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import psutil
import pytest

from tests.agents_support import check_stream, create, get_session, kinds, stream, wait_for_frame, wait_status
from tests.conftest import RuntimeProcess, ServerPool, ServerThread
from tests.mock_anthropic import MockAnthropic, api_error, reply, text, thinking, tool_use

pytestmark = pytest.mark.skipif(shutil.which("claude") is None, reason="the claude CLI is not installed")


@pytest.fixture(scope="module")
def mock() -> Iterator[MockAnthropic]:
    server = MockAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def agent_server(servers: ServerPool) -> Iterator[ServerThread]:
    server = servers.fresh("--max-sessions", "20")
    yield server
    server.stop()


@pytest.fixture
def claude(agent_server: ServerThread, mock: MockAnthropic) -> Iterator[ServerThread]:
    """The runtime, its agents pointed at the mock with a HOME of their own."""
    home = tempfile.mkdtemp(prefix="claude-home-")
    assert agent_server.runtime is not None
    agent_server.runtime.ctx.agents.env_overrides = mock.env(home)
    yield agent_server
    shutil.rmtree(home, ignore_errors=True)


async def test_agents_lists_the_real_cli(claude: ServerThread) -> None:
    body = (await claude.request("GET", "/api/v1/agents")).body
    info = next(a for a in body["agents"] if a["name"] == "claude-code")
    assert info["available"] is True and info["version"] == "2.1.197"
    health = (await claude.request("GET", "/health")).body
    assert health["agents"]["claude-code"] == {
        "available": True,
        "version": "2.1.197",
        "path": info["path"],
        "options": info["options"],
        "settings_files": info["settings_files"],
    }


async def test_text_tool_and_write_sessions(claude: ServerThread, mock: MockAnthropic) -> None:
    mock.script("hello", reply(text("Hello from the mock.")))
    mock.script(
        "tool",
        reply(thinking("Let me look."), text("Running echo."), tool_use("Bash", {"command": "echo hi-from-tool"})),
        reply(text("The tool said hi.")),
    )
    mock.script(
        "write",
        reply(
            tool_use("Write", {"file_path": os.path.join(claude.workspace, "made.txt"), "content": "made by claude\n"})
        ),
        reply(text("Written.")),
    )
    hello, tool, write = await asyncio.gather(
        create(claude, prompt="scn:hello say hello"),
        create(claude, prompt="scn:tool run echo", allowed_tools=["Bash(echo *)"]),
        create(claude, prompt="scn:write write a file", permission_mode="acceptEdits"),
    )
    assert hello["status"] == "running" and hello["agent"] == "claude-code" and hello["pid"] > 0
    (f1, c1), (f2, c2), (f3, c3) = await asyncio.gather(
        stream(claude, hello["id"]), stream(claude, tool["id"]), stream(claude, write["id"])
    )
    assert c1 == c2 == c3 == 1000
    for frames, record in ((f1, hello), (f2, tool), (f3, write)):
        check_stream(frames, record["id"])
    assert kinds(f1) == ["status:running", "text", "done", "status:completed"]
    assert f1[1]["content"] == "Hello from the mock." and f1[2]["content"] == "Hello from the mock."
    assert f1[2]["cost_usd"] >= 0 and isinstance(f1[2]["usage"], dict)

    assert kinds(f2) == [
        "status:running",
        "thinking",
        "text",
        "tool_use",
        "tool_result",
        "text",
        "done",
        "status:completed",
    ]
    use, result = f2[3], f2[4]
    assert use["tool"] == "Bash" and use["input"]["command"] == "echo hi-from-tool"
    assert result["tool"] == "Bash" and result["tool_use_id"] == use["tool_use_id"]
    assert result["output"].strip() == "hi-from-tool" and result["is_error"] is False

    assert [f["type"] for f in f3 if f["type"] in ("tool_use", "tool_result", "done")] == [
        "tool_use",
        "tool_result",
        "done",
    ]
    with open(os.path.join(claude.workspace, "made.txt"), encoding="utf-8") as f:
        assert f.read() == "made by claude\n"

    record = await get_session(claude, hello["id"])
    assert record["status"] == "completed" and record["exit_code"] == 0 and record["pid"] is None
    assert record["result"] == "Hello from the mock." and record["message_count"] == 4
    assert record["agent_session_id"] and record["ended_at"]
    # The same messages over HTTP, and the newest first in the list.
    messages = (await claude.request("GET", f"/api/v1/agent-sessions/{hello['id']}/messages")).body
    assert messages == {"messages": f1, "has_more": False}
    listed = (await claude.request("GET", "/api/v1/agent-sessions?status=completed")).body["sessions"]
    ids = [s["id"] for s in listed]
    assert {hello["id"], tool["id"], write["id"]} <= set(ids)
    created = [s["created_at"] for s in listed]
    assert created == sorted(created, reverse=True)


async def test_permission_denied_and_api_errors(claude: ServerThread, mock: MockAnthropic) -> None:
    target = os.path.join(claude.workspace, "denied.txt")
    mock.script("denied", reply(tool_use("Write", {"file_path": target, "content": "x"})), reply(text("Not allowed.")))
    mock.script("e401", api_error(401, "authentication_error", "invalid x-api-key (mock)"))
    mock.script("e500", api_error(500, "api_error", "Internal server error (mock)"))
    sessions = await asyncio.gather(
        create(claude, prompt="scn:denied write it"),
        create(claude, prompt="scn:e401 hello"),
        create(claude, prompt="scn:e500 hello"),
    )
    (denied, _), (e401, _), (e500, _) = await asyncio.gather(*(stream(claude, s["id"]) for s in sessions))
    result = next(f for f in denied if f["type"] == "tool_result")
    assert result["is_error"] is True and result["tool"] == "Write"
    assert "requested permissions" in result["error"]
    assert denied[-2]["type"] == "done" and denied[-1]["status"] == "completed"
    assert not os.path.exists(target)

    assert kinds(e401) == ["status:running", "error", "status:failed"]  # the synthetic text is not shown
    assert "Invalid API key" in e401[1]["error"]
    assert kinds(e500) == ["status:running", "error", "status:failed"]
    assert "500" in e500[1]["error"]
    record = await get_session(claude, sessions[2]["id"])
    assert record["status"] == "failed" and record["exit_code"] == 1 and "500" in record["error"]


async def test_permission_prompts_allowed_over_http_and_denied_over_the_socket(
    claude: ServerThread, mock: MockAnthropic
) -> None:
    mock.script("ask", reply(tool_use("Bash", {"command": "touch allowed.txt"})), reply(text("Asked.")))
    mock.script("ask2", reply(tool_use("Bash", {"command": "touch refused.txt"})), reply(text("Refused.")))
    allowed, refused = await asyncio.gather(
        create(claude, prompt="scn:ask touch it", permission_prompts=True),
        create(claude, prompt="scn:ask2 touch it", permission_prompts=True),
    )
    ws1 = await claude.websocket(f"/api/v1/ws/agent-sessions/{allowed['id']}")
    ws2 = await claude.websocket(f"/api/v1/ws/agent-sessions/{refused['id']}")
    frames1: list[dict] = []
    frames2: list[dict] = []
    req1, req2 = await asyncio.gather(
        wait_for_frame(ws1, "permission_request", frames1), wait_for_frame(ws2, "permission_request", frames2)
    )
    assert req1["tool"] == "Bash" and req1["input"]["command"] == "touch allowed.txt"
    wrong = await claude.request(
        "POST", f"/api/v1/agent-sessions/{allowed['id']}/permissions/nope", {"behavior": "allow"}
    )
    assert wrong.status == 404 and wrong.error_code == "permission_request_not_found"
    bad = await claude.request(
        "POST", f"/api/v1/agent-sessions/{allowed['id']}/permissions/{req1['request_id']}", {"behavior": "maybe"}
    )
    assert bad.status == 400
    answer = await claude.request(
        "POST", f"/api/v1/agent-sessions/{allowed['id']}/permissions/{req1['request_id']}", {"behavior": "allow"}
    )
    assert answer.status == 202 and answer.body == {"accepted": True}
    ws2.write_message(
        json.dumps(
            {"type": "permission", "request_id": req2["request_id"], "behavior": "deny", "message": "No touching."}
        )
    )
    await asyncio.gather(
        wait_for_frame(ws1, "status", frames1, status="completed"),
        wait_for_frame(ws2, "status", frames2, status="completed"),
    )
    ok = next(f for f in frames1 if f["type"] == "tool_result")
    assert ok["is_error"] is False
    assert os.path.exists(os.path.join(claude.workspace, "allowed.txt"))
    no = next(f for f in frames2 if f["type"] == "tool_result")
    assert no["is_error"] is True and no["error"] == "No touching."
    assert not os.path.exists(os.path.join(claude.workspace, "refused.txt"))
    # The permission request is a stored, numbered frame of the stream.
    stored = (await claude.request("GET", f"/api/v1/agent-sessions/{allowed['id']}/messages")).body["messages"]
    assert [f["seq"] for f in stored if f["type"] == "permission_request"] == [req1["seq"]]


async def test_interrupt_then_follow_up_then_terminate(claude: ServerThread, mock: MockAnthropic) -> None:
    mock.script("slow", reply(text("word " * 200, chunks=100, chunk_delay=0.1)))
    mock.script("next", reply(text("After the interrupt.")))
    record = await create(claude, prompt="scn:slow talk a lot", interactive=True)
    sid = record["id"]
    ws = await claude.websocket(f"/api/v1/ws/agent-sessions/{sid}")
    frames: list[dict] = []
    await wait_for_frame(ws, "status", frames, status="running")
    # The mock runs on another thread: poll its request log until the slow answer is streaming.
    while not any(r["key"] == "slow" for r in mock.requests):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    response = await claude.request("POST", f"/api/v1/agent-sessions/{sid}/interrupt")
    assert response.status == 202
    error = await wait_for_frame(ws, "error", frames)
    assert error["error"] == "interrupted"
    await wait_for_frame(ws, "status", frames, status="idle")
    pid = (await get_session(claude, sid))["pid"]
    assert pid is not None and psutil.pid_exists(pid)  # the process survived the interrupt
    ws.write_message(json.dumps({"type": "user", "content": "scn:next go on"}))
    done = await wait_for_frame(ws, "done", frames)
    assert done["content"] == "After the interrupt."
    await wait_for_frame(ws, "status", frames, status="idle")
    response = await claude.request("DELETE", f"/api/v1/agent-sessions/{sid}")
    assert response.status == 200 and response.body["status"] == "terminated"
    final = await wait_for_frame(ws, "status", frames, status="terminated")
    assert await ws.read_message() is None and ws.close_code == 1000
    assert final["seq"] == frames[-1]["seq"]
    assert sum(1 for f in frames if f["type"] in ("done", "error")) == 2  # one per turn, the idle end adds none
    late = await claude.request("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": "more"})
    assert late.status == 409 and late.error_code == "session_ended"
    again = await claude.request("DELETE", f"/api/v1/agent-sessions/{sid}")
    assert again.status == 200 and again.body == response.body


async def test_terminate_while_a_tool_sleeps_leaves_no_process(claude: ServerThread, mock: MockAnthropic) -> None:
    mock.script("sleepy", reply(tool_use("Bash", {"command": "sleep 47.25; echo slept"})), reply(text("Slept.")))
    record = await create(claude, prompt="scn:sleepy sleep", allowed_tools=["Bash"])
    ws = await claude.websocket(f"/api/v1/ws/agent-sessions/{record['id']}")
    frames: list[dict] = []
    await wait_for_frame(ws, "tool_use", frames)

    def sleepers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if "47.25" in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        return found

    for _ in range(100):
        if sleepers():
            break
        await asyncio.sleep(0.05)
    assert sleepers(), "the tool never started"
    response = await claude.request("DELETE", f"/api/v1/agent-sessions/{record['id']}")
    assert response.status == 200 and response.body["status"] == "terminated"
    await wait_for_frame(ws, "status", frames, status="terminated")
    turn_ends = [f for f in frames if f["type"] in ("done", "error")]
    assert [f.get("error") for f in turn_ends] == ["terminated"]
    assert sleepers() == []


async def test_resume_continues_the_conversation(claude: ServerThread, mock: MockAnthropic) -> None:
    mock.script("remember", reply(text("I will remember.")))
    first = await create(claude, prompt="scn:remember the number 42")
    await stream(claude, first["id"])
    first_done = await get_session(claude, first["id"])
    mock.script("recall", reply(text("You said 42.")))
    second = await create(claude, prompt="scn:recall what number?", resume=first["id"])
    frames, _ = await stream(claude, second["id"])
    assert frames[-2]["type"] == "done" and frames[-1]["status"] == "completed"
    record = await get_session(claude, second["id"])
    assert record["resumed_from"] == first["id"]
    assert record["agent_session_id"] == first_done["agent_session_id"]
    # The CLI sent the earlier turn along: the mock saw more than the one new message.
    recall = [r for r in mock.requests if r["key"] == "recall"]
    first_request = next(r for r in mock.requests if r["key"] == "remember")
    assert recall and recall[0]["messages"] > first_request["messages"]
    assert await get_session(claude, first["id"]) == first_done  # the old session stays as it was


async def test_restart_mid_session_then_resume(mock: MockAnthropic) -> None:
    workspace = tempfile.mkdtemp(prefix="ws-restart-")
    home = tempfile.mkdtemp(prefix="claude-home-")
    env = mock.env(home)
    args = ("--workspace", workspace, "--port", "0", "--host", "127.0.0.1")
    runtime = RuntimeProcess(*args, env=env)
    try:
        url = runtime.wait_ready()
        server = _Remote(url)
        mock.script("first", reply(text("First turn.")))
        record = await create(server, prompt="scn:first hello", interactive=True)  # type: ignore[arg-type]
        await wait_status(server, record["id"], "idle")  # type: ignore[arg-type]
        pid = (await get_session(server, record["id"]))["pid"]  # type: ignore[arg-type]
        assert runtime.stop() == 0
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        runtime = RuntimeProcess(*args, env=env)
        server = _Remote(runtime.wait_ready())
        old = await get_session(server, record["id"])  # type: ignore[arg-type]
        assert old["status"] == "interrupted" and old["pid"] is None
        frames, code = await stream(server, record["id"])  # type: ignore[arg-type]
        assert code == 1000
        assert kinds(frames) == ["status:running", "text", "done", "status:idle", "status:interrupted"]
        check_stream(frames, record["id"])
        mock.script("second", reply(text("Second turn.")))
        resumed = await create(server, prompt="scn:second again", resume=record["id"])  # type: ignore[arg-type]
        frames, _ = await stream(server, resumed["id"])  # type: ignore[arg-type]
        assert frames[-2] == {**frames[-2], "type": "done", "content": "Second turn."}
    finally:
        runtime.stop()
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


async def test_replay_after_seq(claude: ServerThread, mock: MockAnthropic) -> None:
    mock.script("replay", reply(text("One."), text("Two.")))
    record = await create(claude, prompt="scn:replay count")
    everything, _ = await stream(claude, record["id"])
    assert kinds(everything) == ["status:running", "text", "text", "done", "status:completed"]
    tail, code = await stream(claude, record["id"], after=2)
    assert code == 1000 and tail == everything[2:]
    nothing, code = await stream(claude, record["id"], after=len(everything))
    assert code == 1000 and nothing == []
    page = (await claude.request("GET", f"/api/v1/agent-sessions/{record['id']}/messages?after=1&limit=2")).body
    assert page == {"messages": everything[1:3], "has_more": True}


class _Remote:
    """Just enough of ServerThread for the helpers, for a runtime in another process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws_url = "ws" + url[len("http") :]

    request = ServerThread.request
    websocket = ServerThread.websocket


async def test_deltas_stream_the_text_as_it_is_written(claude: ServerThread, mock: MockAnthropic) -> None:
    """``deltas: true``: the real CLI's partial messages become live text_delta / thinking_delta frames."""
    words = "One two three four five six seven eight."
    mock.script("deltas", reply(thinking("Pondering."), text(words, chunks=8, chunk_delay=0.05)))
    record = await create(claude, prompt="scn:deltas say it slowly", deltas=True)
    assert record["deltas"] is True
    ws = await claude.websocket(f"/api/v1/ws/agent-sessions/{record['id']}")
    frames: list[dict] = []
    await wait_for_frame(ws, "status", frames, status="completed")
    deltas = [f for f in frames if f["type"] == "text_delta"]
    assert len(deltas) >= 2 and "".join(d["content"] for d in deltas) == words
    assert all("seq" not in d and d["block"] == deltas[0]["block"] for d in deltas)
    thoughts = [f for f in frames if f["type"] == "thinking_delta"]
    assert "".join(t["content"] for t in thoughts) == "Pondering."
    complete = next(i for i, f in enumerate(frames) if f["type"] == "text")
    assert frames[complete]["content"] == words and frames.index(deltas[-1]) < complete
    stored = [f for f in frames if "seq" in f]
    check_stream(stored, record["id"])
    assert kinds(stored) == ["status:running", "thinking", "text", "done", "status:completed"]
    replayed, _ = await stream(claude, record["id"])
    assert replayed == stored  # the deltas are not kept
    assert (await get_session(claude, record["id"]))["message_count"] == len(stored)
