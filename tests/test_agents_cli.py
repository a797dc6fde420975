"""Agent sessions with the REAL codex, gemini, qwen and opencode CLIs through the runtime, against tests/mock_openai.py.

Marked ``agents_cli``: each CLI run costs 5-30 s on two cores (node start-up,
opencode's database; its retries of an API error, cut short by retry-after), so
``.ci/run`` runs this group once, on the main Python. Every CLI gets the same
four sessions, started together: a text answer, a shell tool call and its
result, an API error, and DELETE while a long shell command runs (after
which nothing it started is left) — then a resume of the text session.
Each CLI has a temp HOME with its config files (tests/fixtures/<cli>/_config)
pointing at the mock on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.agents_support import check_stream, create, get_session, kinds, stream, wait_for_frame, wait_status
from tests.conftest import ServerPool, ServerThread
from tests.mock_openai import MockModels, api_error, reply, write_homes

pytestmark = pytest.mark.agents_cli

BINARIES = {"codex": "codex", "gemini": "gemini", "qwen-code": "qwen", "opencode": "opencode"}
VERSIONS = {"codex": "0.171.0", "gemini": "0.61.0", "qwen-code": "0.24.4", "opencode": "1.18.33"}
# What each create needs besides the prompt (the rest comes from its config file).
OPTIONS: dict[str, dict[str, Any]] = {
    "codex": {},
    "gemini": {"model": "gemini-2.5-flash", "permission_mode": "yolo"},  # "auto" would route through classifiers
    "qwen-code": {"permission_mode": "yolo"},
    "opencode": {"model": "mock/mock-model"},
}
# opencode retries every failed request, a 400 too (~90 s with its own backoff; ~5 s when the API says
# retry-after, as real APIs do); qwen retries a 500 for ~76 s but not a 400.
ERRORS = {
    "codex": api_error(500, "mock internal server error"),
    "gemini": api_error(500, "mock internal server error"),
    "qwen-code": api_error(400, "bad request (mock)"),
    "opencode": api_error(500, "mock internal server error", retry_after_ms=1),
}
SLEEPS = {"codex": 301, "gemini": 302, "qwen-code": 303, "opencode": 304}  # a marker per CLI's long command


@pytest.fixture(scope="module")
def mock() -> Iterator[MockModels]:
    server = MockModels().start()
    server.script("hello", reply("Hello from the mock."))
    server.script("again", reply("Hello again."))
    server.script(
        "tool", reply("Running it.", thinking="Let me think.", command="echo hi-from-tool"), reply("It said hi.")
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cli_server(servers: ServerPool, mock: MockModels) -> Iterator[ServerThread]:
    home = tempfile.mkdtemp(prefix="agents-cli-home-")
    server = servers.fresh("--max-sessions", "20")
    assert server.runtime is not None
    server.runtime.ctx.agents.env_overrides = write_homes(home, mock.url)
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


async def wait_for_process(marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not leftovers(marker):
        assert time.monotonic() < deadline, f"no process running {marker}"
        await asyncio.sleep(0.2)


async def gone(marker: str, timeout: float = 10) -> bool:
    """Whether every process running ``marker`` has gone within ``timeout`` (SIGKILL needs a moment)."""
    for _ in range(int(timeout * 10)):
        if not leftovers(marker):
            return True
        await asyncio.sleep(0.1)
    return not leftovers(marker)


async def test_agents_list_the_real_clis(cli_server: ServerThread) -> None:
    listed = {a["name"]: a for a in (await cli_server.request("GET", "/api/v1/agents")).body["agents"]}
    health = (await cli_server.request("GET", "/health")).body["agents"]
    for agent, binary in BINARIES.items():
        if shutil.which(binary) is None:
            assert listed[agent]["available"] is False
            continue
        assert listed[agent]["available"] is True and listed[agent]["version"] == VERSIONS[agent]
        assert health[agent] == {
            k: listed[agent][k] for k in ("available", "version", "path", "options", "settings_files")
        }


@pytest.mark.async_timeout(300)  # node start-ups and opencode's retries, on a busy machine
@pytest.mark.parametrize("agent", list(BINARIES))
async def test_text_tool_error_and_terminate(agent: str, cli_server: ServerThread, mock: MockModels) -> None:
    if shutil.which(BINARIES[agent]) is None:
        pytest.skip(f"the {BINARIES[agent]} CLI is not installed")
    server, options = cli_server, OPTIONS[agent]
    mock.script(f"error-{agent}", ERRORS[agent])
    marker = f"time.sleep({SLEEPS[agent]})"
    mock.script(f"long-{agent}", reply("Running a long one.", command=f"python3 -c 'import time; {marker}'; echo done"))
    # All four start together on a fresh HOME. opencode, Gemini and Qwen set up their state there without a lock
    # on a first run (opencode's SQLite schema; ~/.gemini/projects.json): the runtime starts the others once the
    # first has said its session id (without that, a resume here once found no session file).
    hello, tool, error, long = await asyncio.gather(
        create(server, agent=agent, prompt="scn:hello say hello", **options),
        create(server, agent=agent, prompt="scn:tool run echo", **options),
        create(server, agent=agent, prompt=f"scn:error-{agent} hello", **options),
        create(server, agent=agent, prompt=f"scn:long-{agent} run it", **options),
    )
    assert hello["agent"] == agent and hello["status"] == "running" and hello["pid"] > 0

    async def terminate_when_running() -> list[dict[str, Any]]:
        await wait_for_process(marker)
        response = await server.request("DELETE", f"/api/v1/agent-sessions/{long['id']}")
        assert response.status == 200 and response.body["status"] == "terminated"
        frames, _ = await stream(server, long["id"])
        return frames

    (f_hello, c1), (f_tool, c2), (f_error, c3), f_long = await asyncio.gather(
        stream(server, hello["id"], timeout=240),
        stream(server, tool["id"], timeout=240),
        stream(server, error["id"], timeout=240),
        terminate_when_running(),
    )
    assert c1 == c2 == c3 == 1000
    for frames, record in ((f_hello, hello), (f_tool, tool), (f_error, error), (f_long, long)):
        check_stream(frames, record["id"])

    # A text answer.
    assert kinds(f_hello) == ["status:running", "text", "done", "status:completed"], f_hello
    assert f_hello[1]["content"] == f_hello[2]["content"] == "Hello from the mock."
    record = await get_session(server, hello["id"])
    assert record["exit_code"] == 0 and record["result"] == "Hello from the mock." and record["agent_session_id"]

    # A shell tool call with its result (gemini's stream-json has no thinking).
    thinking = [] if agent == "gemini" else ["thinking"]
    assert kinds(f_tool) == [
        "status:running",
        *thinking,
        "text",
        "tool_use",
        "tool_result",
        "text",
        "done",
        "status:completed",
    ], f_tool
    use = next(f for f in f_tool if f["type"] == "tool_use")
    result = next(f for f in f_tool if f["type"] == "tool_result")
    assert "echo hi-from-tool" in str(use["input"]) and result["tool_use_id"] == use["tool_use_id"]
    assert result["tool"] == use["tool"] and result["is_error"] is False
    assert "hi-from-tool" in result["output"] and f_tool[-2]["content"] == "It said hi."

    # An API error: one error ends the turn, however the CLI exits (gemini: 244), whatever it retried before.
    assert kinds(f_error)[-2:] == ["error", "status:failed"] and "done" not in kinds(f_error), f_error
    if agent == "codex":
        assert "high demand" in f_error[-2]["error"]  # codex puts its own words over the server's message
    else:
        assert ERRORS[agent]["message"] in f_error[-2]["error"]
    assert not [f for f in f_error if f["type"] == "text" and "API Error" in f["content"]]  # qwen's echo is held back
    record = await get_session(server, error["id"])
    # Judged from the stream, not the exit code: gemini exits 244 (500 & 0xFF), qwen's stdin mode exits 0.
    assert record["status"] == "failed" and record["error"] == f_error[-2]["error"]
    assert record["exit_code"] == {"gemini": 244, "qwen-code": 0}.get(agent, 1)

    # DELETE while the shell command runs: the turn ends "terminated" and nothing it started is left.
    assert kinds(f_long)[-2:] == ["error", "status:terminated"] and f_long[-2]["error"] == "terminated"
    assert await gone(marker)
    record = await get_session(server, long["id"])
    assert record["pid"] is None and record["status"] == "terminated"

    # Resume the text session: the CLI continues its own conversation (same agent session id).
    again = await create(server, agent=agent, prompt="scn:again once more", resume=hello["id"], **options)
    frames, _ = await stream(server, again["id"], timeout=240)
    assert kinds(frames) == ["status:running", "text", "done", "status:completed"], [f.get("error") for f in frames]
    assert frames[-2]["content"] == "Hello again."
    record = await get_session(server, again["id"])
    assert record["resumed_from"] == hello["id"]
    assert record["agent_session_id"] == (await get_session(server, hello["id"]))["agent_session_id"]


@pytest.mark.async_timeout(300)
async def test_qwen_interrupt_keeps_the_session_and_kills_the_tool(cli_server: ServerThread, mock: MockModels) -> None:
    """Qwen takes Claude Code's interrupt control request: the turn ends, the command dies, the session goes on."""
    if shutil.which("qwen") is None:
        pytest.skip("the qwen CLI is not installed")
    marker = "time.sleep(305)"
    mock.script("qwen-int", reply("Running a long one.", command=f"python3 -c 'import time; {marker}'; echo done"))
    record = await create(
        cli_server, agent="qwen-code", prompt="scn:qwen-int go", interactive=True, **OPTIONS["qwen-code"]
    )
    ws = await cli_server.websocket(f"/api/v1/ws/agent-sessions/{record['id']}")
    frames: list[dict[str, Any]] = []
    await wait_for_frame(ws, "tool_use", frames, timeout=120)
    await wait_for_process(marker)
    response = await cli_server.request("POST", f"/api/v1/agent-sessions/{record['id']}/interrupt")
    assert response.status == 202
    ended = await wait_for_frame(ws, "error", frames, timeout=60)
    assert ended["error"] == "interrupted"
    await wait_status(cli_server, record["id"], "idle")
    assert await gone(marker)
    response = await cli_server.request(
        "POST", f"/api/v1/agent-sessions/{record['id']}/messages", {"content": "scn:hello and now?"}
    )
    assert response.status == 202
    done = await wait_for_frame(ws, "done", frames, timeout=120)
    assert done["content"] == "Hello from the mock."
    response = await cli_server.request("DELETE", f"/api/v1/agent-sessions/{record['id']}")
    assert response.body["status"] == "terminated"
    ws.close()
