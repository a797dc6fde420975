"""Long-lived agents: Gemini, Qwen and opencode over ACP, Codex as app-server; the REAL CLIs against the mock.

Marked ``agents_cli`` (node start-ups: seconds each). One interactive session per CLI with
``deltas`` and ``permission_prompts`` takes, in the same process: a text answer (streamed as deltas),
a shell call allowed over HTTP, one denied over the socket, a long command interrupted (the turn
ends, the command is gone, the session goes on), an API error (the session survives it), then DELETE
with nothing left running; then the conversation is resumed in a new process (session/load for Qwen
and opencode; Gemini 0.61 resumes one-shot).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.agents_support import check_stream, create, get_session, kinds, stream, wait_for_frame, wait_status
from tests.conftest import RuntimeProcess, ServerPool, ServerThread
from tests.mock_openai import MockModels, api_error, reply, write_homes
from tests.test_agents_claude import _Remote
from tests.test_agents_cli import gone, wait_for_process

pytestmark = pytest.mark.agents_cli

BINARIES = {"gemini": "gemini", "qwen-code": "qwen", "opencode": "opencode", "codex": "codex"}
OPTIONS: dict[str, dict[str, Any]] = {
    "codex": {},
    "gemini": {"model": "gemini-2.5-flash"},
    "qwen-code": {},
    "opencode": {"model": "mock/mock-model"},
}
ERRORS = {
    "gemini": api_error(500, "mock internal server error"),
    "qwen-code": api_error(400, "bad request (mock)"),  # qwen retries a 500 for ~80 s, not a 400
    "opencode": api_error(500, "mock internal server error", retry_after_ms=1),
    "codex": api_error(500, "mock internal server error"),
}
SLEEPS = {"gemini": 321, "qwen-code": 322, "opencode": 323, "codex": 324}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockModels]:
    server = MockModels().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acp_server(servers: ServerPool, mock: MockModels) -> Iterator[ServerThread]:
    home = tempfile.mkdtemp(prefix="agents-acp-home-")
    server = servers.fresh("--max-sessions", "20")
    assert server.runtime is not None
    server.runtime.ctx.agents.env_overrides = write_homes(home, mock.url)
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


async def answer_over_socket(ws: Any, request_id: str, behavior: str) -> None:
    await ws.write_message(json.dumps({"type": "permission", "request_id": request_id, "behavior": behavior}))


@pytest.mark.async_timeout(300)
@pytest.mark.parametrize("agent", list(BINARIES))
async def test_one_process_follow_ups_prompts_interrupt_error_delete_resume(
    agent: str, acp_server: ServerThread, mock: MockModels
) -> None:
    if shutil.which(BINARIES[agent]) is None:
        pytest.skip(f"the {BINARIES[agent]} CLI is not installed")
    server = acp_server
    made = os.path.join(server.workspace, f"made-{agent}")
    refused = os.path.join(server.workspace, f"refused-{agent}")
    marker = f"time.sleep({SLEEPS[agent]})"
    # Deltas are live only: the answer waits a moment for the socket to attach (Codex starts in 0.1 s).
    mock.script(f"hello-{agent}", reply("Hello from the mock.", thinking="Let me think.", delay=1.0))
    mock.script(
        f"tool-{agent}", reply("Running it.", command=f"touch {made} && echo hi-from-tool"), reply("It said hi.")
    )
    mock.script(f"deny-{agent}", reply("Trying.", command=f"touch {refused}"), reply("It was refused."))
    mock.script(f"long-{agent}", reply("A long one.", command=f"python3 -c 'import time; {marker}'; echo done"))
    mock.script(f"error-{agent}", ERRORS[agent])
    mock.script(f"again-{agent}", reply("Hello again."))
    record = await create(
        server,
        agent=agent,
        prompt=f"scn:hello-{agent} say hello",
        interactive=True,
        deltas=True,
        permission_prompts=True,
        **OPTIONS[agent],
    )
    sid, pid = record["id"], record["pid"]
    assert record["interactive"] is True and record["deltas"] is True and pid > 0
    ws = await server.websocket(f"/api/v1/ws/agent-sessions/{sid}")
    frames: list[dict[str, Any]] = []

    # A text answer, streamed: its deltas join into the complete text.
    await wait_for_frame(ws, "status", frames, timeout=120, status="idle")
    deltas = "".join(f["content"] for f in frames if f["type"] == "text_delta")
    text = next(f for f in frames if f["type"] == "text")
    assert deltas == text["content"] == "Hello from the mock.", json.dumps(frames)
    assert next(f for f in frames if f["type"] == "done")["content"] == "Hello from the mock."

    # A shell call asked for and allowed over HTTP: it ran, in the same process.
    response = await server.request(
        "POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": f"scn:tool-{agent} go"}
    )
    assert response.status == 202
    asked = await wait_for_frame(ws, "permission_request", frames, timeout=120)
    assert f"touch {made}" in asked["input"]["command"] and "seq" in asked
    response = await server.request(
        "POST", f"/api/v1/agent-sessions/{sid}/permissions/{asked['request_id']}", {"behavior": "allow"}
    )
    assert response.status == 202
    done = await wait_for_frame(ws, "done", frames, timeout=120)
    assert done["content"] == "It said hi." and os.path.exists(made)
    result = [f for f in frames if f["type"] == "tool_result" and f["tool_use_id"] == asked["tool_use_id"]]
    assert result and result[0]["is_error"] is False
    if agent != "gemini":  # Gemini does not pass a shell call's output to the host
        assert "hi-from-tool" in result[0]["output"]
    assert (await get_session(server, sid))["pid"] == pid

    # Denied over the socket: the call fails, nothing was made, the turn ends.
    await wait_for_frame(ws, "status", frames, timeout=60, status="idle")
    await ws.write_message(json.dumps({"type": "user", "content": f"scn:deny-{agent} go"}))
    asked = await wait_for_frame(ws, "permission_request", frames, timeout=120)
    await answer_over_socket(ws, asked["request_id"], "deny")
    denied = await wait_for_frame(ws, "tool_result", frames, timeout=120, tool_use_id=asked["tool_use_id"])
    assert denied["is_error"] is True and not os.path.exists(refused)
    await wait_for_frame(ws, "status", frames, timeout=120, status="idle")

    # Interrupted while a long command runs: the turn ends, the command is gone, the process stays.
    await ws.write_message(json.dumps({"type": "user", "content": f"scn:long-{agent} go"}))
    asked = await wait_for_frame(ws, "permission_request", frames, timeout=120)
    await answer_over_socket(ws, asked["request_id"], "allow")
    await wait_for_process(marker)
    response = await server.request("POST", f"/api/v1/agent-sessions/{sid}/interrupt")
    assert response.status == 202
    ended = await wait_for_frame(ws, "error", frames, timeout=60)
    assert ended["error"] == "interrupted"
    await wait_for_frame(ws, "status", frames, timeout=60, status="idle")
    assert await gone(marker)
    assert (await get_session(server, sid))["pid"] == pid

    # An API error ends its turn; the session goes on.
    await ws.write_message(json.dumps({"type": "user", "content": f"scn:error-{agent} go"}))
    error = await wait_for_frame(ws, "error", frames, timeout=150)
    if agent == "codex":
        assert "high demand" in error["error"]  # codex puts its own words over the server's message
    else:
        assert ERRORS[agent]["message"] in error["error"]
    await wait_for_frame(ws, "status", frames, timeout=60, status="idle")

    # DELETE: terminated, the process and all it started gone, one final status frame.
    response = await server.request("DELETE", f"/api/v1/agent-sessions/{sid}")
    assert response.status == 200 and response.body["status"] == "terminated" and response.body["pid"] is None
    while True:
        message = await ws.read_message()
        if message is None:
            break
        frames.append(json.loads(message))
    stored = [f for f in frames if "seq" in f]
    check_stream(stored, sid)
    assert kinds(stored)[-1] == "status:terminated" and ws.close_code == 1000
    assert sum(1 for f in stored if f["type"] in ("done", "error")) == 5  # one end per turn
    replayed, _ = await stream(server, sid)
    assert replayed == stored  # the deltas were live only
    assert not [f for f in replayed if f["type"].endswith("_delta")]

    # Resume in a new process: the conversation goes on (Gemini one-shot, the others over ACP).
    resume_options = {} if agent == "gemini" else {"interactive": True, "deltas": True}
    again = await create(
        server, agent=agent, prompt=f"scn:again-{agent} once more", resume=sid, **OPTIONS[agent], **resume_options
    )
    assert again["resumed_from"] == sid
    if agent == "gemini":
        frames, _ = await stream(server, again["id"], timeout=120)
        done = frames[-2]
    else:
        ws = await server.websocket(f"/api/v1/ws/agent-sessions/{again['id']}")
        frames = []
        done = await wait_for_frame(ws, "done", frames, timeout=120)
        await server.request("DELETE", f"/api/v1/agent-sessions/{again['id']}")
    assert done["type"] == "done" and done["content"] == "Hello again.", frames
    record = await get_session(server, again["id"])
    assert record["agent_session_id"] == (await get_session(server, sid))["agent_session_id"]
    request = [r for r in mock.requests if r["key"] == f"again-{agent}"]
    assert request


async def test_capabilities_of_the_real_clis(acp_server: ServerThread) -> None:
    agents = {a["name"]: a for a in (await acp_server.request("GET", "/api/v1/agents")).body["agents"]}
    for agent in BINARIES:
        assert agents[agent]["capabilities"] == ["deltas", "interactive", "interrupt", "permission_prompts", "resume"]


@pytest.mark.async_timeout(300)
async def test_restart_mid_session_then_resume(mock: MockModels) -> None:
    """A runtime stopped while the long-lived agents wait for input: their sessions are ``interrupted`` after the
    restart, stored as they were, and resume in a new process (Gemini one-shot, the others long-lived again)."""
    agents = [a for a in BINARIES if shutil.which(BINARIES[a]) is not None]
    if not agents:
        pytest.skip("none of the CLIs is installed")
    workspace = tempfile.mkdtemp(prefix="ws-acp-restart-")
    home = tempfile.mkdtemp(prefix="agents-acp-restart-home-")
    env = write_homes(home, mock.url)
    args = ("--workspace", workspace, "--port", "0", "--host", "127.0.0.1", "--max-sessions", "10")
    runtime = RuntimeProcess(*args, env=env)
    try:
        server: Any = _Remote(runtime.wait_ready())  # enough of a ServerThread for the helpers
        for agent in agents:
            mock.script(f"first-{agent}", reply("First turn."))
            mock.script(f"second-{agent}", reply("Second turn."))
        records = {}
        for agent in agents:  # one after the other: each CLI sets up its state in the fresh HOME first
            records[agent] = await create(
                server,
                agent=agent,
                prompt=f"scn:first-{agent} hello",
                interactive=True,
                **OPTIONS[agent],
            )
            await wait_status(server, records[agent]["id"], "idle", timeout=120)
        pids = [(await get_session(server, r["id"]))["pid"] for r in records.values()]
        assert runtime.stop() == 0
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        runtime = RuntimeProcess(*args, env=env)
        server = _Remote(runtime.wait_ready())
        for agent, record in records.items():
            old = await get_session(server, record["id"])
            assert old["status"] == "interrupted" and old["pid"] is None and old["agent_session_id"]
            frames, code = await stream(server, record["id"])
            assert code == 1000 and kinds(frames) == [
                "status:running",
                "text",
                "done",
                "status:idle",
                "status:interrupted",
            ], agent
            check_stream(frames, record["id"])
            more = {} if agent == "gemini" else {"interactive": True}
            resumed = await create(
                server,
                agent=agent,
                prompt=f"scn:second-{agent} again",
                resume=record["id"],
                **OPTIONS[agent],
                **more,
            )
            ws = await server.websocket(f"/api/v1/ws/agent-sessions/{resumed['id']}")
            done = await wait_for_frame(ws, "done", [], timeout=120)
            assert done["content"] == "Second turn.", agent
            await server.request("DELETE", f"/api/v1/agent-sessions/{resumed['id']}")
            ws.close()
    finally:
        runtime.stop()
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.async_timeout(300)
@pytest.mark.parametrize("agent", list(BINARIES))
async def test_delete_while_a_command_runs_leaves_nothing(
    agent: str, acp_server: ServerThread, mock: MockModels
) -> None:
    """DELETE mid-turn in the long-lived mode: the turn ends ``terminated``, the command and the CLI are gone."""
    if shutil.which(BINARIES[agent]) is None:
        pytest.skip(f"the {BINARIES[agent]} CLI is not installed")
    marker = f"time.sleep({SLEEPS[agent] + 10})"
    mock.script(f"del-{agent}", reply("A long one.", command=f"python3 -c 'import time; {marker}'; echo done"))
    record = await create(
        acp_server, agent=agent, prompt=f"scn:del-{agent} go", permission_prompts=True, **OPTIONS[agent]
    )
    ws = await acp_server.websocket(f"/api/v1/ws/agent-sessions/{record['id']}")
    frames: list[dict[str, Any]] = []
    asked = await wait_for_frame(ws, "permission_request", frames, timeout=120)
    await answer_over_socket(ws, asked["request_id"], "allow")
    await wait_for_process(marker)
    response = await acp_server.request("DELETE", f"/api/v1/agent-sessions/{record['id']}")
    assert response.status == 200 and response.body["status"] == "terminated" and response.body["pid"] is None
    frames, _ = await stream(acp_server, record["id"])
    check_stream(frames, record["id"])
    assert kinds(frames)[-2:] == ["error", "status:terminated"] and frames[-2]["error"] == "terminated"
    assert await gone(marker)
    assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE


@pytest.mark.async_timeout(300)
@pytest.mark.parametrize("agent", list(BINARIES))
async def test_one_turn_with_deltas_then_the_process_ends(
    agent: str, acp_server: ServerThread, mock: MockModels
) -> None:
    """Not interactive: the long-lived mode's one turn, then stdin closes and the CLI exits 0 (``completed``)."""
    if shutil.which(BINARIES[agent]) is None:
        pytest.skip(f"the {BINARIES[agent]} CLI is not installed")
    mock.script(f"once-{agent}", reply("Just once.", delay=1.0))
    record = await create(acp_server, agent=agent, prompt=f"scn:once-{agent} go", deltas=True, **OPTIONS[agent])
    frames, code = await stream(acp_server, record["id"], timeout=120)
    stored = [f for f in frames if "seq" in f]
    assert code == 1000 and kinds(stored) == ["status:running", "text", "done", "status:completed"], frames
    assert "".join(f["content"] for f in frames if f["type"] == "text_delta") in ("", "Just once.")
    record = await get_session(acp_server, record["id"])
    assert record["exit_code"] == 0 and record["pid"] is None and record["result"] == "Just once."
