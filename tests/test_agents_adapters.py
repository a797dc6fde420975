"""The new adapters through the real runtime, with tests/replay_agent.py replaying real recordings.

What the real CLIs do only in awkward moments — Gemini exiting 0 after a
SIGINT, exiting 244 on an HTTP 500, Codex's retry notices, opencode's missing
end line — is replayed here, so that the session layer's "judge from the
stream" is tested on every Python; and each adapter's options are validated.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.agents_support import check_stream, create, get_session, kinds, stream
from tests.conftest import ServerPool, ServerThread
from wsruntime_ext.agents.adapter import OPTION_FIELDS
from wsruntime_ext.agents.handlers import PERMISSION_MODES
from wsruntime_ext.agents.service import default_adapters

REPLAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "replay_agent.py")


@pytest.fixture(scope="module")
def replay(servers: ServerPool) -> Iterator[ServerThread]:
    server = servers.fresh(
        "--codex-bin", REPLAY, "--gemini-bin", REPLAY, "--opencode-bin", REPLAY, "--qwen-bin", "/nonexistent/qwen"
    )
    yield server
    server.stop()


async def run(server: ServerThread, agent: str, scenario: str) -> tuple[list[dict], dict]:
    record = await create(server, agent=agent, prompt=f"replay:{scenario} go")
    frames, code = await stream(server, record["id"])
    assert code == 1000
    check_stream(frames, record["id"])
    return frames, await get_session(server, record["id"])


async def test_a_first_run_that_must_run_alone_holds_the_next_start(servers: ServerPool) -> None:
    """Gemini (like opencode and Qwen) sets up HOME on its first run without a lock: a second session of it
    starts only once the runtime's first one has said its session id or ended."""
    server = servers.fresh("--gemini-bin", REPLAY)
    try:
        first = await create(server, agent="gemini", prompt="replay:gemini-cli/tool silent")
        second = asyncio.ensure_future(create(server, agent="gemini", prompt="replay:gemini-cli/tool go"))
        done, _ = await asyncio.wait({second}, timeout=1.0)
        assert not done  # held while the first says nothing
        response = await server.request("DELETE", f"/api/v1/agent-sessions/{first['id']}")
        assert response.status == 200
        record = await asyncio.wait_for(second, 30)
        assert record["created_at"] >= response.body["ended_at"]
        frames, code = await stream(server, record["id"])
        assert code == 1000 and kinds(frames)[-1] == "status:completed"
        # From now on gemini sessions start together: the first one has run.
        both = await asyncio.gather(*(create(server, agent="gemini", prompt="replay:gemini-cli/tool go") for _ in "ab"))
        assert all(r["status"] == "running" for r in both)
    finally:
        server.stop()


async def test_gemini_exit_0_without_a_result_is_a_failed_turn(replay: ServerThread) -> None:
    frames, record = await run(replay, "gemini", "gemini-cli/interrupt-sigint")
    assert kinds(frames) == ["status:running", "text", "tool_use", "error", "status:failed"]
    assert record["exit_code"] == 0 and record["status"] == "failed"
    assert record["agent_session_id"] == "40031ab3-7d2b-443e-a767-52b0e3ee8668"


async def test_gemini_exit_244_is_its_api_error(replay: ServerThread) -> None:
    frames, record = await run(replay, "gemini", "gemini-cli/error")
    assert kinds(frames) == ["status:running", "error", "status:failed"]
    assert "mock internal server error" in frames[1]["error"] and record["error"] == frames[1]["error"]
    assert record["exit_code"] == 244


async def test_gemini_tool_run_completes(replay: ServerThread) -> None:
    frames, record = await run(replay, "gemini", "gemini-cli/tool")
    assert kinds(frames) == ["status:running", "text", "tool_use", "tool_result", "text", "done", "status:completed"]
    assert record["result"] == frames[-2]["content"] and record["usage"]["total_tokens"] == 240


async def test_codex_retry_notices_end_in_one_error(replay: ServerThread) -> None:
    frames, record = await run(replay, "codex", "codex/error-retry")
    assert kinds(frames) == ["status:running", "error", "status:failed"]
    assert record["exit_code"] == 1 and record["error"].startswith("We’re currently experiencing high demand")


async def test_codex_killed_mid_tool_reports_the_signal(replay: ServerThread) -> None:
    frames, record = await run(replay, "codex", "codex/interrupt-sigterm")
    assert kinds(frames) == ["status:running", "thinking", "text", "tool_use", "error", "status:failed"]
    assert frames[-2]["error"] == "the agent was killed by SIGTERM" and record["exit_code"] == -15


async def test_opencode_is_done_when_it_exits_0(replay: ServerThread) -> None:
    frames, record = await run(replay, "opencode", "opencode/tool")
    assert kinds(frames) == [
        "status:running",
        "thinking",
        "text",
        "tool_use",
        "tool_result",
        "text",
        "done",
        "status:completed",
    ]
    assert frames[-2]["content"] == "Done. The command output was: hi" and record["usage"]["total"] == 240
    frames, record = await run(replay, "opencode", "opencode/error")
    assert kinds(frames) == ["status:running", "error", "status:failed"]
    assert frames[1]["error"] == "mock internal server error"


async def test_every_adapter_is_listed_with_its_options(replay: ServerThread) -> None:
    agents = {a["name"]: a for a in (await replay.request("GET", "/api/v1/agents")).body["agents"]}
    assert list(agents) == ["claude-code", "codex", "gemini", "qwen-code", "opencode"]
    assert agents["codex"] == {
        "name": "codex",
        "available": True,
        "version": "0.0.1-replay",
        "path": REPLAY,
        "options": ["model", "permission_mode", "resume", "interactive", "permission_prompts", "deltas"],
        "capabilities": ["deltas", "interactive", "interrupt", "permission_prompts", "resume"],
        "settings_files": agents["codex"]["settings_files"],  # tests/test_settings_agents.py checks them
    }
    assert agents["opencode"]["options"] == ["model", "resume", "interactive", "permission_prompts", "deltas"]
    assert agents["qwen-code"]["available"] is False and "interactive" in agents["qwen-code"]["options"]
    health = (await replay.request("GET", "/health")).body["agents"]
    keys = ("available", "version", "path", "options", "settings_files")
    assert health["gemini"] == {k: agents["gemini"][k] for k in keys}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": "opencode", "permission_mode": "yolo"}, "permission_mode"),
        ({"agent": "gemini", "max_turns": 3}, "max_turns"),
        ({"agent": "gemini", "allowed_tools": ["Bash"]}, "allowed_tools"),
        ({"agent": "codex", "system_prompt": "be brief"}, "system_prompt"),
        ({"agent": "opencode", "max_turns": 2}, "max_turns"),
    ],
)
async def test_an_option_the_agent_does_not_take_is_400(replay: ServerThread, body: dict, field: str) -> None:
    before = len((await replay.request("GET", "/api/v1/agent-sessions")).body["sessions"])
    response = await replay.request("POST", "/api/v1/agent-sessions", {"prompt": "hi", **body})
    assert response.status == 400 and response.error_code == "unsupported_option"
    assert response.body["error"]["details"]["field"] == field and field in response.body["error"]["message"]
    # Options left at nothing are fine; nothing was started by the refused ones.
    assert len((await replay.request("GET", "/api/v1/agent-sessions")).body["sessions"]) == before


async def test_per_agent_values_and_requirements(replay: ServerThread) -> None:
    for agent, mode in (("gemini", "acceptEdits"), ("codex", "yolo"), ("claude-code", "auto_edit")):
        response = await replay.request(
            "POST", "/api/v1/agent-sessions", {"agent": agent, "prompt": "hi", "permission_mode": mode}
        )
        assert response.status == 400 and response.error_code == "invalid_field", (agent, mode)
    response = await replay.request("POST", "/api/v1/agent-sessions", {"agent": "codex", "resume": "t1"})
    assert response.status == 400 and response.body["error"]["details"]["field"] == "prompt"
    fine = await create(
        replay, agent="codex", prompt="replay:codex/tool go", interactive=False, allowed_tools=[], model=None
    )
    frames, _ = await stream(replay, fine["id"])
    assert frames[-1]["status"] == "completed"
    # Resuming a session of another agent is refused.
    response = await replay.request(
        "POST", "/api/v1/agent-sessions", {"agent": "gemini", "prompt": "again", "resume": fine["id"]}
    )
    assert response.status == 400 and response.body["error"]["details"]["field"] == "resume"


async def test_one_process_per_turn_agents_refuse_interrupt_and_stop_on_delete(replay: ServerThread) -> None:
    record = await create(replay, agent="codex", prompt="replay:codex/interrupt-sigint hold")
    response = await replay.request("POST", f"/api/v1/agent-sessions/{record['id']}/interrupt")
    assert response.status == 409 and response.error_code == "interrupt_unsupported"
    response = await replay.request("DELETE", f"/api/v1/agent-sessions/{record['id']}")
    assert response.status == 200 and response.body["status"] == "terminated" and response.body["pid"] is None
    frames, _ = await stream(replay, record["id"])
    assert kinds(frames)[-2:] == ["error", "status:terminated"] and frames[-2]["error"] == "terminated"


def is_unset(rule: dict) -> bool:
    """A schema that admits only "nothing": null, false or an empty list."""
    return rule.get("type") == "null" or rule.get("enum") == [False, None] or rule.get("maxItems") == 0


async def test_openapi_states_each_agents_options(replay: ServerThread) -> None:
    """/openapi.json's if/then rules say what the handler enforces: unset options and each agent's own modes."""
    schema = (await replay.request("GET", "/openapi.json")).body["components"]["schemas"]["AgentSessionCreate"]
    rules = {
        r["if"]["properties"]["agent"].get("const", "claude-code"): r["then"]
        for r in schema["allOf"]
        if "resume" not in r["if"].get("required", [])  # the rule of a gemini resume, checked below
    }
    gemini_resume = next(r for r in schema["allOf"] if "resume" in r["if"].get("required", []))
    assert all(is_unset(rule) for rule in gemini_resume["then"]["properties"].values())
    assert replay.runtime is not None
    for adapter in default_adapters(replay.runtime.ctx.config):
        then = rules[adapter.name]
        unset = {name for name, rule in then["properties"].items() if is_unset(rule)}
        assert unset == set(OPTION_FIELDS) - set(adapter.option_names), adapter.name
        if "permission_mode" in adapter.option_names:
            modes = then["properties"]["permission_mode"]["enum"]
            assert modes == [*(adapter.permission_modes or PERMISSION_MODES), None], adapter.name
        assert ("prompt" in then.get("required", [])) == adapter.prompt_in_argv


async def test_gemini_cannot_resume_in_its_long_lived_mode(replay: ServerThread) -> None:
    """Gemini 0.61's session/load fails after a restart: a resume runs one-shot (--resume), so asking for
    what only the long-lived mode gives with it is refused by name, and nothing starts."""
    for option in ("interactive", "permission_prompts", "deltas"):
        body = {"agent": "gemini", "prompt": "again", "resume": "gemini-sid-1", option: True}
        response = await replay.request("POST", "/api/v1/agent-sessions", body)
        assert response.status == 400 and response.error_code == "unsupported_option"
        assert response.body["error"]["details"]["field"] == option
