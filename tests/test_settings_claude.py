"""What the settings API writes is what the REAL ``claude`` CLI (2.1.197) reads.

The runtime runs with ``--home`` on a temporary directory and its agent sessions get no HOME of their
own from the test (only the mock's address): the session's HOME must come from ``--home``, the same
home the settings API wrote to. Hooks and MCP servers are written through the API only, then an agent
session started through the runtime's own agent-session API must use them; ``claude -p`` and ``claude
mcp list`` run directly with the same HOME and cwd confirm the init line and the health check.
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

from tests.agents_support import check_stream, create, get_session, stream
from tests.conftest import ServerPool, ServerThread
from tests.mock_anthropic import MockAnthropic, reply, text, tool_use

pytestmark = pytest.mark.skipif(shutil.which("claude") is None, reason="the claude CLI is not installed")

MCP_ECHO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "settings", "mcp_echo.py")


@pytest.fixture(scope="module")
def mock() -> Iterator[MockAnthropic]:
    server = MockAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def runtime(servers: ServerPool, mock: MockAnthropic, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    """A runtime with a home of its own, in a git workspace, its agents pointed at the mock (HOME not set)."""
    # Should --home ever not reach the agent, the CLI must land in a decoy, never in this machine's ~/.claude*.
    decoy = tempfile.mkdtemp(prefix="settings-claude-decoy-")
    monkeypatch.setenv("HOME", decoy)
    home = tempfile.mkdtemp(prefix="settings-claude-home-")
    workspace = tempfile.mkdtemp(prefix="settings-claude-ws-")
    subprocess.run(["git", "init", "-q", workspace], check=True)
    server = servers.fresh("--home", home, workspace=workspace)
    assert server.runtime is not None
    env = mock.env(home)
    del env["HOME"]  # the session's HOME must come from --home
    server.runtime.ctx.agents.env_overrides = env
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.rmtree(decoy, ignore_errors=True)


def cli_env(server: ServerThread, mock: MockAnthropic) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    return {**env, **mock.env(server.config.home_dir), "TERM": "dumb"}


async def run_cli(server: ServerThread, mock: MockAnthropic, *args: str) -> tuple[int, str]:
    """``claude <args>`` in the workspace with the runtime's HOME; (exit status, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        shutil.which("claude") or "claude",
        *args,
        cwd=server.workspace,
        env=cli_env(server, mock),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def put(server: ServerThread, path: str, body: dict[str, Any]) -> None:
    r = await server.request("PUT", path, body)
    assert r.status == 200, r.raw


def command_hook(command: str) -> dict[str, Any]:
    return {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": command, "timeout": 30}]}]}


async def test_hooks_written_through_the_api_fire_in_the_next_session(
    runtime: ServerThread, mock: MockAnthropic
) -> None:
    marker = os.path.join(runtime.workspace, "hook-marker.txt")
    # project and user through /settings/hooks, local through a whole-settings PUT
    await put(runtime, "/api/v1/settings/hooks?scope=project", {"hooks": command_hook(f"echo project >> '{marker}'")})
    await put(runtime, "/api/v1/settings/hooks?scope=user", {"hooks": command_hook(f"echo user >> '{marker}'")})
    await put(
        runtime,
        "/api/v1/settings?scope=local",
        {"settings": {"permissions": {"allow": []}, "hooks": command_hook(f"echo local >> '{marker}'")}},
    )
    assert os.path.isfile(os.path.join(runtime.config.home_dir, ".claude", "settings.json"))
    assert not os.path.exists(marker)

    mock.script("hooked", reply(tool_use("Bash", {"command": "echo tool-ran"})), reply(text("Done.")))
    session = await create(runtime, prompt="scn:hooked run echo", allowed_tools=["Bash(echo *)"])
    frames, code = await stream(runtime, session["id"], timeout=120)
    assert code == 1000
    check_stream(frames, session["id"])
    result = next(f for f in frames if f["type"] == "tool_result")
    assert result["output"].strip() == "tool-ran", frames
    assert frames[-1]["status"] == "completed"
    with open(marker, encoding="utf-8") as f:
        assert sorted(f.read().split()) == ["local", "project", "user"]  # every scope's PreToolUse hook fired


async def test_mcp_servers_written_through_the_api_connect(runtime: ServerThread, mock: MockAnthropic) -> None:
    def server(name: str) -> dict[str, Any]:
        return {"type": "stdio", "command": sys.executable, "args": [MCP_ECHO, name], "env": {}}

    await put(runtime, "/api/v1/settings/mcp?scope=project", {"mcpServers": {"proj": server("proj")}})
    await put(runtime, "/api/v1/settings/mcp?scope=user", {"mcpServers": {"usr": server("usr")}})
    await put(runtime, "/api/v1/settings/mcp?scope=local", {"mcpServers": {"loc": server("loc")}})

    # An agent session started through the runtime calls a tool of each server.
    mock.script(
        "mcpcall",
        reply(
            tool_use("mcp__proj__echo", {"text": "ping-proj"}),
            tool_use("mcp__usr__echo", {"text": "ping-usr"}),
            tool_use("mcp__loc__echo", {"text": "ping-loc"}),
        ),
        reply(text("All three answered.")),
    )
    session = await create(runtime, prompt="scn:mcpcall call them", allowed_tools=["mcp__proj", "mcp__usr", "mcp__loc"])
    frames, code = await stream(runtime, session["id"], timeout=120)
    assert code == 1000
    outputs = {f["tool"]: f["output"] for f in frames if f["type"] == "tool_result"}
    assert outputs == {
        "mcp__proj__echo": "proj: ping-proj",
        "mcp__usr__echo": "usr: ping-usr",
        "mcp__loc__echo": "loc: ping-loc",
    }, frames
    assert frames[-1]["status"] == "completed"
    # The session object says which servers the agent connected (from its init line).
    ended = await get_session(runtime, session["id"])
    assert {s["name"]: s["status"] for s in ended["mcp_servers"]} == {
        "proj": "connected",
        "usr": "connected",
        "loc": "connected",
    }, ended

    # The same HOME and cwd: the CLI's init line lists all three as connected.
    status, out = await run_cli(runtime, mock, "-p", "scn:hello hi", "--output-format", "stream-json", "--verbose")
    assert status == 0, out
    init = next(json.loads(line) for line in out.splitlines() if '"subtype":"init"' in line)
    servers = {s["name"]: s["status"] for s in init["mcp_servers"]}
    assert servers == {"proj": "connected", "usr": "connected", "loc": "connected"}, init["mcp_servers"]

    # claude mcp list: user and local servers are checked at once; a project server waits for approval
    # until the local settings (written through the API too) enable the project's servers.
    status, out = await run_cli(runtime, mock, "mcp", "list")
    assert status == 0, out
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if ":" in line}
    assert "Connected" in lines["usr"] and "Connected" in lines["loc"], out
    assert "Pending approval" in lines["proj"], out
    await put(runtime, "/api/v1/settings?scope=local", {"settings": {"enableAllProjectMcpServers": True}})
    status, out = await run_cli(runtime, mock, "mcp", "list")
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if ":" in line}
    assert all("✔ Connected" in lines[name] for name in ("proj", "usr", "loc")), out


async def test_claude_config_dir_is_where_user_settings_live(
    servers: ServerPool, mock: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CLAUDE_CONFIG_DIR in the runtime's environment, user settings go there, and the CLI reads them there."""
    base = tempfile.mkdtemp(prefix="settings-claude-cfg-")
    home, config_dir, workspace = (os.path.join(base, name) for name in ("home", "cfg", "ws"))
    for directory in (home, workspace):
        os.makedirs(directory)
    subprocess.run(["git", "init", "-q", workspace], check=True)
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", config_dir)
    server = servers.fresh(workspace=workspace)
    try:
        assert server.runtime is not None
        env = mock.env(home)
        del env["HOME"]
        server.runtime.ctx.agents.env_overrides = env
        marker = os.path.join(workspace, "hook-marker.txt")
        r = await server.request(
            "PUT", "/api/v1/settings/hooks?scope=user", {"hooks": command_hook(f"echo cfg >> '{marker}'")}
        )
        assert r.status == 200 and r.body["path"] == os.path.join(config_dir, "settings.json"), r.raw
        assert not os.path.exists(os.path.join(home, ".claude"))
        mock.script("cfghook", reply(tool_use("Bash", {"command": "echo tool-ran"})), reply(text("Done.")))
        session = await create(server, prompt="scn:cfghook run echo", allowed_tools=["Bash(echo *)"])
        frames, code = await stream(server, session["id"], timeout=120)
        assert code == 1000 and frames[-1]["status"] == "completed", frames
        with open(marker, encoding="utf-8") as f:
            assert f.read().split() == ["cfg"]
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
