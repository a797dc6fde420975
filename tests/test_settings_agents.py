"""Every agent's settings over real HTTP (API.md "Every agent's settings"): files, formats, trust, agent=all.

The server runs with ``--home`` on a temporary directory and its agent environment pinned there, so the
files are where the CLIs the runtime launches would read them. What the real CLIs make of these files is
proven in ``test_settings_agents_cli.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import tomlkit

from tests.conftest import ServerPool, ServerThread
from wsruntime_ext.settings import jsonc
from wsruntime_ext.settings.formats import qwen_approval_hash

PING = {"command": sys.executable, "args": ["/srv/ping_mcp.py", "--label", "x"], "env": {"K": "V"}}
REMOTE = {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer t"}}


@pytest.fixture(scope="module")
def home_server(servers: ServerPool) -> Iterator[ServerThread]:
    home = tempfile.mkdtemp(prefix="agent-settings-home-")
    server = servers.fresh("--home", home)
    assert server.runtime is not None
    server.runtime.ctx.agents.env_overrides = {
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "CODEX_HOME": os.path.join(home, ".codex"),
    }
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def srv(home_server: ServerThread) -> Iterator[ServerThread]:
    """The server, with an empty home and no agent settings in the workspace."""
    home = home_server.config.home_dir
    yield home_server
    for name in os.listdir(home):
        path = os.path.join(home, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    for name in (".claude", ".mcp.json", ".codex", ".gemini", ".qwen", ".opencode", "opencode.json", "opencode.jsonc"):
        path = os.path.join(home_server.workspace, name)
        if os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


def home_of(server: ServerThread, *parts: str) -> str:
    return os.path.join(server.config.home_dir, *parts)


def ws_of(server: ServerThread, *parts: str) -> str:
    return os.path.join(server.workspace, *parts)


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


FILES = {
    ("codex", "project"): ".codex/config.toml",
    ("codex", "user"): "~/.codex/config.toml",
    ("gemini", "project"): ".gemini/settings.json",
    ("gemini", "user"): "~/.gemini/settings.json",
    ("qwen-code", "project"): ".qwen/settings.json",
    ("qwen-code", "user"): "~/.qwen/settings.json",
    ("opencode", "project"): "opencode.json",
    ("opencode", "user"): "~/.config/opencode/opencode.json",
}


async def test_missing_files_read_as_empty_where_each_cli_reads(srv: ServerThread) -> None:
    for (agent, scope), shown in FILES.items():
        response = await srv.request("GET", f"/api/v1/settings?agent={agent}&scope={scope}")
        assert response.status == 200, response.body
        assert response.body["path"] == shown and response.body["exists"] is False
        assert response.body["settings"] == {} and response.body["agent"] == agent
        mcp = await srv.request("GET", f"/api/v1/settings/mcp?agent={agent}&scope={scope}")
        assert mcp.body["mcpServers"] == {}
    # Trust: Codex ignores an untrusted project, Gemini an untrusted folder (even user-level servers).
    trusted = {
        (a, s): (await srv.request("GET", f"/api/v1/settings/mcp?agent={a}&scope={s}")).body["trusted"]
        for a, s in FILES
    }
    assert trusted[("codex", "project")] is False and trusted[("codex", "user")] is True
    assert trusted[("gemini", "project")] is False and trusted[("gemini", "user")] is False
    assert trusted[("qwen-code", "project")] is True  # no project servers: nothing waits for approval
    assert trusted[("opencode", "project")] is True


async def test_bad_agent_scope_and_parts(srv: ServerThread) -> None:
    response = await srv.request("GET", "/api/v1/settings?agent=cursor")
    assert response.status == 400 and response.body["error"]["code"] == "unknown_agent"
    response = await srv.request("GET", "/api/v1/settings?agent=codex&scope=local")
    assert response.status == 400 and response.body["error"]["code"] == "scope_unsupported"
    response = await srv.request("GET", "/api/v1/settings/hooks?agent=opencode")
    assert response.status == 422 and response.body["error"]["code"] == "hooks_unsupported"
    response = await srv.request("GET", "/api/v1/settings?agent=all")
    assert response.status == 400 and response.body["error"]["code"] == "unknown_agent"
    bad = [
        ("gemini", "hooks", {"hooks": {"PreToolUse": []}}, "$.hooks.PreToolUse"),  # a Claude name, not Gemini's
        ("qwen-code", "hooks", {"hooks": {"BeforeTool": []}}, "$.hooks.BeforeTool"),
        ("codex", "hooks", {"hooks": {"Stop": [{"hooks": [{"type": "command"}]}]}}, "$.hooks.Stop[0].hooks[0].command"),
        ("opencode", "mcp", {"mcpServers": {"p": {**PING, "cwd": "/tmp"}}}, "$.mcpServers.p.cwd"),
        ("codex", "mcp", {"mcpServers": {"p": {"type": "sse", "url": "http://h/x"}}}, "$.mcpServers.p.type"),
        ("codex", "", {"settings": {"model": None}}, "$.settings.model"),
        ("gemini", "mcp", {"mcpServers": {"p": {"command": ""}}}, "$.mcpServers.p.command"),
        ("gemini", "mcp", {"mcpServers": {"p": {**PING, "native": [1]}}}, "$.mcpServers.p.native"),
        ("claude-code", "mcp", {"mcpServers": {"p": {**PING, "native": {}}}}, "$.mcpServers.p.native"),
        ("claude-code", "mcp", {"mcpServers": {"p": {**PING, "cwd": 5}}}, "$.mcpServers.p.cwd"),
        # A whole-settings write's servers, in the agent's own shape, must be servers it can run (and that GET
        # .../mcp then answers in a shape PUT .../mcp takes back); its known string keys must be strings.
        ("opencode", "", {"settings": {"mcp": {"a": {"type": "bogus"}}}}, "$.settings.mcp.a"),
        ("opencode", "", {"settings": {"mcp": {"a": "npx x"}}}, "$.settings.mcp.a"),
        ("gemini", "", {"settings": {"mcpServers": {"a": {"command": 5}}}}, "$.settings.mcpServers.a"),
        ("qwen-code", "", {"settings": {"mcpServers": {"q": {"type": "http", "url": 5}}}}, "$.settings.mcpServers.q"),
        ("codex", "", {"settings": {"mcp_servers": {"c": {"args": ["x"]}}}}, "$.settings.mcp_servers.c"),
        ("codex", "", {"settings": {"model": 5}}, "$.settings.model"),
        ("opencode", "", {"settings": {"model": ["a"]}}, "$.settings.model"),
    ]
    for agent, part, body, path in bad:
        url = f"/api/v1/settings{'/' + part if part else ''}?agent={agent}&scope=project"
        response = await srv.request("PUT", url, body)
        assert response.status == 400, (agent, part, response.body)
        assert (
            response.body["error"]["code"] == "invalid_settings" and response.body["error"]["details"]["path"] == path
        )
    assert not any(os.path.exists(ws_of(srv, d)) for d in (".codex", ".gemini", ".qwen", "opencode.json", ".mcp.json"))
    # Servers each CLI writes itself pass, and read back through the mcp endpoint as a PUT there takes them.
    good = {
        "opencode": {
            "mcp": {"l": {"type": "local", "command": ["npx", "x"]}, "r": {"type": "remote", "url": "http://h/m"}}
        },
        "gemini": {"mcpServers": {"s": {"command": "x", "args": ["-y"]}, "h": {"httpUrl": "http://h/m"}}},
        "codex": {"mcp_servers": {"c": {"command": "x", "args": ["y"]}}, "model": "o3"},
    }
    for agent, settings in good.items():
        response = await srv.request("PUT", f"/api/v1/settings?agent={agent}&scope=project", {"settings": settings})
        assert response.status == 200, (agent, response.body)
        read = await srv.request("GET", f"/api/v1/settings/mcp?agent={agent}&scope=project")
        back = await srv.request("PUT", f"/api/v1/settings/mcp?agent={agent}&scope=project", read.body)
        assert back.status == 200, (agent, read.body, back.body)


GEMINI_COMMENTED = """{
  // General settings, by hand
  "general": {"vimMode": true}, /* inline block */
  "model": {
    "name": "gemini-2.5-flash" // the model
  },
  // my servers
  "mcpServers": {
    // an old one
    "old": {"command": "old-server", "args": []},
    "kept": {"httpUrl": "http://127.0.0.1:1/mcp", "timeout": 5000} // keep me
  },
  "ui": {"theme": "Default"}
}
"""


async def test_jsonc_keeps_comments_and_untouched_keys(srv: ServerThread) -> None:
    path = ws_of(srv, ".gemini/settings.json")
    write(path, GEMINI_COMMENTED)
    response = await srv.request("GET", "/api/v1/settings/mcp?agent=gemini&scope=project")
    assert response.status == 200
    kept = {"type": "http", "url": "http://127.0.0.1:1/mcp", "native": {"timeout": 5000}}
    assert response.body["mcpServers"] == {"old": {"command": "old-server", "args": []}, "kept": kept}
    body = {"mcpServers": {"kept": kept, "ping": PING}}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=gemini&scope=project", body)
    assert response.status == 200, response.body
    assert response.body["mcpServers"] == {"kept": kept, "ping": PING}
    text = read(path)
    for line in GEMINI_COMMENTED.splitlines():
        if '"old"' in line:
            assert line not in text
        elif "keep me" in line:  # the last member before the new one: a comma added, its comment kept
            assert line.replace("} //", "}, //") in text
        else:
            assert line in text, line  # every other line: comments, untouched keys, their formatting
    data = jsonc.parse(text)
    assert list(data) == ["general", "model", "mcpServers", "ui"]
    assert data["mcpServers"]["ping"] == PING and list(data["mcpServers"]) == ["kept", "ping"]
    # The whole settings document, one key changed: only that key's text changes.
    settings = (await srv.request("GET", "/api/v1/settings?agent=gemini&scope=project")).body["settings"]
    settings["ui"]["theme"] = "ANSI"
    response = await srv.request("PUT", "/api/v1/settings?agent=gemini&scope=project", {"settings": settings})
    assert response.status == 200
    assert read(path) == text.replace('"theme": "Default"', '"theme": "ANSI"')


CODEX_COMMENTED = """# Codex, by hand
model = "mock-model"  # the model
model_provider = "mock"

[model_providers.mock]
# where the model is
name = "mock"
base_url = "http://127.0.0.1:1/v1"

# servers
[mcp_servers.old]
command = "old"
startup_timeout_sec = 20
"""


async def test_codex_toml_round_trips_through_tomlkit(srv: ServerThread) -> None:
    path = home_of(srv, ".codex/config.toml")
    write(path, CODEX_COMMENTED)
    response = await srv.request("GET", "/api/v1/settings/mcp?agent=codex&scope=user")
    old = {"command": "old", "native": {"startup_timeout_sec": 20}}
    assert response.body["mcpServers"] == {"old": old} and response.body["path"] == "~/.codex/config.toml"
    body = {"mcpServers": {"old": old, "ping": PING, "remote": REMOTE}}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=codex&scope=user", body)
    assert response.status == 200, response.body
    assert response.body["mcpServers"] == body["mcpServers"]
    text = read(path)
    assert text.startswith(CODEX_COMMENTED)  # every comment and untouched key where it was
    data = tomlkit.parse(text).unwrap()
    assert data["mcp_servers"]["ping"] == PING
    assert data["mcp_servers"]["remote"] == {"url": REMOTE["url"], "http_headers": REMOTE["headers"]}
    # A top-level key goes before the first table, where Codex reads it.
    settings = (await srv.request("GET", "/api/v1/settings?agent=codex&scope=user")).body["settings"]
    settings["notify"] = ["python3", "/x/notify.py"]
    response = await srv.request("PUT", "/api/v1/settings?agent=codex&scope=user", {"settings": settings})
    assert response.status == 200
    assert tomlkit.parse(read(path)).unwrap()["notify"] == ["python3", "/x/notify.py"]
    assert read(path).index("notify") < read(path).index("[model_providers.mock]")
    assert "# where the model is" in read(path)


async def test_opencode_and_qwen_translate_and_keep_what_the_cli_wrote(srv: ServerThread) -> None:
    body = {"mcpServers": {"ping": PING, "remote": REMOTE}}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=opencode&scope=project", body)
    assert response.status == 200 and response.body["mcpServers"] == body["mcpServers"]
    native = jsonc.parse(read(ws_of(srv, "opencode.json")))["mcp"]
    assert native["ping"] == {"type": "local", "command": [PING["command"], *PING["args"]], "environment": {"K": "V"}}
    assert native["remote"] == {"type": "remote", "url": REMOTE["url"], "headers": REMOTE["headers"]}
    # Qwen adds "$version" to its settings on every start: a later write keeps it.
    qwen = home_of(srv, ".qwen/settings.json")
    write(qwen, '{\n  "$version": 4,\n  // mine\n  "model": {"name": "m"}\n}\n')
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=qwen-code&scope=user", body)
    assert response.status == 200
    data = jsonc.parse(read(qwen))
    assert data["$version"] == 4 and "// mine" in read(qwen)
    assert data["mcpServers"]["remote"] == {"httpUrl": REMOTE["url"], "headers": REMOTE["headers"]}


async def test_opencode_reads_every_project_file_and_the_winning_one_is_written(srv: ServerThread) -> None:
    """opencode reads opencode.json, then opencode.jsonc, then .opencode/opencode.json[c], a later one winning."""
    local = {"type": "local", "command": ["python3", "-V"]}
    write(ws_of(srv, "opencode.json"), json.dumps({"mcp": {"a": local, "b": local}, "model": "m/one"}))
    write(ws_of(srv, "opencode.jsonc"), '{"mcp": {"c": {"type": "remote", "url": "http://127.0.0.1:9/c"}},}')
    own = {"type": "local", "command": ["python3", "-c", "pass"]}
    folder = "// kept: the folder config\n" + json.dumps({"mcp": {"b": own}})
    write(ws_of(srv, ".opencode/opencode.jsonc"), folder)
    before = {name: read(ws_of(srv, name)) for name in ("opencode.json", "opencode.jsonc")}
    shown = await srv.request("GET", "/api/v1/settings/mcp?agent=opencode&scope=project")
    assert shown.body["path"] == ".opencode/opencode.jsonc" and set(shown.body["mcpServers"]) == {"b"}
    effective = (await srv.request("GET", "/api/v1/settings/mcp?agent=opencode&scope=effective")).body
    assert set(effective["mcpServers"]) == {"a", "b", "c"}
    assert effective["mcpServers"]["b"] == {"command": "python3", "args": ["-c", "pass"]}  # the folder's wins
    assert [s["path"] for s in effective["sources"]] == [
        "~/.config/opencode/opencode.json",
        "opencode.json",
        "opencode.jsonc",
        ".opencode/opencode.jsonc",
    ]
    merged = (await srv.request("GET", "/api/v1/settings?agent=opencode&scope=effective")).body["settings"]
    assert merged["model"] == "m/one" and set(merged["mcp"]) == {"a", "b", "c"}
    # A write goes to the file that wins, with its comment kept; the others are left byte for byte.
    body = {"mcpServers": {"b": PING, "d": REMOTE}}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=opencode&scope=project", body)
    assert response.status == 200 and response.body["path"] == ".opencode/opencode.jsonc"
    assert "// kept: the folder config" in read(ws_of(srv, ".opencode/opencode.jsonc"))
    assert set(jsonc.parse(read(ws_of(srv, ".opencode/opencode.jsonc")))["mcp"]) == {"b", "d"}
    assert {name: read(ws_of(srv, name)) for name in before} == before
    effective = (await srv.request("GET", "/api/v1/settings/mcp?agent=opencode&scope=effective")).body
    assert set(effective["mcpServers"]) == {"a", "b", "c", "d"} and effective["mcpServers"]["b"] == PING
    listed = {a["name"]: a for a in (await srv.request("GET", "/api/v1/agents")).body["agents"]}
    files = [(f["scope"], f["path"], f["exists"]) for f in listed["opencode"]["settings_files"]]
    assert files == [
        ("project", ".opencode/opencode.jsonc", True),
        ("project", "opencode.jsonc", True),
        ("project", "opencode.json", True),
        ("user", "~/.config/opencode/opencode.json", False),
    ]
    assert "// kept: the folder config" in read(ws_of(srv, ".opencode/opencode.jsonc"))


async def test_opencode_reads_its_legacy_global_config_json_below_the_others(srv: ServerThread) -> None:
    """opencode's global layers are config.json (legacy), opencode.json, opencode.jsonc; a new file is opencode.json."""
    config = os.path.join(srv.config.home_dir, ".config", "opencode")
    body = {"mcpServers": {"n": REMOTE}}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=opencode&scope=user", body)
    assert response.status == 200 and response.body["path"] == "~/.config/opencode/opencode.json"
    assert not os.path.exists(os.path.join(config, "config.json"))
    os.unlink(os.path.join(config, "opencode.json"))
    local = {"type": "local", "command": ["python3", "-V"]}
    write(os.path.join(config, "config.json"), json.dumps({"mcp": {"legacy": local, "both": local}}))
    shown = (await srv.request("GET", "/api/v1/settings/mcp?agent=opencode&scope=user")).body
    assert shown["path"] == "~/.config/opencode/config.json" and set(shown["mcpServers"]) == {"legacy", "both"}
    write(os.path.join(config, "opencode.json"), json.dumps({"mcp": {"both": {"type": "remote", "url": "http://x/"}}}))
    effective = (await srv.request("GET", "/api/v1/settings/mcp?agent=opencode&scope=effective")).body
    assert effective["mcpServers"]["legacy"] == {"command": "python3", "args": ["-V"]}
    assert effective["mcpServers"]["both"]["url"] == "http://x/"  # opencode.json wins over config.json
    assert [s["path"] for s in effective["sources"]][:2] == [
        "~/.config/opencode/config.json",
        "~/.config/opencode/opencode.json",
    ]
    # The file that wins is the one written; the legacy file is left as it was.
    legacy = read(os.path.join(config, "config.json"))
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=opencode&scope=user", body)
    assert response.body["path"] == "~/.config/opencode/opencode.json"
    assert read(os.path.join(config, "config.json")) == legacy


async def test_hooks_in_each_agents_place(srv: ServerThread) -> None:
    hook = {"hooks": [{"type": "command", "command": "echo hi", "timeout": 5}]}
    cases = [
        ("codex", "user", {"SessionStart": [hook]}, home_of(srv, ".codex/hooks.json")),
        ("gemini", "project", {"BeforeTool": [{"matcher": "ping", **hook}]}, ws_of(srv, ".gemini/settings.json")),
        ("qwen-code", "user", {"PreToolUse": [{"matcher": ".*", **hook}]}, home_of(srv, ".qwen/settings.json")),
    ]
    for agent, scope, hooks, path in cases:
        response = await srv.request("PUT", f"/api/v1/settings/hooks?agent={agent}&scope={scope}", {"hooks": hooks})
        assert response.status == 200, response.body
        assert json.loads(read(path))["hooks"] == hooks
        again = await srv.request("GET", f"/api/v1/settings/hooks?agent={agent}&scope={scope}")
        assert again.body["hooks"] == hooks
        # Codex skips hooks it has not trusted, Gemini ignores the settings of a folder not trusted; Qwen runs
        # hooks with no trust step. Nothing is trusted unless asked.
        assert again.body["trusted"] is (agent == "qwen-code")
    assert not os.path.exists(home_of(srv, ".codex/config.toml"))


def codex_cli_hooks(server: ServerThread) -> list[dict[str, Any]]:
    """What the real ``codex app-server`` lists (hooks/list), with the environment the runtime's sessions get:
    asked here with a client of the test's own, not the runtime's."""
    import subprocess

    assert server.runtime is not None
    agents = server.runtime.ctx.agents
    env = agents.adapter("codex").environment(agents.session_environment())
    hello = {"clientInfo": {"name": "test", "version": "1"}}
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "hooks/list", "params": {"cwds": [server.workspace]}},
    ]
    proc = subprocess.Popen(
        ["codex", "app-server"],
        cwd=server.workspace,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("".join(json.dumps(line) + "\n" for line in lines))
        proc.stdin.flush()
        for line in proc.stdout:
            message = json.loads(line)
            if message.get("id") == 2:
                return [hook for entry in message["result"]["data"] for hook in entry["hooks"]]
        raise AssertionError("codex app-server exited without listing its hooks")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("codex") is None, reason="the codex CLI is not installed")
async def test_codex_hooks_are_trusted_only_when_asked_the_way_its_cli_does(srv: ServerThread) -> None:
    hook = {"type": "command", "command": "echo hi", "timeout": 5}
    hooks = {"SessionStart": [{"hooks": [hook]}], "PreToolUse": [{"matcher": "mcp__p__ping", "hooks": [hook, hook]}]}
    url = "/api/v1/settings/hooks?agent=codex&scope=user"
    response = await srv.request("PUT", url, {"hooks": hooks})
    assert response.status == 200 and response.body["trusted"] is False
    assert {h["trustStatus"] for h in codex_cli_hooks(srv)} == {"untrusted"}
    response = await srv.request("PUT", url + "&trust=true", {"hooks": hooks})
    assert response.status == 200 and response.body["trusted"] is True, response.body
    listed = codex_cli_hooks(srv)
    assert len(listed) == 3 and {h["trustStatus"] for h in listed} == {"trusted"}, listed
    state = tomlkit.parse(read(home_of(srv, ".codex/config.toml"))).unwrap()["hooks"]["state"]
    assert state == {h["key"]: {"trusted_hash": h["currentHash"]} for h in listed}
    assert (await srv.request("GET", url)).body["trusted"] is True
    # A changed hook is no longer trusted (Codex says "modified"); a hook that is gone loses its record.
    hooks = {"SessionStart": [{"hooks": [{**hook, "command": "echo changed"}]}]}
    response = await srv.request("PUT", url, {"hooks": hooks})
    assert response.status == 200 and response.body["trusted"] is False
    assert [h["trustStatus"] for h in codex_cli_hooks(srv)] == ["modified"]
    response = await srv.request("PUT", url + "&trust=true", {"hooks": hooks})
    assert response.body["trusted"] is True
    state = tomlkit.parse(read(home_of(srv, ".codex/config.toml"))).unwrap()["hooks"]["state"]
    assert len(state) == 1
    # A project's hooks: its trust and theirs, in the user's config.toml; the effective view trusts both scopes.
    project = "/api/v1/settings/hooks?agent=codex&scope=project"
    response = await srv.request("PUT", project, {"hooks": hooks})
    assert response.status == 200 and response.body["trusted"] is False
    assert not [h for h in codex_cli_hooks(srv) if h["source"] == "project"]  # an untrusted project: ignored
    effective = "/api/v1/settings/hooks?agent=codex&scope=effective"
    assert (await srv.request("GET", effective)).body["trusted"] is False
    response = await srv.request("PUT", project + "&trust=true", {"hooks": hooks})
    assert response.status == 200 and response.body["trusted"] is True, response.body
    assert {(h["source"], h["trustStatus"]) for h in codex_cli_hooks(srv)} == {
        ("user", "trusted"),
        ("project", "trusted"),
    }
    assert (await srv.request("GET", effective)).body["trusted"] is True


async def test_codex_hook_trust_needs_its_cli_and_changes_nothing_when_it_fails(servers: ServerPool) -> None:
    home = tempfile.mkdtemp(prefix="codex-trust-home-")
    failing = os.path.join(home, "codex-that-fails")
    write(failing, "#!/bin/sh\necho 'not a protocol line'\nexit 3\n")
    os.chmod(failing, 0o755)
    hooks = {"SessionStart": [{"hooks": [{"type": "command", "command": "echo hi"}]}]}
    for binary, status, code in (
        (os.path.join(home, "absent"), 422, "trust_unsupported"),
        (failing, 502, "trust_failed"),
    ):
        server = servers.fresh("--home", home, "--codex-bin", binary)
        try:
            for scope in ("user", "project"):
                url = f"/api/v1/settings/hooks?agent=codex&scope={scope}&trust=true"
                response = await server.request("PUT", url, {"hooks": hooks})
                assert response.status == status and response.body["error"]["code"] == code, response.body
                # Nothing written: neither the hooks file nor the project's trust.
                assert not os.path.exists(home_of(server, ".codex/hooks.json"))
                assert not os.path.exists(ws_of(server, ".codex/hooks.json"))
                assert not os.path.exists(home_of(server, ".codex/config.toml"))
            response = await server.request("GET", "/api/v1/settings/hooks?agent=codex&scope=user")
            assert response.status == 200 and response.body["trusted"] is True  # no hooks: nothing to trust
        finally:
            server.stop()
    shutil.rmtree(home, ignore_errors=True)


async def test_trust_is_recorded_only_when_asked_the_way_each_cli_does(srv: ServerThread) -> None:
    body = {"mcpServers": {"ping": PING}}
    for agent in ("codex", "gemini", "qwen-code"):
        response = await srv.request("PUT", f"/api/v1/settings/mcp?agent={agent}&scope=project", body)
        assert response.status == 200 and response.body["trusted"] is False, (agent, response.body)
    assert not os.path.exists(home_of(srv, ".codex/config.toml"))
    assert not os.path.exists(home_of(srv, ".gemini/trustedFolders.json"))
    assert not os.path.exists(home_of(srv, ".qwen/mcpApprovals.json"))
    for agent in ("codex", "gemini", "qwen-code"):
        response = await srv.request("PUT", f"/api/v1/settings/mcp?agent={agent}&scope=project&trust=true", body)
        assert response.status == 200 and response.body["trusted"] is True, (agent, response.body)
    ws = srv.workspace
    codex = tomlkit.parse(read(home_of(srv, ".codex/config.toml"))).unwrap()
    assert codex["projects"][ws] == {"trust_level": "trusted"}
    assert json.loads(read(home_of(srv, ".gemini/trustedFolders.json"))) == {ws: "TRUST_FOLDER"}
    assert stat.S_IMODE(os.stat(home_of(srv, ".gemini/trustedFolders.json")).st_mode) == 0o600
    approvals = json.loads(read(home_of(srv, ".qwen/mcpApprovals.json")))
    assert approvals == {ws: {"ping": {"hash": qwen_approval_hash(PING), "status": "approved"}}}
    # A changed server is pending again until approved again.
    changed = {"mcpServers": {"ping": {**PING, "args": ["other"]}}}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=qwen-code&scope=project", changed)
    assert response.body["trusted"] is False
    # Qwen also reads the project's .mcp.json (Claude Code's): its servers need approval too, hashed as Qwen
    # normalises them (type "http" + url → httpUrl).
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=qwen-code&scope=project&trust=true", changed)
    assert response.body["trusted"] is True
    await srv.request("PUT", "/api/v1/settings/mcp?scope=project", {"mcpServers": {"remote": REMOTE}})
    response = await srv.request("GET", "/api/v1/settings/mcp?agent=qwen-code&scope=project")
    assert response.body["trusted"] is False and set(response.body["mcpServers"]) == {"ping"}
    effective = await srv.request("GET", "/api/v1/settings/mcp?agent=qwen-code&scope=effective")
    assert effective.body["mcpServers"] == {"remote": REMOTE, **changed["mcpServers"]}
    response = await srv.request("PUT", "/api/v1/settings/mcp?agent=qwen-code&scope=project&trust=true", changed)
    assert response.body["trusted"] is True
    remote = {"httpUrl": REMOTE["url"], "headers": REMOTE["headers"]}
    approvals = json.loads(read(home_of(srv, ".qwen/mcpApprovals.json")))[ws]
    assert approvals["remote"] == {"hash": qwen_approval_hash(remote), "status": "approved"}


def test_qwen_hash_is_over_sorted_compact_json() -> None:
    entry = {"command": "python3", "args": ["a", "b"], "env": {"B": "1", "A": "2"}, "description": "ignored"}
    text = '{"args":["a","b"],"command":"python3","env":{"A":"2","B":"1"}}'
    import hashlib

    assert qwen_approval_hash(entry) == hashlib.sha256(text.encode()).hexdigest()


async def test_agent_all_writes_every_agent_in_its_format(srv: ServerThread) -> None:
    patch = {"mcpServers": {"ping": PING, "remote": REMOTE}}
    response = await srv.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=project&trust=true", patch)
    assert response.status == 200, response.body
    agents = response.body["agents"]
    assert set(agents) == {"claude-code", "codex", "gemini", "qwen-code", "opencode"}
    for agent, view in agents.items():
        assert view["mcpServers"] == patch["mcpServers"], agent
        assert view["trusted"] is True and view["exists"] is True
    assert json.loads(read(ws_of(srv, ".mcp.json")))["mcpServers"]["ping"] == PING
    assert tomlkit.parse(read(ws_of(srv, ".codex/config.toml"))).unwrap()["mcp_servers"]["ping"] == PING
    assert jsonc.parse(read(ws_of(srv, "opencode.json")))["mcp"]["ping"]["type"] == "local"
    # Remove one, keep the other.
    response = await srv.request(
        "PATCH", "/api/v1/settings/mcp?agent=all&scope=project", {"mcpServers": {"remote": None}}
    )
    assert response.status == 200
    for agent, view in response.body["agents"].items():
        assert view["mcpServers"] == {"ping": PING}, agent
    effective = await srv.request("GET", "/api/v1/settings/mcp?agent=all&scope=effective")
    assert effective.status == 200
    assert all(v["mcpServers"] == {"ping": PING} for v in effective.body["agents"].values()), effective.body


async def test_agent_all_is_all_or_nothing(srv: ServerThread) -> None:
    await srv.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=user", {"mcpServers": {"ping": PING}})
    files = [
        home_of(srv, ".claude.json"),
        home_of(srv, ".codex/config.toml"),
        home_of(srv, ".gemini/settings.json"),
        home_of(srv, ".qwen/settings.json"),
    ]
    before = {path: read(path) for path in files}
    broken = home_of(srv, ".config/opencode/opencode.json")
    write(broken, '{"mcp": {"ping": ')  # opencode's file is not JSON: its part fails after the others staged
    response = await srv.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=user", {"mcpServers": {"new": REMOTE}})
    assert response.status == 422 and response.body["error"]["code"] == "settings_file_invalid"
    assert {path: read(path) for path in files} == before
    assert read(broken) == '{"mcp": {"ping": '
    # A failure while committing (a file that cannot be written) puts back the files already landed.
    os.unlink(broken)
    os.makedirs(broken)  # a directory where opencode's file should be
    response = await srv.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=user", {"mcpServers": {"new": REMOTE}})
    assert response.status == 409, response.body
    assert {path: read(path) for path in files} == before
    # A bad server for one agent only (opencode has no cwd) changes nobody.
    bad = {"mcpServers": {"p": {**PING, "cwd": "/tmp"}}}
    response = await srv.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=user", bad)
    assert response.status == 400 and response.body["error"]["details"]["path"] == "$.mcpServers.p.cwd"
    assert {path: read(path) for path in files} == before


async def test_agents_and_health_list_each_agents_settings_files(srv: ServerThread) -> None:
    await srv.request("PUT", "/api/v1/settings/mcp?agent=gemini&scope=user", {"mcpServers": {"ping": PING}})
    listed = {a["name"]: a for a in (await srv.request("GET", "/api/v1/agents")).body["agents"]}
    gemini = {(f["scope"], f["path"]): f["exists"] for f in listed["gemini"]["settings_files"]}
    assert gemini == {("project", ".gemini/settings.json"): False, ("user", "~/.gemini/settings.json"): True}
    codex = {f["path"] for f in listed["codex"]["settings_files"]}
    assert codex == {".codex/config.toml", ".codex/hooks.json", "~/.codex/config.toml", "~/.codex/hooks.json"}
    claude = {f["path"] for f in listed["claude-code"]["settings_files"]}
    assert ".claude/settings.json" in claude and "~/.claude.json" in claude
    health = (await srv.request("GET", "/health")).body["agents"]
    assert health["gemini"]["settings_files"] == listed["gemini"]["settings_files"]


def test_a_failed_commit_puts_back_the_files_already_landed(tmp_path: Any) -> None:
    from wsruntime_ext.base import ApiError
    from wsruntime_ext.settings.service import Conditions, Location, load
    from wsruntime_ext.settings.staging import Change, commit_all
    from wsruntime_ext.temps import TempRegistry

    os.makedirs(tmp_path / "state")
    temps = TempRegistry(str(tmp_path / "state"), [str(tmp_path)])
    recorded: list[str] = []  # every temporary is recorded before it is created (a crash leaves none for good)
    create = temps.create

    def recording(directory: str, name: str, flags: int, mode: int) -> tuple[int, str, str]:
        recorded.append(name)
        return create(directory, name, flags, mode)

    temps.create = recording  # type: ignore[method-assign]
    first = tmp_path / "first.json"
    first.write_text('{"a": 1}\n')
    created = tmp_path / "created.json"
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    changes = []
    for path in (first, created, blocker / "x.json"):
        where = Location("user", str(path), str(path), (), None)
        changes.append(Change(where, load(where), b'{"b": 2}\n'))
    with pytest.raises(ApiError) as failed:
        commit_all(changes, Conditions(), temps)
    assert failed.value.code == "settings_file_unusable"
    assert first.read_text() == '{"a": 1}\n' and not created.exists()
    changes = [Change(c.where, load(c.where), c.data) for c in changes[:2]]
    commit_all(changes, Conditions(), temps)
    assert first.read_text() == created.read_text() == '{"b": 2}\n'
    # Each landing, and the put-back of first.json, went through the registry.
    assert recorded.count("first.json") == 3 and recorded.count("created.json") == 2, recorded
    assert temps.outstanding() == {}
    assert sorted(os.listdir(tmp_path)) == ["blocker", "created.json", "first.json", "state"]


async def test_if_match_and_a_broken_file_as_for_claude_code(srv: ServerThread) -> None:
    url = "/api/v1/settings/mcp?agent=codex&scope=user"
    first = await srv.request("PUT", url, {"mcpServers": {"ping": PING}})
    etag = first.headers["ETag"]
    stale = await srv.request("PUT", url, {"mcpServers": {}}, headers={"If-Match": '"nope"'})
    assert stale.status == 412 and stale.body["error"]["code"] == "precondition_failed"
    fresh = await srv.request("PUT", url, {"mcpServers": {}}, headers={"If-Match": etag})
    assert fresh.status == 200 and fresh.body["mcpServers"] == {}
    path = home_of(srv, ".codex/config.toml")
    write(path, "model = \n")
    broken = await srv.request("GET", url)
    assert broken.status == 422 and broken.body["error"]["code"] == "settings_file_invalid"
    assert broken.body["error"]["details"]["line"] == 1
    refused = await srv.request("PUT", url, {"mcpServers": {"ping": PING}})
    assert refused.status == 422 and read(path) == "model = \n"
    forced = await srv.request("PUT", url + "&force=true", {"mcpServers": {"ping": PING}})
    assert forced.status == 200, forced.body
    assert read(home_of(srv, forced.body["backup"][2:])) == "model = \n"
    assert tomlkit.parse(read(path)).unwrap() == {"mcp_servers": {"ping": PING}}


def _toml_value(rng: Any, depth: int) -> Any:
    kind = rng.randrange(5 if depth < 3 else 3)
    if kind == 0:
        return rng.randrange(100)
    if kind == 1:
        return rng.choice(["x", "a # b", "ü", 'q"'])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return [rng.randrange(9) for _ in range(rng.randrange(3))]
    return {f"k{rng.randrange(5)}": _toml_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _toml_mutate(value: dict[str, Any], rng: Any) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        roll = rng.random()
        if roll < 0.2:
            continue
        if roll < 0.4:
            out[key] = _toml_value(rng, 1)
        elif isinstance(item, dict) and roll < 0.7:
            out[key] = _toml_mutate(item, rng)
        else:
            out[key] = item
    for _ in range(rng.randrange(3)):
        out[f"n{rng.randrange(50)}"] = _toml_value(rng, 1)
    return out


@pytest.mark.parametrize("seed", range(300))
def test_random_toml_edits_round_trip_with_comments(seed: int) -> None:
    """tables becoming values, emptied tables, new keys after tables: what is written reads back as sent."""
    import random

    from wsruntime_ext.settings.formats import parse_toml, render
    from wsruntime_ext.settings.service import Loaded

    rng = random.Random(seed)
    original = {f"k{i}": _toml_value(rng, 0) for i in range(rng.randrange(1, 6))}
    text = "# kept\n" + tomlkit.dumps(original)
    changed = _toml_mutate(original, rng)
    out = render("toml", Loaded(True, parse_toml(text), '"x"', text.encode()), changed).decode()
    assert parse_toml(out) == changed, out
    assert out.startswith("# kept\n")
