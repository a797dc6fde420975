"""CLI versions without starting Node: an npm install's package.json, else ``--version``.

The fake: an npm-style install (``lib/node_modules/@fake/cli`` with its
package.json, and ``bin/fakecli`` a symlink to its script) whose script would
sleep 3 s and print a wrong version if it ever ran, leaving a mark.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest

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
