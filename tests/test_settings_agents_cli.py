"""What the settings API writes for codex, gemini, qwen and opencode is what the REAL CLIs use.

Marked ``agents_cli`` (like test_agents_cli.py; CI runs the group once); the one-server-for-all test runs
Claude Code too, against tests/mock_anthropic.py. MCP servers and hooks are
written through the API only — at user and at project scope, trusted through the API where the CLI
needs it (Codex project trust, Gemini trusted folder, Qwen approvals) — then a session started through
the runtime against tests/mock_openai.py calls the server's tool (tests/mcp_ping.py logs each call),
and ``<cli> mcp list`` with the session's environment shows it connected.

Gemini's and Qwen's base settings turn folder trust off; the test turns it back on for Gemini (through
the API, a JSON-with-comments round trip) so that its trusted-folder record is what lets it run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agents_support import create, stream
from tests.conftest import ServerPool, ServerThread
from tests.mock_anthropic import MockAnthropic, text, tool_use
from tests.mock_anthropic import reply as anthropic_reply
from tests.mock_openai import MockModels, reply, write_homes

pytestmark = pytest.mark.agents_cli

BINARIES = {"codex": "codex", "gemini": "gemini", "qwen-code": "qwen", "opencode": "opencode"}
OPTIONS: dict[str, dict[str, Any]] = {
    "codex": {},
    "gemini": {"model": "gemini-2.5-flash", "permission_mode": "yolo"},
    "qwen-code": {"permission_mode": "yolo"},
    "opencode": {"model": "mock/mock-model"},
}
PING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_ping.py")


def tool_calls(agent: str, server: str) -> list[dict[str, Any]]:
    """The replies that make ``agent`` call ``server``'s ping tool, under the name that CLI gives it."""
    args = {"message": "hello"}
    if agent == "codex":
        first = [reply("Pinging.", call=("ping", args), namespace=f"mcp__{server}")]
    elif agent == "gemini":
        first = [reply("Pinging.", call=(f"mcp_{server}_ping", args))]
    elif agent == "qwen-code":  # MCP tools are deferred: found with tool_search, called with tool_call
        name = f"mcp__{server}__ping"
        first = [
            reply("Finding it.", call=("tool_search", {"query": f"select:{name}"})),
            reply("Pinging.", call=("tool_call", {"name": name, "arguments": args})),
        ]
    else:
        first = [reply("Pinging.", call=(f"{server}_ping", args))]
    return [*first, reply("Pinged.")]


def server_entry(label: str, log: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [PING, "--label", label, "--log", log]}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockModels]:
    server = MockModels().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def anthropic() -> Iterator[MockAnthropic]:
    server = MockAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runtime(servers: ServerPool, mock: MockModels, anthropic: MockAnthropic) -> Iterator[ServerThread]:
    home = tempfile.mkdtemp(prefix="settings-agents-cli-home-")
    workspace = tempfile.mkdtemp(prefix="settings-agents-cli-ws-")
    subprocess.run(["git", "init", "-q", workspace], check=True)
    env = {**anthropic.env(home), **write_homes(home, mock.url)}  # Claude Code against its own mock too
    server = servers.fresh("--home", home, "--max-sessions", "20", workspace=workspace)
    assert server.runtime is not None
    server.runtime.ctx.agents.env_overrides = env
    yield server
    server.stop()
    if not os.environ.get("WSR_KEEP"):
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workspace, ignore_errors=True)


def calls(log: str) -> list[dict[str, Any]]:
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


async def mcp_list(server: ServerThread, agent: str) -> str:
    """``<cli> mcp list`` in the workspace with the environment the runtime's sessions get."""
    assert server.runtime is not None
    agents = server.runtime.ctx.agents
    env = agents.adapter(agent).environment(agents.session_environment())
    proc = await asyncio.create_subprocess_exec(
        shutil.which(BINARIES[agent]) or BINARIES[agent],
        "mcp",
        "list",
        cwd=server.workspace,
        env={**env, "PWD": server.workspace},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return out.decode("utf-8", "replace")


def listed_connected(agent: str, output: str, name: str) -> bool:
    lines = [line for line in output.splitlines() if name in line]
    if agent == "codex":  # a table of the servers it would start (no connection check)
        return bool(lines)
    ok = {"gemini": "- Connected", "qwen-code": "- Connected", "opencode": "connected"}[agent]
    return any(ok in line and "Disconnected" not in line for line in lines)


async def session_calls(server: ServerThread, mock: MockModels, agent: str, name: str, log: str, label: str) -> None:
    """A session through the runtime whose model calls ``name``'s ping: the server logs the call."""
    key = f"{agent}-{name}"
    mock.script(key, *tool_calls(agent, name))
    before = len(calls(log))
    session = await create(server, agent=agent, prompt=f"scn:{key} please ping", **OPTIONS[agent])
    frames, _ = await stream(server, session["id"], timeout=240)
    made = calls(log)[before:]
    assert [c["label"] for c in made] == [label], (agent, name, frames[-3:], mock.requests[-3:])
    outputs = " ".join(str(f.get("output", "")) for f in frames if f["type"] == "tool_result")
    assert f"PING-MCP-{label}" in outputs, (agent, frames)
    assert frames[-1]["status"] == "completed", frames[-3:]


async def put(server: ServerThread, url: str, body: Any) -> dict[str, Any]:
    response = await server.request("PUT", url, body)
    assert response.status == 200, (url, response.body)
    return dict(response.body)


@pytest.mark.async_timeout(600)
@pytest.mark.parametrize("agent", list(BINARIES))
async def test_mcp_servers_written_through_the_api_are_used(
    agent: str, runtime: ServerThread, mock: MockModels
) -> None:
    if shutil.which(BINARIES[agent]) is None:
        pytest.skip(f"the {BINARIES[agent]} CLI is not installed")
    log = os.path.join(runtime.config.home_dir, f"calls-{agent}.jsonl")
    if agent == "gemini":  # folder trust back on: the trusted-folder record below is what lets it run
        answer = (await runtime.request("GET", "/api/v1/settings?agent=gemini&scope=user")).body
        settings = answer["settings"]
        del settings["security"]["folderTrust"]
        await put(runtime, "/api/v1/settings?agent=gemini&scope=user", {"settings": settings})
        answer = (await runtime.request("GET", "/api/v1/settings/mcp?agent=gemini&scope=user")).body
        assert answer["trusted"] is False
    # User scope (Gemini: trusted through the API, since it suppresses user servers in an untrusted folder).
    user = {"mcpServers": {"pingu": server_entry("user", log)}}
    answer = await put(runtime, f"/api/v1/settings/mcp?agent={agent}&scope=user&trust=true", user)
    assert answer["trusted"] is True and answer["mcpServers"] == user["mcpServers"]
    await session_calls(runtime, mock, agent, "pingu", log, "user")
    # Project scope: written untrusted first (nothing trusted behind the user's back), then trusted.
    project = {"mcpServers": {"pingp": server_entry("project", log)}}
    answer = await put(runtime, f"/api/v1/settings/mcp?agent={agent}&scope=project", project)
    assert answer["trusted"] is (agent == "opencode" or agent == "gemini")  # gemini: the folder is trusted now
    if agent in ("codex", "qwen-code"):
        listing = await mcp_list(runtime, agent)
        if agent == "qwen-code":
            assert "Pending approval" in next(line for line in listing.splitlines() if "pingp" in line), listing
        else:
            assert "pingp" not in listing, listing  # Codex ignores an untrusted project's config
    answer = await put(runtime, f"/api/v1/settings/mcp?agent={agent}&scope=project&trust=true", project)
    assert answer["trusted"] is True
    listing = await mcp_list(runtime, agent)
    assert listed_connected(agent, listing, "pingu") and listed_connected(agent, listing, "pingp"), listing
    await session_calls(runtime, mock, agent, "pingp", log, "project")
    if agent == "opencode":  # its .opencode/ folder's file wins over opencode.json: a write goes there
        folder = os.path.join(runtime.workspace, ".opencode")
        os.makedirs(folder)
        with open(os.path.join(folder, "opencode.jsonc"), "w", encoding="utf-8") as f:
            f.write("// the folder's config\n{}\n")
        try:
            body = {"mcpServers": {"pingd": server_entry("folder", log)}}
            answer = await put(runtime, "/api/v1/settings/mcp?agent=opencode&scope=project", body)
            assert answer["path"] == ".opencode/opencode.jsonc", answer
            listing = await mcp_list(runtime, agent)
            assert listed_connected(agent, listing, "pingd") and listed_connected(agent, listing, "pingp"), listing
            await session_calls(runtime, mock, agent, "pingd", log, "folder")
        finally:
            shutil.rmtree(folder)


@pytest.mark.async_timeout(600)
async def test_hooks_written_through_the_api_fire(runtime: ServerThread, mock: MockModels) -> None:
    marker_dir = tempfile.mkdtemp(prefix="hooks-fired-")
    hook = f"{sys.executable} -c \"import os,sys; open(os.path.join(sys.argv[1], sys.argv[2]), 'a').close()\""

    def command(name: str) -> dict[str, Any]:
        timeout = 30000 if name.startswith("gemini") else 30  # Gemini counts milliseconds, Qwen seconds
        return {"type": "command", "command": f"{hook} {marker_dir} {name}", "timeout": timeout}

    cases: list[tuple[str, str, dict[str, list[dict[str, Any]]]]] = [
        ("gemini", "project", {"BeforeTool": [{"matcher": "ping", "hooks": [command("gemini-BeforeTool")]}]}),
        (
            "qwen-code",
            "project",
            {
                "PreToolUse": [{"matcher": ".*", "hooks": [command("qwen-PreToolUse")]}],
                "UserPromptSubmit": [{"hooks": [command("qwen-UserPromptSubmit")]}],
            },
        ),
        # Codex runs a hook only once it is trusted by the hash its CLI computes: trust=true records it.
        ("codex", "user", {"SessionStart": [{"hooks": [command("codex-user-SessionStart")]}]}),
        (
            "codex",
            "project",
            {
                "PreToolUse": [{"matcher": "mcp__pingh__ping", "hooks": [command("codex-PreToolUse")]}],
                "Stop": [{"hooks": [command("codex-Stop")]}],
            },
        ),
    ]
    installed = [case for case in cases if shutil.which(BINARIES[case[0]])]
    for agent, scope, hooks in installed:
        answer = await put(runtime, f"/api/v1/settings/hooks?agent={agent}&scope={scope}&trust=true", {"hooks": hooks})
        assert answer["trusted"] is True, answer
    for agent in dict.fromkeys(agent for agent, _, _ in installed):
        log = os.path.join(runtime.config.home_dir, f"hook-calls-{agent}.jsonl")
        await put(
            runtime,
            f"/api/v1/settings/mcp?agent={agent}&scope=user&trust=true",
            {"mcpServers": {"pingh": server_entry("hooks", log)}},
        )
        await session_calls(runtime, mock, agent, "pingh", log, "hooks")
    expected = {
        hook["command"].rsplit(" ", 1)[1]
        for _, _, hooks in installed
        for groups in hooks.values()
        for group in groups
        for hook in group["hooks"]
    }
    for _ in range(100):  # Codex may start its Stop hook as the turn ends
        if set(os.listdir(marker_dir)) >= expected:
            break
        await asyncio.sleep(0.1)
    assert set(os.listdir(marker_dir)) == expected
    shutil.rmtree(marker_dir, ignore_errors=True)


@pytest.mark.async_timeout(900)
async def test_one_server_for_every_agent(runtime: ServerThread, mock: MockModels, anthropic: MockAnthropic) -> None:
    log = os.path.join(runtime.config.home_dir, "calls-all.jsonl")
    body = {"mcpServers": {"pingall": server_entry("all", log)}}
    response = await runtime.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=project&trust=true", body)
    assert response.status == 200, response.body
    assert set(response.body["agents"]) == {"claude-code", *BINARIES}
    for agent, view in response.body["agents"].items():
        assert view["mcpServers"]["pingall"] == body["mcpServers"]["pingall"] and view["trusted"] is True, agent
    if shutil.which("claude") is not None:  # Claude Code reads it from the project's .mcp.json
        ping = anthropic_reply(tool_use("mcp__pingall__ping", {"message": "hello"}))
        anthropic.script("claude-pingall", ping, anthropic_reply(text("Pinged.")))
        session = await create(runtime, prompt="scn:claude-pingall please ping", allowed_tools=["mcp__pingall__ping"])
        frames, _ = await stream(runtime, session["id"], timeout=240)
        assert [c["label"] for c in calls(log)] == ["all"], frames[-3:]
        outputs = " ".join(str(f.get("output", "")) for f in frames if f["type"] == "tool_result")
        assert "PING-MCP-all" in outputs and frames[-1]["status"] == "completed", frames[-3:]
    for agent, binary in BINARIES.items():
        if shutil.which(binary) is None:
            continue
        await session_calls(runtime, mock, agent, "pingall", log, "all")


@pytest.mark.async_timeout(300)
async def test_qwen_approves_claude_codes_mcp_json_servers_too(runtime: ServerThread) -> None:
    """Qwen reads the project's .mcp.json: its servers need approval too, hashed as Qwen normalises them."""
    if shutil.which("qwen") is None:
        pytest.skip("the qwen CLI is not installed")
    log = os.path.join(runtime.config.home_dir, "calls-mcp-json.jsonl")
    claude = (await runtime.request("GET", "/api/v1/settings/mcp?scope=project")).body["mcpServers"]
    claude["pingm"] = {"type": "stdio", **server_entry("mcp-json", log)}
    await put(runtime, "/api/v1/settings/mcp?scope=project", {"mcpServers": claude})
    answer = (await runtime.request("GET", "/api/v1/settings/mcp?agent=qwen-code&scope=project")).body
    assert answer["trusted"] is False
    listing = await mcp_list(runtime, "qwen-code")
    assert "Pending approval" in next(line for line in listing.splitlines() if "pingm" in line), listing
    answer = await put(runtime, "/api/v1/settings/mcp?agent=qwen-code&scope=project&trust=true", answer)
    assert answer["trusted"] is True
    listing = await mcp_list(runtime, "qwen-code")
    assert listed_connected("qwen-code", listing, "pingm"), listing
