"""CLI versions without starting Node: an npm install's package.json, else a ``--version`` the endpoints wait for.

The fakes: an npm-style install (``lib/node_modules/@fake/cli`` with its
package.json, and ``bin/fakecli`` a symlink to its script) whose script would
sleep 3 s and print a wrong version if it ever ran, leaving a mark; and a
plain script with no package that takes a moment to print its version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import ServerPool, ServerThread
from wsruntime_ext.versions import npm_package_version, package_root

AGENT_FLAGS = ("--claude-bin", "--codex-bin", "--gemini-bin", "--qwen-bin", "--opencode-bin")


def write(path: str, text: str, mode: int = 0o644) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def npm_install(prefix: str, version: str = "3.4.5", name: str = "@fake/cli", folder: str | None = None) -> str:
    """A global-npm-like install of ``name`` under ``prefix``; returns the ``bin/fakecli`` symlink."""
    package = os.path.join(prefix, "lib", "node_modules", *(folder or name).split("/"))
    mark = os.path.join(prefix, "ran")
    write(os.path.join(package, "bin", "cli.js"), f"#!/bin/sh\necho ran >> {mark}\nsleep 3\necho 9.9.9\n", 0o755)
    manifest = {"name": name, "version": version, "bin": {"fakecli": "./bin/cli.js"}}
    write(os.path.join(package, "package.json"), json.dumps(manifest))
    link = os.path.join(prefix, "bin", "fakecli")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(os.path.join(package, "bin", "cli.js"), os.path.dirname(link)), link)
    return link


def slow_script(folder: str, version: str, delay: float) -> str:
    """An executable with no package that answers ``--version`` after ``delay`` seconds."""
    return write(os.path.join(folder, "slow-cli"), f"#!/bin/sh\nsleep {delay}\necho 'slow-cli {version}'\n", 0o755)


def start(servers: ServerPool, cli: str, missing: str) -> ServerThread:
    """A fresh runtime whose OpenSpec CLI and Claude Code are ``cli``; the other agents are not installed."""
    agents = [arg for flag in AGENT_FLAGS[1:] for arg in (flag, missing)]
    return servers.fresh("--watch", "off", "--openspec-bin", cli, "--claude-bin", cli, *agents)


async def timed(server: ServerThread, path: str) -> tuple[float, Any]:
    started = time.monotonic()
    response = await server.request("GET", path)
    assert response.status == 200, response.raw
    return time.monotonic() - started, response.body


def openspec_path(server: ServerThread) -> str:
    return f"/api/v1/workspaces/{server.config.workspace_id}/openspec"


# -- over HTTP ---------------------------------------------------------------------------------


async def test_an_npm_install_is_known_from_the_first_answer_without_running_it(
    servers: ServerPool, tmp_path: Any
) -> None:
    prefix = os.fspath(tmp_path)
    cli = npm_install(prefix)
    server = start(servers, cli, os.path.join(prefix, "missing"))
    try:
        _, state = await timed(server, openspec_path(server))
        assert state["cli"] == {"available": True, "version": "3.4.5"}
        _, body = await timed(server, "/api/v1/agents")
        claude = body["agents"][0]
        assert claude["name"] == "claude-code"
        assert (claude["available"], claude["version"], claude["path"]) == (True, "3.4.5", cli)
        assert all(a["available"] is False and "detecting" not in a for a in body["agents"][1:])
        _, health = await timed(server, "/health")
        assert health["openspec"]["cli"] == {"available": True, "version": "3.4.5", "path": cli}
        assert health["agents"]["claude-code"]["version"] == "3.4.5"
        assert not os.path.exists(os.path.join(prefix, "ran"))  # never started
    finally:
        server.stop()


async def test_an_upgraded_npm_install_is_seen(servers: ServerPool, tmp_path: Any) -> None:
    prefix = os.fspath(tmp_path)
    cli = npm_install(prefix, "3.4.5")
    server = start(servers, cli, os.path.join(prefix, "missing"))
    try:
        _, state = await timed(server, openspec_path(server))
        assert state["cli"]["version"] == "3.4.5"
    finally:
        server.stop()
    npm_install(prefix, "3.5.0")  # npm rewrites the package: a new package.json, the bin file written again
    os.utime(os.path.realpath(cli))
    server = start(servers, cli, os.path.join(prefix, "missing"))
    try:
        _, state = await timed(server, openspec_path(server))
        assert state["cli"] == {"available": True, "version": "3.5.0"}
        _, body = await timed(server, "/api/v1/agents")
        assert body["agents"][0]["version"] == "3.5.0"
    finally:
        server.stop()
    assert not os.path.exists(os.path.join(prefix, "ran"))


async def test_a_cli_without_a_package_is_probed_and_the_endpoints_wait_for_it(
    servers: ServerPool, tmp_path: Any
) -> None:
    folder = os.fspath(tmp_path)
    cli = slow_script(folder, "2.0.1", 1.5)
    server = start(servers, cli, os.path.join(folder, "missing"))
    try:
        _, health = await timed(server, "/health")  # liveness never waits for a probe: still detecting
        assert health["openspec"]["cli"] == {"available": False, "version": None, "path": None, "detecting": True}
        assert health["agents"]["claude-code"]["detecting"] is True
        _, state = await timed(server, openspec_path(server))
        assert state["cli"] == {"available": True, "version": "2.0.1"}  # waited: no "detecting"
        _, body = await timed(server, "/api/v1/agents")
        assert body["agents"][0]["version"] == "2.0.1" and "detecting" not in body["agents"][0]
        _, health = await timed(server, "/health")
        assert health["openspec"]["cli"] == {"available": True, "version": "2.0.1", "path": cli}
        assert "detecting" not in health["agents"]["claude-code"]
    finally:
        server.stop()


async def test_the_wait_for_a_probe_is_bounded(servers: ServerPool, tmp_path: Any) -> None:
    folder = os.fspath(tmp_path)
    cli = slow_script(folder, "2.0.2", 2.0)
    server = start(servers, cli, os.path.join(folder, "missing"))
    try:
        assert server.runtime is not None
        server.runtime.ctx.openspec.detection_wait_s = 0.2
        server.runtime.ctx.agents.detection_wait_s = 0.2
        _, state = await timed(server, openspec_path(server))
        assert state["cli"] == {"available": False, "version": None, "detecting": True}  # did not wait 2 s
        _, body = await timed(server, "/api/v1/agents")
        assert body["agents"][0]["detecting"] is True and body["agents"][0]["available"] is False
        server.runtime.ctx.openspec.detection_wait_s = 30
        _, state = await timed(server, openspec_path(server))
        assert state["cli"] == {"available": True, "version": "2.0.2"}
    finally:
        server.stop()


# -- reading package.json ----------------------------------------------------------------------


def test_the_package_root_is_the_innermost_node_modules_package() -> None:
    assert package_root("/u/lib/node_modules/@a/b/bin/x.js") == ("/u/lib/node_modules/@a/b", "@a/b")
    assert package_root("/u/lib/node_modules/b/x.js") == ("/u/lib/node_modules/b", "b")
    assert package_root("/u/node_modules/a/node_modules/@s/c/bin/c") == ("/u/node_modules/a/node_modules/@s/c", "@s/c")
    assert package_root("/u/lib/node_modules/b") is None
    assert package_root("/u/lib/node_modules/@a/b") is None
    assert package_root("/usr/bin/git") is None


def test_only_the_package_that_owns_the_file_tells_its_version(tmp_path: Any) -> None:
    prefix = os.fspath(tmp_path)
    cli = npm_install(prefix)
    assert npm_package_version(cli) == "3.4.5"
    package = os.path.dirname(os.path.dirname(os.path.realpath(cli)))
    manifest_path = os.path.join(package, "package.json")

    def manifest(**changes: Any) -> None:
        data = {"name": "@fake/cli", "version": "3.4.5", "bin": {"fakecli": "./bin/cli.js"}, **changes}
        write(manifest_path, json.dumps({k: v for k, v in data.items() if v is not None}))

    manifest(bin="bin/cli.js")  # a string bin: the command is the package's name
    assert npm_package_version(cli) == "3.4.5"
    manifest(bin={"other": "bin/other.js"})  # the file is not one of its commands
    assert npm_package_version(cli) is None
    manifest(bin=None)
    assert npm_package_version(cli) is None
    manifest(name="@fake/other")  # another package's name (an npm alias): not plainly this package
    assert npm_package_version(cli) is None
    manifest(version="latest")
    assert npm_package_version(cli) is None
    manifest(version="1.2.3-beta.4+build.5")
    assert npm_package_version(cli) == "1.2.3-beta.4+build.5"
    write(manifest_path, "{not json")
    assert npm_package_version(cli) is None
    manifest()
    # A package.json without a name below the root only sets its folder's module type: skipped.
    write(os.path.join(package, "bin", "package.json"), '{"type": "module"}')
    assert npm_package_version(cli) == "3.4.5"
    # A named one below the root is another package: this file is not plainly the root's.
    write(os.path.join(package, "bin", "package.json"), '{"name": "inner", "version": "0.0.1"}')
    assert npm_package_version(cli) is None
    os.remove(os.path.join(package, "bin", "package.json"))
    # Above the package root nothing counts: the package has no manifest of its own.
    os.remove(manifest_path)
    above = json.dumps({"name": "@fake/cli", "version": "1.0.0", "bin": {"fakecli": "./bin/cli.js"}})
    write(os.path.join(prefix, "lib", "node_modules", "@fake", "package.json"), above)
    write(os.path.join(prefix, "lib", "package.json"), above)
    assert npm_package_version(cli) is None


def test_a_file_outside_node_modules_or_without_its_interpreter_is_probed(tmp_path: Any) -> None:
    folder = os.fspath(tmp_path)
    script = write(os.path.join(folder, "tool", "bin", "tool.js"), "#!/usr/bin/env node\n", 0o755)
    write(os.path.join(folder, "tool", "package.json"), '{"name": "tool", "version": "1.0.0", "bin": "bin/tool.js"}')
    assert npm_package_version(script) is None  # not an npm install: a source tree's package.json may lie
    prefix = os.path.join(folder, "npm")
    cli = npm_install(prefix, name="nodeless")
    for shebang, found in [
        ("#!/usr/bin/env wsrt-no-such-interpreter\n", False),
        ("#!/usr/bin/env -S sh -e\n", True),
        ("#!/no/such/node\n", False),
        ("#!/bin/sh\n", True),
        ("\x7fELF", True),
    ]:
        write(os.path.realpath(cli), shebang, 0o755)
        assert (npm_package_version(cli) is not None) is found, shebang


# -- the installed CLIs: package.json against their own --version ------------------------------------

REAL_CLIS = ["claude", "openspec", "codex", "gemini", "qwen", "opencode"]
_VERSION = re.compile(r"\d+\.\d+[0-9A-Za-z.+-]*")


@pytest.mark.parametrize("binary", REAL_CLIS)
def test_an_installed_clis_package_version_is_what_it_prints(binary: str, tmp_path: Any) -> None:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    version = npm_package_version(path)
    if version is None:
        pytest.skip(f"{binary} is not an npm install: it is probed")
    home = os.fspath(tmp_path)
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": home, "NO_COLOR": "1", "OPENSPEC_TELEMETRY": "0"}
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, env=env, cwd=home)
    printed = _VERSION.findall(done.stdout)
    assert done.returncode == 0 and printed, done.stdout + done.stderr
    assert printed[-1] == version
