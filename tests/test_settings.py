"""Claude Code settings over real HTTP: every scope, key preservation, validation paths, If-Match, corrupt files.

The server runs with ``--home`` set to a temporary directory: nothing here touches this machine's real
``~/.claude*``. Each test starts from an empty home and a workspace without ``.claude/`` or ``.mcp.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import wsruntime_ext.settings.service as settings_service
from tests.conftest import Response, ServerPool, ServerThread
from tests.eventstream import EventStream
from wsruntime_ext.settings.service import Conditions, SettingsService

HOOK = {"type": "command", "command": "echo hi >> /tmp/never", "timeout": 5}


@pytest.fixture(scope="module")
def home_server(servers: ServerPool) -> Iterator[ServerThread]:
    home = tempfile.mkdtemp(prefix="settings-home-")
    server = servers.fresh("--home", home)
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def srv(home_server: ServerThread) -> Iterator[ServerThread]:
    """The server, with an empty home and no settings files in the workspace."""
    home = home_server.config.home_dir
    yield home_server
    for name in os.listdir(home):
        path = os.path.join(home, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    for name in (".claude", ".mcp.json"):
        path = os.path.join(home_server.workspace, name)
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


def home_of(server: ServerThread, *parts: str) -> str:
    return os.path.join(server.config.home_dir, *parts)


def ws_of(server: ServerThread, *parts: str) -> str:
    return os.path.join(server.workspace, *parts)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, value: Any, mode: int | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    if mode is not None:
        os.chmod(path, mode)


async def put(server: ServerThread, path: str, body: Any, **headers: str) -> Response:
    return await server.request("PUT", path, body, headers={k.replace("_", "-"): v for k, v in headers.items()})


async def test_missing_files_read_as_empty_in_every_scope(srv: ServerThread) -> None:
    expected = {
        ("/api/v1/settings", "project"): ".claude/settings.json",
        ("/api/v1/settings", "local"): ".claude/settings.local.json",
        ("/api/v1/settings", "user"): "~/.claude/settings.json",
        ("/api/v1/settings/hooks", "project"): ".claude/settings.json",
        ("/api/v1/settings/mcp", "project"): ".mcp.json",
        ("/api/v1/settings/mcp", "local"): "~/.claude.json",
        ("/api/v1/settings/mcp", "user"): "~/.claude.json",
    }
    for (path, scope), file in expected.items():
        r = await srv.request("GET", f"{path}?scope={scope}")
        part = {"/api/v1/settings": "settings", "/api/v1/settings/hooks": "hooks"}.get(path, "mcpServers")
        assert r.status == 200, (path, scope, r.raw)
        assert r.body == {"scope": scope, "path": file, "exists": False, part: {}}
        assert r.headers["ETag"] == '"absent"'
    default = await srv.request("GET", "/api/v1/settings")
    assert default.body["scope"] == "project"


async def test_put_writes_each_scope_where_the_cli_reads_it(srv: ServerThread) -> None:
    settings = {"model": "sonnet", "permissions": {"allow": ["Bash(git *)"]}, "hooks": {}}
    for scope, file in (
        ("project", ws_of(srv, ".claude", "settings.json")),
        ("local", ws_of(srv, ".claude", "settings.local.json")),
        ("user", home_of(srv, ".claude", "settings.json")),
    ):
        r = await put(srv, f"/api/v1/settings?scope={scope}", {"settings": {**settings, "env": {"SCOPE": scope}}})
        assert r.status == 200, r.raw
        assert r.body["exists"] is True and r.body["settings"]["env"] == {"SCOPE": scope}
        assert read_json(file) == {**settings, "env": {"SCOPE": scope}}
        assert r.headers["ETag"] == (await srv.request("GET", f"/api/v1/settings?scope={scope}")).headers["ETag"]

    server = {"command": "python3", "args": ["echo.py"], "env": {}}
    for scope in ("project", "local", "user"):
        r = await put(srv, f"/api/v1/settings/mcp?scope={scope}", {"mcpServers": {f"srv-{scope}": server}})
        assert r.status == 200, r.raw
        assert r.body["mcpServers"] == {f"srv-{scope}": server}
    assert read_json(ws_of(srv, ".mcp.json")) == {"mcpServers": {"srv-project": server}}
    claude_json = read_json(home_of(srv, ".claude.json"))
    assert claude_json == {
        "mcpServers": {"srv-user": server},
        "projects": {srv.workspace: {"mcpServers": {"srv-local": server}}},
    }
    assert stat.S_IMODE(os.stat(home_of(srv, ".claude.json")).st_mode) == 0o600  # as the CLI creates it

    # hooks replace only the hooks key
    hooks = {"PreToolUse": [{"matcher": "Bash", "hooks": [HOOK]}]}
    r = await put(srv, "/api/v1/settings/hooks?scope=local", {"hooks": hooks})
    assert r.status == 200 and r.body == {"scope": "local", "path": ".claude/settings.local.json", "exists": True,
                                          "hooks": hooks}  # fmt: skip
    assert read_json(ws_of(srv, ".claude", "settings.local.json")) == {
        **settings,
        "hooks": hooks,
        "env": {"SCOPE": "local"},
    }
    assert list(read_json(ws_of(srv, ".claude", "settings.local.json"))) == ["model", "permissions", "hooks", "env"]


async def test_other_state_of_claude_json_comes_back_unchanged(srv: ServerThread) -> None:
    other_project = "/somewhere/else"
    state: dict[str, Any] = {
        "numStartups": 42,
        "installMethod": "global",
        "tipsHistory": {"new-user-warmup": 1, "memory-command": 3},
        "userID": "a" * 64,
        "mcpServers": {"old": {"command": "old-server"}},
        "projects": {
            other_project: {"allowedTools": ["Bash"], "mcpServers": {"theirs": {"command": "x"}}, "history": [1, 2]},
            srv.workspace: {
                "allowedTools": [],
                "mcpServers": {},
                "enabledMcpjsonServers": [],
                "hasTrustDialogAccepted": True,
                "lastCost": 0.12,
            },
        },
        "oauthAccount": {"emailAddress": "dev@example.com"},
        "cachedChangelog": "# Changelog\n\nunicode: ✔ é 漢字",
        "fallbackAvailableWarningThreshold": 0.5,
    }
    path = home_of(srv, ".claude.json")
    write_json(path, state, mode=0o600)

    new_local = {"mine": {"type": "stdio", "command": "python3", "args": ["a.py"], "env": {"K": "V"}}}
    new_user = {"remote": {"type": "http", "url": "https://mcp.example.com/mcp", "headers": {"X-Key": "1"}}}
    assert (await put(srv, "/api/v1/settings/mcp?scope=local", {"mcpServers": new_local})).status == 200
    assert (await put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": new_user})).status == 200

    after = read_json(path)
    expected = json.loads(json.dumps(state))
    expected["mcpServers"] = new_user
    expected["projects"][srv.workspace]["mcpServers"] = new_local
    assert after == expected
    # Order of keys kept, at every level that was touched.
    assert list(after) == list(state)
    assert list(after["projects"]) == list(state["projects"])
    assert list(after["projects"][srv.workspace]) == list(state["projects"][srv.workspace])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    r = await srv.request("GET", "/api/v1/settings/mcp?scope=local")
    assert r.body["mcpServers"] == new_local and r.body["path"] == "~/.claude.json"

    # Whole-settings and hooks PUTs keep the settings file's other keys too.
    settings_path = ws_of(srv, ".claude", "settings.json")
    write_json(settings_path, {"futureKey": {"x": [1, 2]}, "model": "opus", "hooks": {"Stop": []}}, mode=0o640)
    hooks = {"Stop": [{"hooks": [{"type": "command", "command": "true"}]}]}
    assert (await put(srv, "/api/v1/settings/hooks", {"hooks": hooks})).status == 200
    assert read_json(settings_path) == {"futureKey": {"x": [1, 2]}, "model": "opus", "hooks": hooks}
    assert stat.S_IMODE(os.stat(settings_path).st_mode) == 0o640


PARTS = {"/api/v1/settings": "settings", "/api/v1/settings/hooks": "hooks", "/api/v1/settings/mcp": "mcpServers"}

# Bad values of each PUT's part (sent as {part: value}) and the JSON path, in the body, of the first problem.
INVALID: list[tuple[str, Any, str]] = [
    ("/api/v1/settings", [], "$.settings"),
    ("/api/v1/settings", "x", "$.settings"),
    ("/api/v1/settings", None, "$.settings"),
    ("/api/v1/settings", {"permissions": {"allow": ["Bash", 3]}}, "$.settings.permissions.allow[1]"),
    ("/api/v1/settings", {"permissions": {"deny": "Bash"}}, "$.settings.permissions.deny"),
    ("/api/v1/settings", {"permissions": []}, "$.settings.permissions"),
    ("/api/v1/settings", {"env": {"A": "1", "B": 2}}, "$.settings.env.B"),
    ("/api/v1/settings", {"env": ["A=1"]}, "$.settings.env"),
    ("/api/v1/settings", {"model": 5}, "$.settings.model"),
    ("/api/v1/settings", {"enableAllProjectMcpServers": "yes"}, "$.settings.enableAllProjectMcpServers"),
    ("/api/v1/settings", {"cleanupPeriodDays": -1}, "$.settings.cleanupPeriodDays"),
    # Hooks inside a whole-settings PUT are validated the same way (API.md).
    ("/api/v1/settings", {"hooks": {"PreToolUse": [{"hooks": [{"type": "command"}]}]}},
     "$.settings.hooks.PreToolUse[0].hooks[0].command"),
    ("/api/v1/settings", {"hooks": {"PreToolUse": [{"matcher": 1, "hooks": [HOOK]}]}},
     "$.settings.hooks.PreToolUse[0].matcher"),
    ("/api/v1/settings", {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": ["ls"]}]}]}},
     "$.settings.hooks.Stop[0].hooks[0].command"),
    ("/api/v1/settings", {"hooks": {"OnSave": [{"hooks": [HOOK]}]}}, "$.settings.hooks.OnSave"),
    ("/api/v1/settings", {"hooks": []}, "$.settings.hooks"),
    ("/api/v1/settings/hooks", {"PreToolUse": [{"matcher": "Bash", "hooks": [HOOK, {**HOOK, "timeout": "5"}]}]},
     "$.hooks.PreToolUse[0].hooks[1].timeout"),
    ("/api/v1/settings/hooks", {"PreToolUse": [{"matcher": 1, "hooks": []}]}, "$.hooks.PreToolUse[0].matcher"),
    ("/api/v1/settings/hooks", {"PreToolUse": [{"matcher": None, "hooks": []}]}, "$.hooks.PreToolUse[0].matcher"),
    ("/api/v1/settings/hooks", {"PreToolUse": [{"matcher": "Bash"}]}, "$.hooks.PreToolUse[0].hooks"),
    ("/api/v1/settings/hooks", {"PreToolUse": {"matcher": "Bash"}}, "$.hooks.PreToolUse"),
    ("/api/v1/settings/hooks", {"PreTooluse": []}, "$.hooks.PreTooluse"),
    ("/api/v1/settings/hooks", {"Stop": ["echo hi"]}, "$.hooks.Stop[0]"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": ["echo hi"]}]}, "$.hooks.Stop[0].hooks[0]"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": [{"command": "x"}]}]}, "$.hooks.Stop[0].hooks[0].type"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": [{"type": 1, "command": "x"}]}]}, "$.hooks.Stop[0].hooks[0].type"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": [{"type": "command", "command": 42}]}]},
     "$.hooks.Stop[0].hooks[0].command"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": [{"type": "command", "command": ""}]}]},
     "$.hooks.Stop[0].hooks[0].command"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": [{"type": "command", "command": "x", "timeout": -1}]}]},
     "$.hooks.Stop[0].hooks[0].timeout"),
    ("/api/v1/settings/hooks", {"Stop": [{"hooks": [{"type": "command", "command": "x", "timeout": True}]}]},
     "$.hooks.Stop[0].hooks[0].timeout"),
    ("/api/v1/settings/hooks", [], "$.hooks"),
    ("/api/v1/settings/hooks", "x", "$.hooks"),
    ("/api/v1/settings/mcp", {"echo": {}}, "$.mcpServers.echo.command"),
    ("/api/v1/settings/mcp", {"echo": {"args": ["a"]}}, "$.mcpServers.echo.command"),
    ("/api/v1/settings/mcp", {"echo": {"command": 7}}, "$.mcpServers.echo.command"),
    ("/api/v1/settings/mcp", {"echo": {"command": "python3", "args": "a.py"}}, "$.mcpServers.echo.args"),
    ("/api/v1/settings/mcp", {"echo": {"command": "python3", "args": ["a.py", 1]}}, "$.mcpServers.echo.args[1]"),
    ("/api/v1/settings/mcp", {"echo": {"command": "python3", "env": {"K": 1}}}, "$.mcpServers.echo.env.K"),
    ("/api/v1/settings/mcp", {"web": {"type": "http"}}, "$.mcpServers.web.url"),
    ("/api/v1/settings/mcp", {"web": {"type": "sse"}}, "$.mcpServers.web.url"),
    ("/api/v1/settings/mcp", {"web": {"type": "http", "url": 1}}, "$.mcpServers.web.url"),
    ("/api/v1/settings/mcp", {"web": {"type": "sse", "url": "ftp://x"}}, "$.mcpServers.web.url"),
    ("/api/v1/settings/mcp", {"web": {"type": "ws", "url": "ws://x"}}, "$.mcpServers.web.type"),
    ("/api/v1/settings/mcp", {"web": {"type": "http", "url": "http://[::1"}}, "$.mcpServers.web.url"),
    ("/api/v1/settings/mcp", {"my server": {"type": "http", "url": "https://x", "headers": {"A": None}}},
     '$.mcpServers["my server"].headers.A'),
    ("/api/v1/settings/mcp", {"echo": "python3 echo.py"}, "$.mcpServers.echo"),
    ("/api/v1/settings/mcp", {"": {"command": "x"}}, '$.mcpServers[""]'),
    ("/api/v1/settings/mcp", [], "$.mcpServers"),
]  # fmt: skip


def bad_bodies(endpoint: str, scope: str) -> list[tuple[bytes, str]]:
    """Bodies that are JSON but not a settings body of ``endpoint`` (raw bytes), each with its JSON path."""
    part = PARTS[endpoint]
    other = "user" if scope != "user" else "project"
    shapes: list[tuple[Any, str]] = [
        ([], "$"),
        ("x", "$"),
        (42, "$"),
        (None, "$"),
        ({}, f"$.{part}"),
        ({"other": {}}, f"$.{part}"),
        ({part: {}, "scope": other}, "$.scope"),  # a GET answer of another scope: would overwrite another file
        ({part: {}, "scope": "global"}, "$.scope"),
        ({part: {}, "scope": "effective"}, "$.scope"),
        ({part: {}, "scope": 5}, "$.scope"),
    ]
    return [(b"", "$"), (b"  \n", "$")] + [(json.dumps(body).encode(), where) for body, where in shapes]


def snapshot(files: list[str]) -> dict[str, tuple[bytes, int]]:
    snap = {}
    for file in files:
        with open(file, "rb") as f:
            snap[file] = (f.read(), os.stat(file).st_mtime_ns)
    return snap


@pytest.mark.parametrize("scope", ["project", "local", "user"])
async def test_bad_bodies_name_the_first_problem_and_write_nothing(srv: ServerThread, scope: str) -> None:
    # Existing files in every place a PUT of any scope could touch: none of them may change.
    files = [
        ws_of(srv, ".claude", "settings.json"),
        ws_of(srv, ".claude", "settings.local.json"),
        ws_of(srv, ".mcp.json"),
        home_of(srv, ".claude", "settings.json"),
        home_of(srv, ".claude.json"),
    ]
    for file in files:
        write_json(file, {"keep": "me", "hooks": {}, "mcpServers": {}, "projects": {srv.workspace: {"x": 1}}})
    before = snapshot(files)
    cases: list[tuple[str, bytes, str]] = [
        (path, json.dumps({PARTS[path]: value}).encode(), where) for path, value, where in INVALID
    ]
    cases += [(path, raw, where) for path in PARTS for raw, where in bad_bodies(path, scope)]
    for path, raw, where in cases:
        r = await srv.request("PUT", f"{path}?scope={scope}", raw=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400, (path, raw, r.raw)
        assert r.error_code == "invalid_settings", (path, raw, r.raw)
        assert r.body["error"]["details"]["path"] == where, (path, raw, r.raw)
        assert r.body["error"]["message"].startswith(where + " "), r.raw
    assert snapshot(files) == before  # byte for byte, not even rewritten
    assert sorted(os.listdir(ws_of(srv, ".claude"))) == ["settings.json", "settings.local.json"]  # no temp files
    assert sorted(os.listdir(home_of(srv, ".claude"))) == ["settings.json"]

    # Another scope's answer sent back says which scope this request writes.
    other = "user" if scope != "user" else "project"
    r = await put(srv, f"/api/v1/settings?scope={scope}", {"scope": other, "settings": {}})
    assert r.body["error"]["details"] == {"path": "$.scope", "scope": scope}
    # A body that is not JSON at all stays invalid_json; an unknown ?scope= is a query parameter, not the body.
    # So are bodies Python's json would take but no other JSON reader (the real CLI included) reads back:
    # NaN, Infinity, a number out of range, and a lone surrogate, which has no UTF-8 form at all.
    not_json = [b'{"hooks": ', b'{"x": NaN}', b'{"x": -Infinity}', b'{"x": 1e400}', b'{"x": "\\ud800"}']
    for path in PARTS:
        for raw in not_json:
            r = await srv.request("PUT", f"{path}?scope={scope}", raw=raw, headers={"Content-Type": "x"})
            assert r.status == 400 and r.error_code == "invalid_json", (raw, r.raw)
        body = {PARTS[path]: {"n": {"command": "x", "foo": float("nan")}}}  # what the audit sent (mcp)
        r = await srv.request("PATCH", "/api/v1/settings/mcp?agent=all&scope=user", raw=json.dumps(body).encode())
        assert r.status == 400 and r.error_code == "invalid_json", r.raw
    for method in ("GET", "PUT"):
        r = await srv.request(method, "/api/v1/settings/hooks?scope=global", {"hooks": {}} if method == "PUT" else None)
        assert r.status == 400 and r.error_code == "invalid_parameter"
    assert snapshot(files) == before


async def test_a_good_body_with_its_own_scope_is_written(srv: ServerThread) -> None:
    """A GET answer sent back to its own scope is a good body (``scope`` and the other fields are ignored)."""
    got = (await srv.request("GET", "/api/v1/settings/mcp?scope=user")).body
    got["mcpServers"] = {"echo": {"command": "python3", "args": ["echo.py"]}}
    r = await put(srv, "/api/v1/settings/mcp?scope=user", got)
    assert r.status == 200, r.raw
    assert read_json(home_of(srv, ".claude.json"))["mcpServers"] == got["mcpServers"]


async def test_unknown_keys_and_hook_types_are_kept(srv: ServerThread) -> None:
    value = {
        "someNewCliKey": {"deep": [1, {"x": None}]},
        "hooks": {
            "UserPromptSubmit": [{"hooks": [{"type": "prompt", "prompt": "check it", "extra": True}]}],
            "PreToolUse": [{"matcher": "Edit|Write", "hooks": [{**HOOK, "async": False}]}],
        },
    }
    r = await put(srv, "/api/v1/settings?scope=user", {"settings": value})
    assert r.status == 200, r.raw
    assert read_json(home_of(srv, ".claude", "settings.json")) == value


async def test_if_match_and_if_none_match(srv: ServerThread) -> None:
    first = await srv.request("GET", "/api/v1/settings/mcp?scope=user")
    assert first.headers["ETag"] == '"absent"'
    body = {"mcpServers": {"a": {"command": "a"}}}
    r = await put(srv, "/api/v1/settings/mcp?scope=user", body, If_Match='"absent"')
    assert r.status == 200, r.raw
    etag = r.headers["ETag"]
    assert etag != '"absent"'
    # Stale: the client read "absent", the file exists now.
    r = await put(srv, "/api/v1/settings/mcp?scope=user", body, If_Match='"absent"')
    assert r.status == 412 and r.error_code == "precondition_failed"
    assert r.body["error"]["details"]["current_etag"] == etag
    r = await put(srv, "/api/v1/settings/mcp?scope=user", body, If_None_Match="*")
    assert r.status == 412
    # The local scope lives in the same file: same ETag, and a write there makes the user scope's stale.
    assert (await srv.request("GET", "/api/v1/settings/mcp?scope=local")).headers["ETag"] == etag
    r = await put(srv, "/api/v1/settings/mcp?scope=local", {"mcpServers": {"b": {"command": "b"}}}, If_Match=etag)
    assert r.status == 200
    r = await put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": {}}, If_Match=etag)
    assert r.status == 412
    assert read_json(home_of(srv, ".claude.json"))["mcpServers"] == {"a": {"command": "a"}}
    # Someone else (the CLI) rewrites the file: the old ETag no longer matches.
    current = (await srv.request("GET", "/api/v1/settings/mcp?scope=user")).headers["ETag"]
    data = read_json(home_of(srv, ".claude.json"))
    data["numStartups"] = 1
    write_json(home_of(srv, ".claude.json"), data)
    r = await put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": {}}, If_Match=current)
    assert r.status == 412
    r = await put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": {}}, If_Match="*")
    assert r.status == 200
    r = await put(srv, "/api/v1/settings?scope=project", {"settings": {}}, If_Match="not-a-tag")
    assert r.status == 400 and r.error_code == "invalid_header"


async def test_a_concurrent_writer_between_read_and_rename_is_not_clobbered(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI rewrites ~/.claude.json after the runtime read it: its change survives, ours lands on top."""
    path = home_of(srv, ".claude.json")
    write_json(path, {"numStartups": 1, "mcpServers": {}}, mode=0o600)
    real_load = settings_service.load
    calls = []

    def load_then_cli_writes(where: Any) -> Any:
        loaded = real_load(where)
        calls.append(where.file)
        if len(calls) == 1:  # after our first read: the CLI lands its own version (a new file, renamed in)
            write_json(path + ".cli", {"numStartups": 2, "mcpServers": {}, "cliState": "new"}, mode=0o600)
            os.rename(path + ".cli", path)
        return loaded

    monkeypatch.setattr(settings_service, "load", load_then_cli_writes)
    body = {"mcpServers": {"ours": {"command": "ours"}}}
    r = await put(srv, "/api/v1/settings/mcp?scope=user", body)
    assert r.status == 200, r.raw
    assert len(calls) == 2  # read, found changed at the rename, read again
    assert read_json(path) == {"numStartups": 2, "mcpServers": body["mcpServers"], "cliState": "new"}

    # With If-Match the client asked for that version: a change in between is a 412, and the CLI's file stays.
    etag = (await srv.request("GET", "/api/v1/settings/mcp?scope=user")).headers["ETag"]
    calls.clear()
    r = await put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": {}}, If_Match=etag)
    assert r.status == 412, r.raw
    assert read_json(path) == {"numStartups": 2, "mcpServers": {}, "cliState": "new"}


async def test_corrupt_file_is_422_and_force_keeps_a_backup(srv: ServerThread) -> None:
    path = ws_of(srv, ".claude", "settings.json")
    os.makedirs(os.path.dirname(path))
    broken = b'{\n  "model": "sonnet",\n  "hooks": {,}\n}\n'
    with open(path, "wb") as f:
        f.write(broken)
    for endpoint in ("/api/v1/settings", "/api/v1/settings/hooks", "/api/v1/settings?scope=effective"):
        r = await srv.request("GET", endpoint)
        assert r.status == 422, (endpoint, r.raw)
        assert r.error_code == "settings_file_invalid"
        details = r.body["error"]["details"]
        assert details["path"] == ".claude/settings.json" and details["line"] == 3 and details["column"] == 13
    r = await put(srv, "/api/v1/settings/hooks", {"hooks": {}})
    assert r.status == 422 and r.error_code == "settings_file_invalid"
    assert open(path, "rb").read() == broken
    r = await put(srv, "/api/v1/settings/hooks?force=true", {"hooks": {}})
    assert r.status == 200, r.raw
    backup = r.body["backup"]
    assert backup.startswith(".claude/settings.json.bak-")
    assert open(ws_of(srv, backup), "rb").read() == broken
    assert read_json(path) == {"hooks": {}}

    # ~/.claude.json that is valid JSON but whose project entry is not an object: 422; force replaces only that.
    claude_json = home_of(srv, ".claude.json")
    write_json(claude_json, {"numStartups": 3, "projects": {srv.workspace: "oops"}}, mode=0o600)
    assert (await srv.request("GET", "/api/v1/settings/mcp?scope=user")).status == 200  # the user part is fine
    r = await srv.request("GET", "/api/v1/settings/mcp?scope=local")
    assert r.status == 422 and r.error_code == "settings_file_invalid"
    r = await put(srv, "/api/v1/settings/mcp?scope=local&force=true", {"mcpServers": {"x": {"command": "x"}}})
    assert r.status == 200, r.raw
    assert read_json(claude_json) == {
        "numStartups": 3,
        "projects": {srv.workspace: {"mcpServers": {"x": {"command": "x"}}}},
    }
    assert stat.S_IMODE(os.stat(home_of(srv, r.body["backup"][2:])).st_mode) == 0o600  # secrets stay private

    # Not an object at the top.
    write_json(home_of(srv, ".claude", "settings.json"), [1, 2])
    r = await srv.request("GET", "/api/v1/settings?scope=user")
    assert r.status == 422 and r.body["error"]["details"]["line"] == 1


async def test_effective_view_merges_user_project_local(srv: ServerThread) -> None:
    write_json(home_of(srv, ".claude", "settings.json"), {"model": "haiku", "permissions": {"allow": ["Read"]},
               "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "user"}]}]}})  # fmt: skip
    write_json(ws_of(srv, ".claude", "settings.json"), {"model": "sonnet", "permissions": {"allow": ["Bash"]},
               "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "project"}]}]}})  # fmt: skip
    write_json(ws_of(srv, ".claude", "settings.local.json"), {"permissions": {"allow": ["Read"], "deny": ["Edit"]}})
    r = await srv.request("GET", "/api/v1/settings?scope=effective")
    assert r.status == 200, r.raw
    assert r.body["settings"] == {
        "model": "sonnet",
        "permissions": {"allow": ["Read", "Bash"], "deny": ["Edit"]},
        "hooks": {
            "Stop": [
                {"hooks": [{"type": "command", "command": "user"}]},
                {"hooks": [{"type": "command", "command": "project"}]},
            ]
        },
    }
    assert [s["scope"] for s in r.body["sources"]] == ["user", "project", "local"]
    assert r.body["path"] is None and r.body["exists"] is True
    hooks = await srv.request("GET", "/api/v1/settings/hooks?scope=effective")
    assert len(hooks.body["hooks"]["Stop"]) == 2

    write_json(home_of(srv, ".claude.json"), {"mcpServers": {"a": {"command": "user-a"}, "b": {"command": "user-b"}},
               "projects": {srv.workspace: {"mcpServers": {"a": {"command": "local-a"}}}}})  # fmt: skip
    write_json(ws_of(srv, ".mcp.json"), {"mcpServers": {"b": {"command": "project-b"}, "c": {"command": "project-c"}}})
    r = await srv.request("GET", "/api/v1/settings/mcp?scope=effective")
    assert r.body["mcpServers"] == {
        "a": {"command": "local-a"},
        "b": {"command": "project-b"},
        "c": {"command": "project-c"},
    }

    for path, part in (("/api/v1/settings", "settings"), ("/api/v1/settings/mcp", "mcpServers")):
        r = await put(srv, f"{path}?scope=effective", {part: {}})
        assert r.status == 400 and r.error_code == "scope_read_only"


async def test_claude_dir_is_created_and_a_symlink_out_of_the_workspace_refused(srv: ServerThread) -> None:
    r = await put(srv, "/api/v1/settings/hooks?scope=local", {"hooks": {}})
    assert r.status == 200 and os.path.isdir(ws_of(srv, ".claude"))
    r = await put(srv, "/api/v1/settings?scope=user", {"settings": {}})
    assert r.status == 200 and os.path.isfile(home_of(srv, ".claude", "settings.json"))
    shutil.rmtree(ws_of(srv, ".claude"))
    outside = tempfile.mkdtemp(prefix="outside-")
    try:
        os.symlink(outside, ws_of(srv, ".claude"))
        for method in ("GET", "PUT"):
            r = await srv.request(method, "/api/v1/settings", {"settings": {}} if method == "PUT" else None)
            assert r.status == 403 and r.error_code == "path_outside_workspace"
        assert os.listdir(outside) == []
    finally:
        shutil.rmtree(outside)


async def test_a_home_dotfile_symlink_is_written_through(srv: ServerThread) -> None:
    """Dotfile managers link ~/.claude.json elsewhere: the link stays, its target gets the change."""
    target = home_of(srv, "dotfiles", "claude.json")
    write_json(target, {"keep": 1}, mode=0o600)
    os.symlink(target, home_of(srv, ".claude.json"))
    assert (await put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": {"s": {"command": "s"}}})).status == 200
    assert os.path.islink(home_of(srv, ".claude.json"))
    assert read_json(target) == {"keep": 1, "mcpServers": {"s": {"command": "s"}}}


async def test_the_watcher_reports_project_settings_changes(srv: ServerThread) -> None:
    events = await EventStream.open(srv)
    try:
        assert (await put(srv, "/api/v1/settings?scope=project", {"settings": {"model": "opus"}})).status == 200
        assert (await put(srv, "/api/v1/settings/mcp?scope=project", {"mcpServers": {}})).status == 200
        seen: set[str] = set()
        for _ in range(200):
            event = await events.next(30)
            assert event is not None, events.seen
            if event.get("path") in (".claude/settings.json", ".mcp.json"):
                seen.add(event["path"])
            if seen == {".claude/settings.json", ".mcp.json"}:
                break
        assert seen == {".claude/settings.json", ".mcp.json"}
    finally:
        events.ws.close()


def test_claude_config_dir_moves_user_files(tmp_path: Any) -> None:
    """CLAUDE_CONFIG_DIR holds both settings.json and .claude.json (what the 2.1.197 CLI does with it)."""

    async def run(fn: Any, *args: Any) -> Any:
        return fn(*args)

    workspace = str(tmp_path / "ws")
    os.makedirs(workspace)
    config_dir = str(tmp_path / "cfg")
    service = SettingsService(workspace, str(tmp_path / "home"), run, {"CLAUDE_CONFIG_DIR": config_dir})
    assert service.location("user", "settings").file == os.path.join(config_dir, "settings.json")
    assert service.location("user", "mcpServers").file == os.path.join(config_dir, ".claude.json")
    assert service.location("local", "mcpServers").keys == ("projects", workspace, "mcpServers")
    answer, _ = asyncio.run(service.write("user", "hooks", {"Stop": []}, Conditions()))
    assert answer["path"] == os.path.join(config_dir, "settings.json")  # outside the home: shown absolute
    assert read_json(os.path.join(config_dir, "settings.json")) == {"hooks": {"Stop": []}}


async def test_an_empty_scope_is_refused(srv: ServerThread) -> None:
    for path in ("/api/v1/settings?scope=", "/api/v1/settings/mcp?scope=EFFECTIVE"):
        r = await srv.request("GET", path)
        assert r.status == 400 and r.error_code == "invalid_parameter", r.raw


async def test_parallel_writes_to_one_file_all_land(srv: ServerThread) -> None:
    """Local and user MCP servers share ~/.claude.json: concurrent PUTs to both parts lose nothing."""
    write_json(home_of(srv, ".claude.json"), {"numStartups": 7}, mode=0o600)
    puts = []
    for n in range(8):
        puts.append(put(srv, "/api/v1/settings/mcp?scope=user", {"mcpServers": {f"user{n}": {"command": "u"}}}))
        puts.append(put(srv, "/api/v1/settings/mcp?scope=local", {"mcpServers": {f"local{n}": {"command": "l"}}}))
    answers = await asyncio.gather(*puts)
    assert all(r.status == 200 for r in answers), [r.raw for r in answers if r.status != 200]
    data = read_json(home_of(srv, ".claude.json"))
    # Each part holds one of its writes (the last to land); the other part and the other state survived.
    assert data["numStartups"] == 7
    assert len(data["mcpServers"]) == 1 and next(iter(data["mcpServers"])).startswith("user")
    local = data["projects"][srv.workspace]["mcpServers"]
    assert len(local) == 1 and next(iter(local)).startswith("local")


async def test_absurd_nesting_is_refused_with_its_path(srv: ServerThread) -> None:
    deep: Any = "leaf"
    for _ in range(70):
        deep = {"x": deep}
    r = await put(srv, "/api/v1/settings", {"settings": {"futureKey": deep}})
    assert r.status == 400 and r.error_code == "invalid_settings"
    assert r.body["error"]["details"]["path"].startswith("$.settings.futureKey.x.x")
    assert not os.path.exists(ws_of(srv, ".claude"))


def test_home_flag_and_variable(tmp_path: Any) -> None:
    from wsruntime_ext.config import parse_config

    workspace = str(tmp_path)
    flag = parse_config(["--workspace", workspace, "--home", "rel/home"], environ={})
    assert flag.home == os.path.abspath("rel/home") and flag.home_dir == flag.home
    variable = parse_config(["--workspace", workspace], environ={"WSRUNTIME_HOME": "/srv/agent-home"})
    assert variable.home_dir == "/srv/agent-home"
    default = parse_config(["--workspace", workspace], environ={})
    assert default.home is None and default.home_dir == os.path.expanduser("~")
