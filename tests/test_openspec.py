"""OpenSpec: the reader and the endpoint against the real CLI's recorded output, the cache, and the actions.

Every fixture of ``tests/fixtures/openspec/`` (copied from the research, with the
CLI 1.13.2's JSON) is copied to a temp dir with its recorded mtimes, then compared
field by field after normalising the root path: the reader's CLI-shaped output in
full, and the endpoint's own fields mapped back onto the CLI's.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agents_support import wait_status
from tests.conftest import ServerPool, ServerThread
from tests.openspec_support import (
    FIXTURES,
    copy_fixture,
    expected,
    make_home,
    normalize,
    openspec_bin,
    pin_config_home,
    write_global_config,
)
from wsruntime_ext.openspec.profile import ALL_WORKFLOWS, CORE_WORKFLOWS, read_profile
from wsruntime_ext.openspec.reader import locale_key, parse_tasks, read_workspace, requirement_count
from wsruntime_ext.openspec.yamlish import YamlError, parse

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_agent.py")
EVERY_WORKFLOW = {"profile": "custom", "workflows": list(ALL_WORKFLOWS)}


def start_server(servers: ServerPool, fixture: str, *args: str, config: Any = None) -> ServerThread:
    """A server of its own on a copy of ``fixture`` with a fresh ``--home`` (``config``: its global OpenSpec config)."""
    base = tempfile.mkdtemp(prefix=f"openspec-{fixture}-", dir=servers.base)
    home = make_home(base, config)
    server = servers.fresh("--home", home, *args, workspace=copy_fixture(fixture, base))
    pin_config_home(server, home)
    return server


def test_there_are_six_fixtures() -> None:
    assert FIXTURES == [
        "active-changes",
        "archived-specs",
        "empty-init",
        "invalid-change",
        "legacy-layout",
        "no-openspec",
    ]


# -- the reader against the recorded CLI output --------------------------------------------


@pytest.mark.parametrize("fixture", FIXTURES)
def test_reader_equals_the_recorded_cli(fixture: str, tmp_path: Any) -> None:
    root = copy_fixture(fixture, str(tmp_path))
    state = read_workspace(root)
    assert normalize(state["list"], root) == expected(fixture, "list.json")
    assert normalize(state["specs"], root) == expected(fixture, "list--specs.json")
    assert normalize(state["status"], root) == expected(fixture, "status--all.json")
    by_name = sorted(state["list"]["changes"], key=lambda c: locale_key(c["name"]))
    assert [c["name"] for c in by_name] == [c["name"] for c in expected(fixture, "list--sort-name.json")["changes"]]
    applied = 0
    for name, apply in state["apply"].items():
        recorded = expected(fixture, f"instructions-apply--{name}.json")
        assert apply["state"] == recorded["state"], name
        assert apply["progress"] == recorded["progress"], name
        assert apply.get("missingArtifacts") == recorded.get("missingArtifacts"), name
        applied += 1
    loadable = [c for c in expected(fixture, "status--all.json")["changes"] if "status" not in c]
    assert applied == len(loadable)
    names = {s["name"] for s in expected(fixture, "schemas.json")}
    assert set(state["schemas"]) == names


# -- the endpoint against the recorded CLI output --------------------------------------------


@pytest.fixture(scope="module")
def fixture_servers(servers: ServerPool) -> Iterator[dict[str, ServerThread]]:
    """One server per fixture, each with a fresh HOME: the core profile."""
    started = {name: start_server(servers, name, "--watch", "off") for name in FIXTURES}
    yield started
    for server in started.values():
        server.stop()


async def get_state(server: ServerThread) -> dict[str, Any]:
    response = await server.request("GET", f"/api/v1/workspaces/{server.config.workspace_id}/openspec")
    assert response.status == 200, response.raw
    return dict(response.body)


async def detected_state(server: ServerThread, timeout: float = 60) -> dict[str, Any]:
    """The state once the background ``openspec --version`` has answered."""
    deadline = time.monotonic() + timeout
    while True:
        state = await get_state(server)
        if not state["cli"].get("detecting"):
            return state
        assert time.monotonic() < deadline, "openspec --version never finished"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_endpoint_equals_the_recorded_cli(fixture: str, fixture_servers: dict[str, ServerThread]) -> None:
    server = fixture_servers[fixture]
    state = await get_state(server)
    listed = expected(fixture, "list.json")
    statuses = {c["changeName"]: c for c in expected(fixture, "status--all.json")["changes"]}
    assert state["initialized"] == (listed["root"] is not None)
    assert state["root"] == ("openspec" if state["initialized"] else None)
    # list: order (recent first), tasks, status, last modified, nested folders
    assert [c["name"] for c in state["changes"]] == [c["name"] for c in listed["changes"]]
    for change, cli in zip(state["changes"], listed["changes"]):
        assert change["tasks"] == {"completed": cli["completedTasks"], "total": cli["totalTasks"]}
        assert change["status"] == cli["status"]
        assert change["last_modified"] == cli["lastModified"]
        assert change.get("nested") == cli.get("nested")
    assert state["warnings"] == listed.get("warnings", [])
    # status --all: schema, artifacts in build order with their status and paths, next steps, load errors
    for change in state["changes"]:
        status = statuses.get(change["name"])
        if status is None:
            continue
        if "status" in status:
            assert change["error"] == {"code": status["status"][0]["code"], "message": status["status"][0]["message"]}
            assert [a["id"] for a in change["actions"]] == ["explore"]
            continue
        assert change["error"] is None
        assert change["schema"] == status["schemaName"]
        assert change["planning_complete"] == status["isPlanningComplete"]
        assert change["next_steps"] == status["nextSteps"]
        assert [(a["id"], a["status"], a["requires"], a.get("missing_deps")) for a in change["artifacts"]] == [
            (a["id"], a["status"], a["requires"], a.get("missingDeps")) for a in status["artifacts"]
        ]
        for artifact in change["artifacts"]:
            paths = status["artifactPaths"][artifact["id"]]
            assert "<ROOT>/" + artifact["path"] == paths["resolvedOutputPath"]
            assert ["<ROOT>/" + f for f in artifact["files"]] == paths["existingOutputPaths"]
        apply = expected(fixture, f"instructions-apply--{change['name']}.json")
        assert change["apply_state"] == apply["state"]
        assert change.get("missing_artifacts") == apply.get("missingArtifacts")
    # list --specs
    specs = expected(fixture, "list--specs.json")["specs"]
    assert [(s["name"], s["requirements"]) for s in state["specs"]] == [(s["id"], s["requirementCount"]) for s in specs]
    assert all(s["path"] == f"openspec/specs/{s['name']}/spec.md" for s in state["specs"])


async def test_the_active_changes_actions(fixture_servers: dict[str, ServerThread]) -> None:
    state = await get_state(fixture_servers["active-changes"])
    actions = {c["name"]: [a["id"] for a in c["actions"]] for c in state["changes"]}
    assert actions == {  # the core profile: no continue, verify
        "refactor-storage": ["explore", "apply", "update"],  # specs skipped, no design needed: 0/2 tasks
        "fix-export-encoding": ["explore", "update", "sync", "archive"],  # 3/3 done, design missing
        "improve-search": ["explore"],  # scaffold only: nothing done to update
        "add-dark-mode": ["explore", "update"],  # proposal only
        "add-note-tags": ["explore", "apply", "update", "sync"],  # 4/8
    }
    apply = next(
        a for c in state["changes"] if c["name"] == "add-note-tags" for a in c["actions"] if a["id"] == "apply"
    )
    assert apply == {"id": "apply", "command": "/opsx:apply add-note-tags", "kind": "slash", "installed": False}
    assert [a["id"] for a in state["actions"]] == ["propose", "explore"]
    propose = state["actions"][0]
    assert propose["command"] == "/opsx:propose" and propose["needs"] == ["description"]
    assert state["archived"] == []


async def test_archived_changes_and_project_schema(fixture_servers: dict[str, ServerThread]) -> None:
    state = await get_state(fixture_servers["archived-specs"])
    assert state["archived"] == [
        {"name": "2026-11-28-add-notes-core", "change": "add-notes-core", "date": "2026-11-28"},
        {"name": "2026-11-28-add-note-sharing", "change": "add-note-sharing", "date": "2026-11-28"},
    ]
    assert state["schemas"] == ["rfc-lite", "spec-driven"]
    (change,) = state["changes"]
    assert change["schema"] == "rfc-lite"
    assert [a["id"] for a in change["artifacts"]] == ["brief", "checklist"]


async def test_without_openspec_only_init_is_offered(fixture_servers: dict[str, ServerThread]) -> None:
    state = await get_state(fixture_servers["no-openspec"])
    assert state["initialized"] is False and state["root"] is None
    assert state["changes"] == [] and state["specs"] == []
    assert state["actions"] == [
        {"id": "init", "command": "openspec init --tools claude", "kind": "cli", "installed": True}
    ]


async def test_empty_workspace_offers_propose_and_explore(fixture_servers: dict[str, ServerThread]) -> None:
    state = await get_state(fixture_servers["empty-init"])
    assert [a["id"] for a in state["actions"]] == ["propose", "explore"]  # onboard is not in the core profile


async def test_legacy_layout_is_read(fixture_servers: dict[str, ServerThread]) -> None:
    state = await get_state(fixture_servers["legacy-layout"])
    assert state["legacy"] is True and state["schema"] == "spec-driven"
    assert [a["change"] for a in state["archived"]] == ["add-notes-api"]


# -- the cache ----------------------------------------------------------------------------------


async def test_a_repeated_call_reads_nothing_and_a_change_is_seen(servers: ServerPool) -> None:
    server = start_server(servers, "active-changes", "--watch", "off")
    try:
        service = server.runtime.ctx.openspec  # type: ignore[union-attr]
        first = await get_state(server)
        reads = service.reads
        for _ in range(5):
            assert await get_state(server) == first
        assert service.reads == reads  # served from the cache: nothing was read or parsed again
        tasks = os.path.join(server.workspace, "openspec", "changes", "add-note-tags", "tasks.md")
        with open(tasks, "a", encoding="utf-8") as f:
            f.write("- [x] 3.1 One more, done\n")
        changed = await get_state(server)
        assert service.reads == reads + 1
        note_tags = next(c for c in changed["changes"] if c["name"] == "add-note-tags")
        assert note_tags["tasks"] == {"completed": 5, "total": 9}
        assert changed["changes"][0]["name"] == "add-note-tags"  # now the most recently modified
        # a new change folder appears without any file in it
        os.mkdir(os.path.join(server.workspace, "openspec", "changes", "brand-new"))
        names = [c["name"] for c in (await get_state(server))["changes"]]
        assert "brand-new" in names
    finally:
        server.stop()


# -- actions ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_server(servers: ServerPool) -> Iterator[ServerThread]:
    """active-changes with the fake agent, under a custom profile of all twelve workflows."""
    args = ("--claude-bin", FAKE, "--openspec-bin", "/nonexistent/openspec")
    server = start_server(servers, "active-changes", *args, config=EVERY_WORKFLOW)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core_server(servers: ServerPool) -> Iterator[ServerThread]:
    """active-changes with the fake agent and a fresh HOME: the core profile."""
    server = start_server(servers, "active-changes", "--claude-bin", FAKE, "--openspec-bin", "/nonexistent/openspec")
    yield server
    server.stop()


async def post_action(server: ServerThread, action: str, body: Any = None) -> Any:
    path = f"/api/v1/workspaces/{server.config.workspace_id}/openspec/actions/{action}"
    return await server.request("POST", path, body)


async def test_apply_starts_an_agent_session_with_the_slash_command(agent_server: ServerThread) -> None:
    response = await post_action(agent_server, "apply", {"change": "add-note-tags"})
    assert response.status == 201, response.raw
    session = response.body
    assert session["agent"] == "claude-code" and session["prompt"] == "/opsx:apply add-note-tags"
    done = await wait_status(agent_server, session["id"], "completed", "idle", "failed")
    assert done["result"] == "echo: /opsx:apply add-note-tags"  # what the agent received
    listed = await agent_server.request("GET", "/api/v1/agent-sessions")
    assert session["id"] in [s["id"] for s in listed.body["sessions"]]


async def test_propose_sends_the_description(agent_server: ServerThread) -> None:
    response = await post_action(agent_server, "propose", {"input": "add dark mode"})
    assert response.status == 201, response.raw
    assert response.body["prompt"] == "/opsx:propose add dark mode"
    done = await wait_status(agent_server, response.body["id"], "completed", "idle", "failed")
    assert done["result"] == "echo: /opsx:propose add dark mode"


async def test_explore_takes_a_change_or_nothing(agent_server: ServerThread) -> None:
    on_change = await post_action(agent_server, "explore", {"change": "add-dark-mode", "input": "colours?"})
    assert on_change.status == 201 and on_change.body["prompt"] == "/opsx:explore add-dark-mode colours?"
    alone = await post_action(agent_server, "explore")
    assert alone.status == 201 and alone.body["prompt"] == "/opsx:explore"
    for r in (on_change, alone):
        await wait_status(agent_server, r.body["id"], "completed", "idle", "failed")


@pytest.mark.parametrize(
    ("action", "body", "status", "code"),
    [
        ("deploy", {}, 400, "unknown_action"),
        ("apply", {}, 400, "invalid_field"),  # apply needs a change
        ("apply", {"change": 5}, 400, "invalid_field"),
        ("apply", {"change": "../x"}, 400, "invalid_field"),
        ("apply", {"change": "no-such-change"}, 404, "change_not_found"),
        ("apply", {"change": "add-dark-mode"}, 409, "action_not_available"),  # no tasks.md yet
        ("archive", {"change": "add-note-tags"}, 409, "action_not_available"),  # 4 of 8 done
        ("continue", {"change": "refactor-storage"}, 409, "action_not_available"),  # planning complete
        ("sync", {"change": "refactor-storage"}, 409, "action_not_available"),  # specs skipped
        ("onboard", {}, 409, "action_not_available"),  # there are changes
        ("bulk-archive", {}, 409, "action_not_available"),  # one complete change only
        ("propose", {}, 400, "invalid_field"),  # needs the description
        ("new", {"input": "   "}, 400, "invalid_field"),
        ("propose", {"input": "x", "change": "add-dark-mode"}, 400, "invalid_field"),  # not a change action
        ("init", {}, 409, "action_not_available"),  # initialised already
    ],
)
async def test_actions_that_do_not_apply_are_refused(
    agent_server: ServerThread, action: str, body: Any, status: int, code: str
) -> None:
    before = await agent_server.request("GET", "/api/v1/agent-sessions")
    response = await post_action(agent_server, action, body)
    assert response.status == status, response.raw
    assert response.error_code == code
    if status == 409:
        assert response.body["error"]["message"]  # the reason
    after = await agent_server.request("GET", "/api/v1/agent-sessions")
    assert len(after.body["sessions"]) == len(before.body["sessions"])  # nothing was started


async def test_reasons_say_why(agent_server: ServerThread) -> None:
    r = await post_action(agent_server, "archive", {"change": "add-note-tags"})
    assert "4 of 8" in r.body["error"]["message"]
    r = await post_action(agent_server, "apply", {"change": "add-dark-mode"})
    assert "tasks" in r.body["error"]["message"]


async def assert_documented(server: ServerThread, state: dict[str, Any]) -> None:
    """``state`` is valid under ``/openapi.json``'s OpenSpecState."""
    jsonschema = pytest.importorskip("jsonschema")  # a test extra (pyproject); the bare CPython runs lack it
    document = (await server.request("GET", "/openapi.json")).body
    schema = {"$ref": "#/components/schemas/OpenSpecState", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(state)


# -- profiles -----------------------------------------------------------------------------------


async def test_a_fresh_home_is_the_core_profile(core_server: ServerThread) -> None:
    state = await get_state(core_server)
    home = core_server.config.home
    assert home is not None
    assert state["profile"] == {
        "name": "core",
        "workflows": ["propose", "explore", "apply", "update", "sync", "archive"],
        "source": "default",
        "config_path": os.path.join(home, ".config", "openspec", "config.json"),
        "warning": None,
    }
    offered = {a["id"] for a in state["actions"]} | {a["id"] for c in state["changes"] for a in c["actions"]}
    assert offered == set(CORE_WORKFLOWS)  # each core workflow applies somewhere here, and nothing else
    await assert_documented(core_server, state)


async def test_update_is_offered_once_an_artifact_is_done(core_server: ServerThread) -> None:
    state = await get_state(core_server)
    for change in state["changes"]:
        done = any(a["status"] == "done" for a in change["artifacts"])
        ids = [a["id"] for a in change["actions"]]
        assert ("update" in ids) is done, change["name"]
    dark_mode = next(c for c in state["changes"] if c["name"] == "add-dark-mode")
    update = next(a for a in dark_mode["actions"] if a["id"] == "update")
    assert update == {"id": "update", "command": "/opsx:update add-dark-mode", "kind": "slash", "installed": False}


async def test_update_starts_the_slash_command_with_the_revision(core_server: ServerThread) -> None:
    response = await post_action(core_server, "update", {"change": "add-dark-mode", "input": "drop the toggle"})
    assert response.status == 201, response.raw
    assert response.body["agent"] == "claude-code"
    assert response.body["prompt"] == "/opsx:update add-dark-mode drop the toggle"
    done = await wait_status(core_server, response.body["id"], "completed", "idle", "failed")
    assert done["result"] == "echo: /opsx:update add-dark-mode drop the toggle"  # what the agent received
    alone = await post_action(core_server, "update", {"change": "add-note-tags"})  # the revision is optional
    assert alone.status == 201 and alone.body["prompt"] == "/opsx:update add-note-tags"
    await wait_status(core_server, alone.body["id"], "completed", "idle", "failed")


@pytest.mark.parametrize(
    ("action", "body", "status", "code"),
    [
        ("update", {"change": "improve-search"}, 409, "action_not_available"),  # no artifact done
        ("update", {}, 400, "invalid_field"),  # update needs a change
        ("update", {"change": "no-such-change"}, 404, "change_not_found"),
        ("ff", {"input": "add-x"}, 409, "action_not_available"),  # not in the core profile
        ("ff", {}, 409, "action_not_available"),  # not in the profile comes before the missing input
        ("new", {"input": "add-x"}, 409, "action_not_available"),
        ("continue", {"change": "add-dark-mode"}, 409, "action_not_available"),  # it would apply under custom
        ("verify", {"change": "add-note-tags"}, 409, "action_not_available"),
        ("onboard", {}, 409, "action_not_available"),
        ("bulk-archive", {}, 409, "action_not_available"),
    ],
)
async def test_core_refuses_what_it_does_not_have(
    core_server: ServerThread, action: str, body: Any, status: int, code: str
) -> None:
    before = await core_server.request("GET", "/api/v1/agent-sessions")
    response = await post_action(core_server, action, body)
    assert response.status == status, response.raw
    assert response.error_code == code
    if action != "update":
        assert "not in the core profile" in response.body["error"]["message"]
        assert response.body["error"]["details"] == {"action": action, "profile": "core"}
    after = await core_server.request("GET", "/api/v1/agent-sessions")
    assert len(after.body["sessions"]) == len(before.body["sessions"])


async def test_all_twelve_under_a_custom_profile_of_all(agent_server: ServerThread) -> None:
    state = await get_state(agent_server)
    assert state["profile"]["name"] == "custom" and state["profile"]["workflows"] == list(ALL_WORKFLOWS)
    actions = {c["name"]: [a["id"] for a in c["actions"]] for c in state["changes"]}
    assert actions == {
        "refactor-storage": ["explore", "apply", "update", "verify"],
        "fix-export-encoding": ["explore", "continue", "update", "verify", "sync", "archive"],
        "improve-search": ["explore", "continue"],
        "add-dark-mode": ["explore", "continue", "update"],
        "add-note-tags": ["explore", "apply", "update", "verify", "sync"],
    }
    assert [a["id"] for a in state["actions"]] == ["propose", "explore", "new", "ff"]


async def test_a_custom_subset_under_xdg_config_home(servers: ServerPool, tmp_path: Any) -> None:
    """``$XDG_CONFIG_HOME`` (as agent sessions see it) wins over ``~/.config``; archive brings sync in."""
    server = start_server(servers, "active-changes", "--claude-bin", FAKE, config=EVERY_WORKFLOW)  # ~/.config
    try:
        xdg = str(tmp_path / "xdg")
        path = write_global_config(xdg, {"profile": "custom", "workflows": ["new", "archive", "verify", "bogus"]})
        server.runtime.ctx.agents.env_overrides = {"XDG_CONFIG_HOME": xdg}  # type: ignore[union-attr]
        state = await get_state(server)
        assert state["profile"] == {
            "name": "custom",
            "workflows": ["new", "sync", "archive", "verify"],
            "source": path,
            "config_path": path,
            "warning": None,
        }
        assert [a["id"] for a in state["actions"]] == ["new"]
        actions = {c["name"]: [a["id"] for a in c["actions"]] for c in state["changes"]}
        assert actions == {
            "refactor-storage": ["verify"],
            "fix-export-encoding": ["verify", "sync", "archive"],
            "improve-search": [],
            "add-dark-mode": [],
            "add-note-tags": ["verify", "sync"],
        }
        for action, body in (("propose", {"input": "x"}), ("explore", {}), ("update", {"change": "add-dark-mode"})):
            r = await post_action(server, action, body)
            assert r.status == 409 and r.error_code == "action_not_available", r.raw
            assert "custom profile" in r.body["error"]["message"] and path in r.body["error"]["message"]
        await assert_documented(server, state)
        r = await post_action(server, "new", {"input": "add-search-filters"})
        assert r.status == 201 and r.body["prompt"] == "/opsx:new add-search-filters"
        await wait_status(server, r.body["id"], "completed", "idle", "failed")
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("config", "warning"),
    [
        ('{"profile": "custom", "workflows": [', "Invalid JSON"),
        ("\ufeff{}", "Invalid JSON"),  # JSON.parse refuses a BOM too
        ('{"profile": "custom", "workflows": [NaN]}', "Invalid JSON"),
        ('["profile", "custom"]', "not a JSON object"),
        ('{"profile": "custom", "workflows": "ff"}', "not a list"),
        ('{"profile": "expanded", "workflows": ["ff"]}', "Unknown profile"),
    ],
)
def test_an_unusable_global_config_is_core_with_a_warning(tmp_path: Any, config: str, warning: str) -> None:
    path = write_global_config(str(tmp_path), config)
    profile = read_profile(path)
    assert (profile.name, profile.workflows, profile.source) == ("core", CORE_WORKFLOWS, "default")
    assert profile.warning is not None and warning in profile.warning and path in profile.warning


def test_global_config_rules(tmp_path: Any) -> None:
    path = str(tmp_path / "openspec" / "config.json")
    assert read_profile(path).view() == {
        "name": "core",
        "workflows": list(CORE_WORKFLOWS),
        "source": "default",
        "config_path": path,
        "warning": None,
    }
    os.makedirs(path)  # a folder where the file should be
    assert "Cannot read" in (read_profile(path).warning or "")
    os.rmdir(path)
    for config, name, workflows, source in [
        ({"telemetry": {"enabled": False}}, "core", CORE_WORKFLOWS, "default"),  # no profile: the default
        ({"profile": "core", "workflows": ["ff"]}, "core", CORE_WORKFLOWS, path),  # core ignores the list
        ({"profile": "custom"}, "custom", (), path),  # no list: nothing (the CLI installs nothing)
        ({"profile": "custom", "workflows": ["bulk-archive", 3, None]}, "custom", ("sync", "bulk-archive"), path),
        ({"profile": "custom", "workflows": ["sync", "ff", "ff"]}, "custom", ("ff", "sync"), path),
    ]:
        write_global_config(str(tmp_path), config)
        profile = read_profile(path)
        assert (profile.name, profile.workflows, profile.source, profile.warning) == (name, workflows, source, None)


async def test_a_corrupt_global_config_is_core_and_says_so(servers: ServerPool) -> None:
    server = start_server(servers, "active-changes", config='{"profile": "custom", "workflows": [')
    try:
        state = await get_state(server)
        profile = state["profile"]
        assert profile["name"] == "core" and profile["workflows"] == list(CORE_WORKFLOWS)
        assert profile["source"] == "default"
        assert profile["warning"].startswith(f"Invalid JSON in {profile['config_path']}")
        assert [a["id"] for a in state["actions"]] == ["propose", "explore"]
        await assert_documented(server, state)
    finally:
        server.stop()


async def test_a_change_to_the_global_config_is_seen_through_the_cache(servers: ServerPool) -> None:
    server = start_server(servers, "active-changes", "--watch", "off")
    try:
        service = server.runtime.ctx.openspec  # type: ignore[union-attr]
        config_home = os.path.join(str(server.config.home), ".config")
        old = time.time() - 3600  # settled: the cache keeps the answer
        write_global_config(config_home, {"profile": "custom", "workflows": ["explore"]}, old)
        assert (await get_state(server))["profile"]["workflows"] == ["explore"]
        reads = service.reads
        assert (await get_state(server))["profile"]["workflows"] == ["explore"]
        assert service.reads == reads  # cached
        write_global_config(config_home, {"profile": "custom", "workflows": ["onboard"]}, old - 60)
        state = await get_state(server)
        assert state["profile"]["workflows"] == ["onboard"] and service.reads == reads + 1
        assert state["actions"] == [] and all(c["actions"] == [] for c in state["changes"])  # onboard: changes exist
        os.remove(os.path.join(config_home, "openspec", "config.json"))
        assert (await get_state(server))["profile"]["name"] == "core"
    finally:
        server.stop()


async def test_unknown_workspace_is_404(agent_server: ServerThread) -> None:
    r = await agent_server.request("GET", "/api/v1/workspaces/other/openspec")
    assert r.status == 404 and r.error_code == "workspace_not_found"
    r = await agent_server.request("POST", "/api/v1/workspaces/other/openspec/actions/apply", {"change": "x"})
    assert r.status == 404 and r.error_code == "workspace_not_found"


async def test_init_without_the_cli_is_422(servers: ServerPool) -> None:
    server = servers.fresh("--openspec-bin", "/nonexistent/openspec")
    try:
        state = await detected_state(server)
        assert state["cli"] == {"available": False, "version": None}
        r = await post_action(server, "init")
        assert r.status == 422 and r.error_code == "openspec_cli_unavailable"
        assert not os.path.exists(os.path.join(server.workspace, "openspec"))
        r = await post_action(server, "propose", {"input": "x"})
        assert r.status == 409 and r.error_code == "action_not_available"
    finally:
        server.stop()


@pytest.mark.skipif(openspec_bin() is None, reason="the openspec CLI is not installed (.ci/run installs it)")
async def test_init_runs_the_real_cli(servers: ServerPool, tmp_path: Any) -> None:
    server = servers.fresh()
    try:
        home = str(tmp_path / "home")
        os.makedirs(home)
        server.runtime.ctx.openspec.env_overrides = {  # type: ignore[union-attr]
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        }
        state = await detected_state(server)
        assert state["cli"] == {"available": True, "version": "1.13.2"}
        r = await post_action(server, "init")
        assert r.status == 201, r.raw
        assert r.body["initialized"] is True and isinstance(r.body["output"], str)
        state = await get_state(server)
        assert state["initialized"] is True and state["schema"] == "spec-driven"
        assert set(state["installed"]) >= {"propose", "explore", "apply", "archive", "sync"}
        assert all(a["installed"] for a in state["actions"] if a["id"] in ("propose", "explore"))
        r = await post_action(server, "init")
        assert r.status == 409
    finally:
        server.stop()


async def test_cli_version_is_detected_in_the_background(servers: ServerPool) -> None:
    server = servers.fresh()
    try:
        first = await asyncio.wait_for(get_state(server), 60)  # the first answer already knows the CLI
        assert set(first["cli"]) == {"available", "version"}
        assert first["cli"]["available"] is (openspec_bin() is not None)
    finally:
        server.stop()


# -- the pieces ----------------------------------------------------------------------------------


def test_task_line_forms() -> None:
    text = "\n".join(
        [
            "- [ ] a",
            "- [x] b",
            "- [X] c",
            "* [x] d",
            "+ [x] e",
            "1. [ ] f",
            "1) [x] g",
            "\t  - [x] nested",
            "- [ x ] spaced",
            "- [] empty box",
            "- [~] tilde",
            "- [-] dash",
            "-[x] tight",
            "- [x]done",
            "- [x]",
            "- [ ](./x)",
            "- [Design notes](./d.md)",
            "- [A](url)",
            "- [1](./one)",
            "- [WIP] x",
            "1234567890. [ ] too long",
            "> - [x] quoted",
            "- plain bullet",
            "\ufeff- [x] after a BOM",
            "- [x] crlf\r",
        ]
    )
    tasks = parse_tasks(text)
    assert len(tasks) == 18
    assert [t.done for t in tasks] == [
        False, True, True, True, True, False, True, True, True, False, False, False, True, True, True, False,
        True, True,
    ]  # fmt: skip
    assert tasks[-1].description == "crlf" and tasks[14].description == ""


def test_requirement_count_rules() -> None:
    spec = "# x\n## Purpose\nWhy.\n## Requirements\n### Requirement: A\n```\n### not a header\n```\n### Notes\n"
    assert requirement_count(spec) == 2
    assert requirement_count("## Requirements\n### Requirement: A\n") == 0  # no Purpose
    assert requirement_count("## Purpose\n\n## Requirements\n### A\n") == 0  # empty Purpose
    assert requirement_count("## purpose\ntext\n## REQUIREMENTS\n### A\n#### S\n### B\n") == 2


def test_yaml_subset() -> None:
    assert parse("schema: spec-driven\ncreated: 2026-11-28\nskip_specs: true\n") == {
        "schema": "spec-driven",
        "created": "2026-11-28",  # a string, as in YAML 1.2 (not a date)
        "skip_specs": True,
    }
    doc = parse(
        "name: x  # comment\nversion: 1\nartifacts:\n  - id: a\n    generates: 'a.md'\n    requires: []\n"
        '  - id: b\n    generates: "specs/**/*.md"\n    requires:\n      - a\n    instruction: |\n'
        "      line one\n\n      line two\napply:\n  requires: [b]\n  tracks: null\n"
    )
    assert doc == {
        "name": "x",
        "version": 1,
        "artifacts": [
            {"id": "a", "generates": "a.md", "requires": []},
            {"id": "b", "generates": "specs/**/*.md", "requires": ["a"], "instruction": "line one\n\nline two\n"},
        ],
        "apply": {"requires": ["b"], "tracks": None},
    }
    assert parse("") is None and parse("# only a comment\n") is None
    assert parse("a: >-\n  folded\n  text\n") == {"a": "folded text"}
    for bad in ("a: 1\na: 2\n", "a: &x 1\n", "a: [1, 2\n", "\tschema: x\n"):
        with pytest.raises(YamlError):
            parse(bad)
