"""Scripts (API.md "Scripts"): discovery from every source and real runs with npm, make and shell scripts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from tests.conftest import ServerPool, ServerThread
from wsruntime_ext.procs import ProcessRegistry, _alive
from wsruntime_ext.scripts.discovery import make_targets, package_scripts, parse_make_database

MAKEFILE = """\
VAR = 1
OBJ := thing.o
.PHONY: build test lint
all: build
build:
\t@echo make-build
test: build
\t@echo make-test
lint:
\t@echo lint
%.o: %.c
\tcc -c $<
$(OBJ):
\t@echo obj
out/file.txt:
\t@mkdir -p out && touch $@
.SUFFIXES:
with-var: VAR = 2
with-var:
\t@echo $(VAR)
"""

PACKAGE_JSON = {
    "name": "demo",
    "version": "1.0.0",
    "scripts": {
        "build": "node -e \"console.log('npm-build')\"",
        "argv": 'node -e "console.log(JSON.stringify(process.argv.slice(1)))"',
        "fail": "node -e \"console.error('it broke'); process.exit(7)\"",
    },
}

CUSTOM = {
    "hello": {"command": ["sh", "-c", 'echo "hello $GREETING from $(pwd)"'], "cwd": "sub", "env": {"GREETING": "hi"}},
    "lint": {"command": ["true"], "description": "does nothing"},
}

SCRIPTS = {
    "fail.sh": "#!/bin/sh\necho to-stdout\necho to-stderr >&2\nexit 3\n",
    "args.sh": '#!/bin/sh\nfor a in "$@"; do printf \'<%s>\\n\' "$a"; done\n',
    "slow.sh": "#!/bin/sh\nfor i in 1 2 3 4 5 6; do echo line-$i; sleep 0.3; done\n",
    "wait-file.sh": '#!/bin/sh\necho first\nwhile [ ! -e "$1" ]; do sleep 0.05; done\necho second\n',
    # A child in its own session whose parent exits at once (re-parented away from the script), then a sleep.
    "escape.sh": '#!/bin/sh\n(setsid sh -c \'echo $$ > "$1"; exec sleep 1000\' sh "$1" & )\n'
    "echo started\nexec sleep 1000\n",
    "big.sh": "#!/bin/sh\nexec python3 -c \"import sys\nline = 'x' * 1023 + '\\\\n'\nfor _ in range(int(sys.argv[1])): "
    'sys.stdout.write(line)" "$1"\n',
}


def write(path: str, text: str, mode: int | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)


def populate(workspace: str) -> None:
    write(os.path.join(workspace, "package.json"), json.dumps(PACKAGE_JSON))
    write(os.path.join(workspace, "Makefile"), MAKEFILE)
    for name, text in SCRIPTS.items():
        write(os.path.join(workspace, "scripts", name), text, 0o755)
    write(os.path.join(workspace, "scripts", "not-executable.sh"), "#!/bin/sh\n", 0o644)
    write(os.path.join(workspace, ".wsruntime", "scripts.json"), json.dumps(CUSTOM))
    os.makedirs(os.path.join(workspace, "sub"), exist_ok=True)


@pytest.fixture(scope="module")
def home() -> Iterator[str]:
    """A temp HOME (and npm cache) for everything the scripts start: the machine's own is never touched."""
    path = tempfile.mkdtemp(prefix="scripts-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ws_server(servers: ServerPool) -> Iterator[ServerThread]:
    workspace = tempfile.mkdtemp(prefix="ws-scripts-", dir=servers.base)
    populate(workspace)
    server = servers.fresh("--max-runs", "4", workspace=workspace)
    yield server
    server.stop()


def env_for(home: str, **extra: str) -> dict[str, str]:
    return {
        "HOME": home,
        "npm_config_cache": os.path.join(home, "npm-cache"),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        **extra,
    }


async def run_and_wait(server: ServerThread, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await server.request("POST", f"/api/v1/scripts/{name}/run?wait=true", body=body or {}, timeout=90)
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


async def wait_ended(server: ServerThread, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await server.request("GET", f"/api/v1/scripts/runs/{run_id}")).body
        if body["status"] != "running":
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end")


async def read_stream(
    ws: tornado.websocket.WebSocketClientConnection, limit: int | None = None
) -> list[dict[str, Any]]:
    """Frames until the socket closes (or ``limit`` frames)."""
    frames: list[dict[str, Any]] = []
    while limit is None or len(frames) < limit:
        message = await asyncio.wait_for(ws.read_message(), 60)  # type: ignore[arg-type]
        if message is None:
            break
        frames.append(json.loads(message))
    return frames


async def wait_for_file(path: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
            if text:
                return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


# -- discovery ----------------------------------------------------------------------------


async def test_discovery_lists_every_source(ws_server: ServerThread) -> None:
    r = await ws_server.request("GET", "/api/v1/scripts")
    assert r.status == 200
    listed = {s["name"]: s for s in r.body["scripts"]}
    assert r.body["problems"] == []
    assert listed["npm:build"] == {
        "name": "npm:build",
        "source": "package.json",
        "command": ["npm", "run", "build"],
        "description": PACKAGE_JSON["scripts"]["build"],  # type: ignore[index]
        "manager": "npm",
    }
    makes = sorted(n for n in listed if n.startswith("make:"))
    # Real targets only: no pattern rule, no .PHONY/.SUFFIXES, no variables; a $(VAR) target is expanded.
    assert makes == [
        "make:all",
        "make:build",
        "make:lint",
        "make:out/file.txt",
        "make:test",
        "make:thing.o",
        "make:with-var",
    ]
    assert listed["make:test"]["command"] == ["make", "test"]  # as API.md shows it: no -f
    assert listed["make:build"] == {"name": "make:build", "source": "Makefile", "command": ["make", "build"]}
    assert sorted(n for n in listed if n.startswith("scripts:")) == [f"scripts:{n}" for n in sorted(SCRIPTS)]
    assert listed["scripts:fail.sh"]["command"] == ["scripts/fail.sh"]
    assert listed["custom:hello"]["cwd"] == "sub" and listed["custom:lint"]["description"] == "does nothing"


def test_lock_files_name_the_package_manager(tmp_path: Any) -> None:
    workspace = os.fspath(tmp_path)
    write(os.path.join(workspace, "package.json"), json.dumps({"scripts": {"dev": "vite"}}))
    assert package_scripts(workspace)[0][0].command == ["npm", "run", "dev"]
    for lock, manager in [
        ("package-lock.json", "npm"),
        ("bun.lockb", "bun"),
        ("yarn.lock", "yarn"),
        ("pnpm-lock.yaml", "pnpm"),
    ]:
        write(os.path.join(workspace, lock), "")
        (script,), problems = package_scripts(workspace)
        assert (script.name, script.command, script.manager, problems) == (
            "npm:dev",
            [manager, "run", "dev"],
            manager,
            [],
        )
    # npm needs "--" before arguments; the others take them as they are.
    assert script.argv(["--x"]) == ["pnpm", "run", "dev", "--x"]
    # A name that starts with "-" is read by every one of them as an option (npm ran nothing and succeeded).
    write(os.path.join(workspace, "package.json"), json.dumps({"scripts": {"-rf": "echo dash", "ok": "echo ok"}}))
    scripts, problems = package_scripts(workspace)
    assert [s.name for s in scripts] == ["npm:ok"]
    assert [(p["source"], "'-rf'" in p["message"]) for p in problems] == [("package.json", True)]


def test_make_database_parsing() -> None:
    text = "\n".join(
        [
            "# Variables",
            "all: not-in-files-section",
            "# Files",
            "# Not a target:",
            "Makefile:",
            "",
            "build: dep",
            "#  Phony target",
            "\techo hi",
            ".PHONY: build",
            "dir/out.o:",
            "double::",
            "x := 1",
            "# Finished Make data base",
            "after: nothing",
        ]
    )
    assert parse_make_database(text) == ["build", "dir/out.o", "double"]


async def test_make_missing_or_broken_is_a_problem(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = os.fspath(tmp_path)
    write(os.path.join(workspace, "Makefile"), "build:\n\techo hi\nifeq (\n")
    scripts, problems = await make_targets(workspace, ProcessRegistry())
    assert scripts == [] and problems[0]["source"] == "Makefile"
    write(os.path.join(workspace, "Makefile"), "build:\n\techo hi\n")
    scripts, problems = await make_targets(workspace, ProcessRegistry())
    assert [s.name for s in scripts] == ["make:build"] and problems == []
    monkeypatch.setenv("PATH", os.fspath(tmp_path))  # no make here
    scripts, problems = await make_targets(workspace, ProcessRegistry())
    assert scripts == [] and "make is not available" in problems[0]["message"]


async def test_a_makefile_linked_outside_the_workspace_is_not_read(tmp_path: Any) -> None:
    """make would follow the link: its targets (and its errors, lines of that file) stay unread."""
    workspace = os.path.join(os.fspath(tmp_path), "ws")
    os.mkdir(workspace)
    outside = os.path.join(os.fspath(tmp_path), "secret.mk")
    write(outside, "leak-target:\n\techo hi\nsecret-line-that-is-not-make\n")
    os.symlink(outside, os.path.join(workspace, "Makefile"))
    scripts, problems = await make_targets(workspace, ProcessRegistry())
    assert scripts == [] and problems == [{"source": "Makefile", "message": "Makefile points outside the workspace"}]
    inside = os.path.join(workspace, "real.mk")
    write(inside, "inside:\n\techo hi\n")
    os.unlink(os.path.join(workspace, "Makefile"))
    os.symlink("real.mk", os.path.join(workspace, "Makefile"))  # a link that stays inside is fine
    scripts, problems = await make_targets(workspace, ProcessRegistry())
    assert [s.name for s in scripts] == ["make:inside"] and problems == []


def make_rule(target: str, text: str) -> str:
    return f"{target}:\n\t@echo {text} in $(notdir $(firstword $(MAKEFILE_LIST))) at $$(pwd)\n"


async def test_make_targets_are_those_of_the_makefile_make_picks_and_run_as_listed(servers: ServerPool) -> None:
    """GNUmakefile, then makefile, then Makefile (make's own order): the listing and plain ``make`` agree."""
    workspace = tempfile.mkdtemp(prefix="ws-makefiles-", dir=servers.base)
    write(os.path.join(workspace, "Makefile"), make_rule("build", "upper") + make_rule("only-upper", "upper"))
    write(os.path.join(workspace, "makefile"), make_rule("build", "lower") + make_rule("only-lower", "lower"))
    write(os.path.join(workspace, "GNUmakefile"), make_rule("build", "gnu") + make_rule("only-gnu", "gnu"))
    server = servers.fresh(workspace=workspace)

    async def makes() -> dict[str, Any]:
        r = await server.request("GET", "/api/v1/scripts")
        assert r.status == 200, r.raw
        return {s["name"]: s for s in r.body["scripts"] if s["source"] == "Makefile"}

    try:
        for picked, removed in [("gnu", "GNUmakefile"), ("lower", "makefile"), ("upper", None)]:
            listed = await makes()
            assert sorted(listed) == ["make:build", f"make:only-{picked}"], picked
            assert listed["make:build"]["command"] == ["make", "build"]
            done = await run_and_wait(server, "make:build")
            assert done["status"] == "succeeded" and done["command"] == ["make", "build"], done
            shown = {"gnu": "GNUmakefile", "lower": "makefile", "upper": "Makefile"}[picked]
            assert done["output"] == f"{picked} in {shown} at {os.path.realpath(workspace)}\n"  # the makefile's folder
            done = await run_and_wait(server, f"make:only-{picked}")
            assert done["status"] == "succeeded", done
            if removed is not None:
                os.unlink(os.path.join(workspace, removed))
        # A GNUmakefile make cannot read (a dangling link) hides the Makefile from make: from the listing too.
        os.symlink(os.path.join(workspace, "gone"), os.path.join(workspace, "GNUmakefile"))
        r = await server.request("GET", "/api/v1/scripts")
        assert [s for s in r.body["scripts"] if s["source"] == "Makefile"] == []
        assert [p["source"] for p in r.body["problems"]] == ["Makefile"]
        assert "GNUmakefile" in r.body["problems"][0]["message"]
        r = await server.request("POST", "/api/v1/scripts/make:build/run")
        assert r.status == 404 and r.error_code == "script_not_found"
    finally:
        server.stop()


async def test_make_targets_that_read_as_options_are_not_listed(tmp_path: Any) -> None:
    workspace = os.fspath(tmp_path)
    write(os.path.join(workspace, "Makefile"), "build:\n\t@echo hi\n-k:\n\t@echo dash\n")
    scripts, problems = await make_targets(workspace, ProcessRegistry())
    assert [(s.name, s.command) for s in scripts] == [("make:build", ["make", "build"])] and problems == []


async def test_malformed_manifests_are_problems_not_errors(servers: ServerPool) -> None:
    workspace = tempfile.mkdtemp(prefix="ws-bad-", dir=servers.base)
    write(os.path.join(workspace, "package.json"), '{"scripts": {"build": ')
    write(
        os.path.join(workspace, ".wsruntime", "scripts.json"),
        json.dumps(
            {
                "ok": {"command": ["true"]},
                "no-command": {"cwd": ""},
                "shell-string": {"command": "rm -rf /"},
                "escape": {"command": ["true"], "cwd": "../.."},
                "bad-env": {"command": ["true"], "env": {"A=B": "x"}},
            }
        ),
    )
    write(os.path.join(workspace, "scripts", "ok.sh"), "#!/bin/sh\necho ok\n", 0o755)
    server = servers.fresh(workspace=workspace)
    try:
        r = await server.request("GET", "/api/v1/scripts")
        assert r.status == 200
        assert sorted(s["name"] for s in r.body["scripts"]) == ["custom:ok", "scripts:ok.sh"]
        problems = r.body["problems"]
        assert [p["source"] for p in problems] == ["package.json"] + ["scripts.json"] * 4
        assert "not valid JSON" in problems[0]["message"]
        # A scripts.json that is no object at all, and a package.json whose scripts is no object.
        write(os.path.join(workspace, ".wsruntime", "scripts.json"), "[1, 2]")
        write(os.path.join(workspace, "package.json"), '{"scripts": ["build"]}')
        r = await server.request("GET", "/api/v1/scripts")
        assert r.status == 200 and [s["name"] for s in r.body["scripts"]] == ["scripts:ok.sh"]
        assert len(r.body["problems"]) == 2
        r = await server.request("POST", "/api/v1/scripts/custom:escape/run")
        assert r.status == 404 and r.error_code == "script_not_found"
    finally:
        server.stop()


# -- names --------------------------------------------------------------------------------


async def test_names_collisions_and_unknown(ws_server: ServerThread, home: str) -> None:
    r = await ws_server.request("POST", "/api/v1/scripts/build/run", body={"env": env_for(home)})
    assert r.status == 409 and r.error_code == "ambiguous_script"
    assert sorted(r.body["error"]["details"]["candidates"]) == ["make:build", "npm:build"]
    r = await ws_server.request("POST", "/api/v1/scripts/lint/run")
    assert r.status == 409 and sorted(r.body["error"]["details"]["candidates"]) == ["custom:lint", "make:lint"]
    for name in ("nope", "npm:nope", "make:nope", "scripts:not-executable.sh", "scripts:..%2f..%2fbin%2fsh"):
        r = await ws_server.request("POST", f"/api/v1/scripts/{name}/run")
        assert r.status == 404 and r.error_code == "script_not_found", name
    done = await run_and_wait(ws_server, "npm:build", {"env": env_for(home)})
    assert done["status"] == "succeeded" and done["exit_code"] == 0 and "npm-build" in done["output"]
    done = await run_and_wait(ws_server, "make:test")
    assert done["output"] == "make-build\nmake-test\n" and done["command"] == ["make", "test"]
    done = await run_and_wait(ws_server, "make:out%2Ffile.txt")
    assert done["status"] == "succeeded" and os.path.exists(os.path.join(ws_server.workspace, "out", "file.txt"))
    done = await run_and_wait(ws_server, "hello")  # bare and unique: custom:hello
    assert done["name"] == "custom:hello" and done["cwd"] == "sub"
    assert done["output"] == f"hello hi from {os.path.join(ws_server.workspace, 'sub')}\n"
    for path in ("/api/v1/scripts/runs/sr_nope", "/api/v1/scripts/runs/x"):
        assert (await ws_server.request("GET", path)).error_code == "run_not_found"
        assert (await ws_server.request("DELETE", path)).error_code == "run_not_found"
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await ws_server.websocket("/api/v1/ws/scripts/runs/sr_nope")
    assert refused.value.code == 404
    assert (await ws_server.request("GET", "/api/v1/ws/scripts/runs/sr_nope")).status == 404


# -- runs ---------------------------------------------------------------------------------


async def test_failing_script_exit_code_and_output(ws_server: ServerThread, home: str) -> None:
    done = await run_and_wait(ws_server, "fail.sh")
    assert done["status"] == "failed" and done["exit_code"] == 3 and done["signal"] is None
    assert "to-stdout\n" in done["output"] and "to-stderr\n" in done["output"]
    assert done["output_truncated"] is False and done["ended_at"] and done["pid"] is None
    done = await run_and_wait(ws_server, "npm:fail", {"env": env_for(home)})
    assert done["status"] == "failed" and done["exit_code"] == 7 and "it broke" in done["output"]


async def test_arguments_are_argv_never_a_shell(ws_server: ServerThread, home: str) -> None:
    hostile = ["; rm -rf ~", "$(touch pwned)", "`id`", "a b", "--help", "'\"", "*"]
    done = await run_and_wait(ws_server, "scripts:args.sh", {"args": hostile})
    assert done["output"] == "".join(f"<{a}>\n" for a in hostile)
    assert done["command"] == ["scripts/args.sh", *hostile]
    # npm runs its script through a shell of its own: it still gets each argument as one argv entry.
    done = await run_and_wait(ws_server, "npm:argv", {"args": hostile, "env": env_for(home)})
    assert done["status"] == "succeeded", done["output"]
    printed = [line for line in done["output"].splitlines() if line.startswith("[")]
    assert json.loads(printed[-1]) == hostile
    assert done["command"] == ["npm", "run", "argv", "--", *hostile]
    assert not os.path.exists(os.path.join(ws_server.workspace, "pwned"))
    assert os.path.isdir(home)


async def test_env_is_merged(ws_server: ServerThread) -> None:
    done = await run_and_wait(ws_server, "custom:hello", {"env": {"GREETING": "hey"}})
    assert done["output"].startswith("hello hey from")


async def test_bad_run_requests(ws_server: ServerThread) -> None:
    for body in [
        {"args": "a b"},
        {"args": [1]},
        {"args": ["a\x00b"]},
        {"env": {"A=B": "x"}},
        {"env": {"": "x"}},
        {"env": {"A": 1}},
        {"env": ["A"]},
        {"env": {"A": "x\x00"}},
        {"timeout_s": 0},
        {"timeout_s": -1},
        {"timeout_s": "10"},
        {"timeout_s": True},
        {"timeout_s": 10**9},
    ]:
        r = await ws_server.request("POST", "/api/v1/scripts/fail.sh/run", body=body)
        assert r.status == 400 and r.error_code == "invalid_field", body
    r = await ws_server.request("POST", "/api/v1/scripts/fail.sh/run?wait=maybe")
    assert r.status == 400
    for query in ("?status=bogus", "?status=", "?limit=", "?limit=0", "?limit=x"):
        r = await ws_server.request("GET", f"/api/v1/scripts/runs{query}")
        assert r.status == 400 and r.error_code == "invalid_parameter", query
    r = await ws_server.request("POST", "/api/v1/scripts/fail.sh/run?wait=")
    assert r.status == 400


async def test_timeout_kills_the_whole_tree(ws_server: ServerThread) -> None:
    pidfile = os.path.join(tempfile.mkdtemp(), "pid")
    done = await run_and_wait(ws_server, "escape.sh", {"args": [pidfile], "timeout_s": 3})
    assert done["status"] == "timed_out" and done["exit_code"] is None and done["signal"] in ("SIGTERM", "SIGKILL")
    assert "started" in done["output"]
    escaped = int(await wait_for_file(pidfile))
    assert not _alive(escaped), "a grandchild in its own session outlived the timeout"


async def test_cancel_kills_the_whole_tree(ws_server: ServerThread) -> None:
    pidfile = os.path.join(tempfile.mkdtemp(), "pid")
    r = await ws_server.request("POST", "/api/v1/scripts/escape.sh/run", body={"args": [pidfile]})
    assert r.status == 202 and r.body["status"] == "running" and r.body["run_id"].startswith("sr_")
    run_id, pid = r.body["run_id"], r.body["pid"]
    escaped = int(await wait_for_file(pidfile))
    await asyncio.sleep(1.5)  # the parent of `escaped` is long gone: only the runtime's memory links it to the run
    r = await ws_server.request("DELETE", f"/api/v1/scripts/runs/{run_id}")
    assert r.status == 200 and r.body["status"] == "cancelled"
    assert not _alive(pid) and not _alive(escaped)
    # Cancelling an ended run changes nothing.
    again = await ws_server.request("DELETE", f"/api/v1/scripts/runs/{run_id}")
    assert again.status == 200 and again.body["status"] == "cancelled" and again.body["ended_at"] == r.body["ended_at"]


async def test_background_leftovers_are_stopped_when_the_script_exits(ws_server: ServerThread) -> None:
    pidfile = os.path.join(tempfile.mkdtemp(), "pid")
    # custom entries take any argv: a script that starts a setsid daemon and exits 0 at once.
    workspace = ws_server.workspace
    write(
        os.path.join(workspace, "scripts", "daemon.sh"),
        '#!/bin/sh\nsetsid sh -c \'echo $$ > "$1"; exec sleep 1000\' "$0" "$1" >/dev/null 2>&1 &\n'
        'while [ ! -s "$1" ]; do sleep 0.05; done\nsleep 1\necho done\n',
        0o755,
    )
    try:
        done = await run_and_wait(ws_server, "daemon.sh", {"args": [pidfile]})
        assert done["status"] == "succeeded" and done["output"] == "done\n"
        assert not _alive(int(await wait_for_file(pidfile)))
    finally:
        os.unlink(os.path.join(workspace, "scripts", "daemon.sh"))


async def test_stream_replay_after_reconnect(ws_server: ServerThread, tmp_path: Any) -> None:
    gate = os.path.join(os.fspath(tmp_path), "gate")
    r = await ws_server.request("POST", "/api/v1/scripts/wait-file.sh/run", body={"args": [gate]})
    run_id = r.body["run_id"]
    ws = await ws_server.websocket(f"/api/v1/ws/scripts/runs/{run_id}")
    (first,) = await read_stream(ws, 1)
    assert first == {"type": "output", "seq": 1, "stream": "stdout", "data": "first\n"}
    ws.close()
    write(gate, "go")
    await wait_ended(ws_server, run_id)
    # Reconnect after seq 1: the rest, then exit, then close 1000.
    ws = await ws_server.websocket(f"/api/v1/ws/scripts/runs/{run_id}?after=1")
    frames = await read_stream(ws)
    assert frames == [
        {"type": "output", "seq": 2, "stream": "stdout", "data": "second\n"},
        {"type": "exit", "code": 0, "status": "succeeded", "signal": None},
    ]
    assert ws.close_code == 1000
    ws = await ws_server.websocket(f"/api/v1/ws/scripts/runs/{run_id}")
    assert [f.get("seq") for f in await read_stream(ws)] == [1, 2, None]


async def test_live_stream_in_order_and_hub_events(ws_server: ServerThread) -> None:
    events = await ws_server.websocket("/api/v1/ws")
    events.write_message(json.dumps({"type": "subscribe", "topics": ["script_run"]}))
    await asyncio.sleep(0.2)
    r = await ws_server.request("POST", "/api/v1/scripts/slow.sh/run")
    run_id = r.body["run_id"]
    ws = await ws_server.websocket(f"/api/v1/ws/scripts/runs/{run_id}")
    frames = await read_stream(ws)
    output = [f for f in frames if f["type"] == "output"]
    assert "".join(f["data"] for f in output) == "".join(f"line-{i}\n" for i in range(1, 7))
    assert [f["seq"] for f in output] == list(range(1, len(output) + 1))
    assert frames[-1] == {"type": "exit", "code": 0, "status": "succeeded", "signal": None}
    seen: list[tuple[str, Any, str]] = []
    while len(seen) < 2:
        message = await asyncio.wait_for(events.read_message(), 30)  # type: ignore[arg-type]
        assert message is not None
        event = json.loads(message)
        if event["type"] == "script_run" and event["run_id"] == run_id:
            seen.append((event["status"], event["exit_code"], event["name"]))
    assert seen == [("running", None, "scripts:slow.sh"), ("succeeded", 0, "scripts:slow.sh")]
    events.close()
    listed = (await ws_server.request("GET", "/api/v1/scripts/runs?limit=1000")).body["runs"]
    assert run_id in [run["run_id"] for run in listed]
    assert listed == sorted(listed, key=lambda run: (run["started_at"], run["run_id"]), reverse=True)
    ok = (await ws_server.request("GET", "/api/v1/scripts/runs?status=succeeded")).body["runs"]
    assert ok and all(run["status"] == "succeeded" for run in ok)


async def test_max_runs_answers_429(ws_server: ServerThread, tmp_path: Any) -> None:
    gate = os.path.join(os.fspath(tmp_path), "gate")
    started = []
    try:
        for _ in range(4):
            r = await ws_server.request("POST", "/api/v1/scripts/wait-file.sh/run", body={"args": [gate]})
            assert r.status == 202
            started.append(r.body["run_id"])
        r = await ws_server.request("POST", "/api/v1/scripts/wait-file.sh/run", body={"args": [gate]})
        assert r.status == 429 and r.error_code == "too_many_runs"
    finally:
        write(gate, "go")
        for run_id in started:
            assert (await wait_ended(ws_server, run_id))["status"] == "succeeded"


async def test_missing_package_manager_is_422(servers: ServerPool) -> None:
    if shutil.which("pnpm"):
        pytest.skip("pnpm is installed here")
    workspace = tempfile.mkdtemp(prefix="ws-pnpm-", dir=servers.base)
    write(os.path.join(workspace, "package.json"), json.dumps({"scripts": {"dev": "vite"}}))
    write(os.path.join(workspace, "pnpm-lock.yaml"), "lockfileVersion: '9.0'\n")
    server = servers.fresh(workspace=workspace)
    try:
        listed = (await server.request("GET", "/api/v1/scripts")).body["scripts"]
        assert listed == [
            {
                "name": "npm:dev",
                "source": "package.json",
                "command": ["pnpm", "run", "dev"],
                "description": "vite",
                "manager": "pnpm",
            }
        ]
        r = await server.request("POST", "/api/v1/scripts/dev/run")
        assert (
            r.status == 422
            and r.error_code == "command_unavailable"
            and r.body["error"]["details"]["command"] == "pnpm"
        )
        assert (await server.request("GET", "/api/v1/scripts/runs")).body["runs"] == []
    finally:
        server.stop()


async def test_runs_survive_a_restart(servers: ServerPool, tmp_path: Any) -> None:
    workspace = tempfile.mkdtemp(prefix="ws-restart-", dir=servers.base)
    populate(workspace)
    pidfile = os.path.join(os.fspath(tmp_path), "pid")
    server = servers.fresh(workspace=workspace)
    try:
        done = await run_and_wait(server, "fail.sh")
        r = await server.request("POST", "/api/v1/scripts/escape.sh/run", body={"args": [pidfile]})
        running = r.body["run_id"]
        escaped = int(await wait_for_file(pidfile))
    finally:
        server.stop()
    assert not _alive(escaped), "shutdown left a script's process running"
    server = servers.fresh(workspace=workspace)
    try:
        again = (await server.request("GET", f"/api/v1/scripts/runs/{done['run_id']}")).body
        assert again["status"] == "failed" and again["exit_code"] == 3 and again["output"] == done["output"]
        stopped = (await server.request("GET", f"/api/v1/scripts/runs/{running}")).body
        assert stopped["status"] == "interrupted" and "started" in stopped["output"]
        ws = await server.websocket(f"/api/v1/ws/scripts/runs/{done['run_id']}")
        frames = await read_stream(ws)
        assert frames[-1] == {"type": "exit", "code": 3, "status": "failed", "signal": None}
        assert "".join(f["data"] for f in frames[:-1]) == done["output"]
    finally:
        server.stop()


async def test_big_output_is_bounded_on_disk_and_streamed(servers: ServerPool) -> None:
    workspace = tempfile.mkdtemp(prefix="ws-big-", dir=servers.base)
    populate(workspace)
    server = servers.fresh("--script-output-limit", "2M", workspace=workspace)
    try:
        r = await server.request("POST", "/api/v1/scripts/big.sh/run", body={"args": ["8192"]})  # 8 MiB
        run_id = r.body["run_id"]
        done = await wait_ended(server, run_id)
        assert done["status"] == "succeeded" and done["output_bytes"] == 8 << 20
        assert done["output_dropped_bytes"] > 0
        kept = os.path.join(workspace, ".wsruntime", "script-runs", run_id)
        on_disk = sum(os.path.getsize(os.path.join(kept, n)) for n in os.listdir(kept) if n.startswith("out-"))
        assert on_disk <= (2 << 20) + (256 << 10)
        assert len(done["output"]) == 1 << 20 and done["output_truncated"] is True
        assert done["output"].endswith("x" * 1023 + "\n")
        ws = await server.websocket(f"/api/v1/ws/scripts/runs/{run_id}")
        frames = await read_stream(ws)
        assert frames[0]["type"] == "output_dropped" and frames[0]["next_seq"] > 1
        output = frames[1:-1]
        assert [f["seq"] for f in output] == list(range(frames[0]["next_seq"], done["last_seq"] + 1))
        assert frames[-1]["type"] == "exit"
    finally:
        server.stop()


async def test_a_waiting_client_that_leaves_does_not_stop_the_run(ws_server: ServerThread) -> None:
    with pytest.raises((ConnectionError, tornado.httpclient.HTTPClientError)):  # the client gives up: a timeout
        await ws_server.request("POST", "/api/v1/scripts/slow.sh/run?wait=true", timeout=0.5)
    runs = (await ws_server.request("GET", "/api/v1/scripts/runs?limit=1")).body["runs"]
    assert runs[0]["name"] == "scripts:slow.sh"
    done = await wait_ended(ws_server, runs[0]["run_id"])
    assert done["status"] == "succeeded" and done["output"].endswith("line-6\n")
