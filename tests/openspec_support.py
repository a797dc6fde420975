"""Helpers for the OpenSpec tests: fixture copies with their recorded mtimes, normalisation, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

FIXTURES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "openspec")
FIXTURES = sorted(n for n in os.listdir(FIXTURES_DIR) if os.path.isdir(os.path.join(FIXTURES_DIR, n, "expected")))


def copy_fixture(name: str, parent: str) -> str:
    """A copy of fixture ``name`` at ``parent/name`` (without ``expected/``), every path at its recorded mtime."""
    source = os.path.join(FIXTURES_DIR, name)
    target = os.path.join(parent, name)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("expected"))
    for root, dirs, files in os.walk(target):
        for entry in dirs + files:
            os.chmod(os.path.join(root, entry), 0o755 if entry in dirs else 0o644)
    mtimes = expected(name, "mtimes.json")["mtimes_ms"]
    for rel in sorted(mtimes, key=lambda p: -p.count("/")):  # deepest first: touching a file moves its dir
        path = os.path.join(target, rel)
        if os.path.lexists(path):
            os.utime(path, ns=(mtimes[rel] * 1_000_000,) * 2, follow_symlinks=False)
    return os.path.realpath(target)


def expected(fixture: str, name: str) -> Any:
    with open(os.path.join(FIXTURES_DIR, fixture, "expected", name), encoding="utf-8") as f:
        return json.load(f)


def normalize(doc: Any, root: str) -> Any:
    """The workspace root (as given and its realpath) → ``<ROOT>`` in every string (NORMALISATION.md)."""
    roots = sorted({root.rstrip("/"), os.path.realpath(root).rstrip("/")}, key=len, reverse=True)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            for r in roots:
                value = value.replace(r, "<ROOT>")
        return value

    return walk(doc)


def make_home(parent: str, config: Any = None, name: str = "home") -> str:
    """A fresh HOME at ``parent/name``; with ``config``, ``~/.config/openspec/config.json`` holds it (a str as it
    is, anything else as JSON)."""
    home = os.path.join(parent, name)
    os.makedirs(home)
    if config is not None:
        write_global_config(os.path.join(home, ".config"), config)
    return home


def write_global_config(config_home: str, config: Any, mtime_s: float | None = None) -> str:
    """``config_home/openspec/config.json`` (the CLI's file under ``$XDG_CONFIG_HOME``), optionally at ``mtime_s``."""
    path = os.path.join(config_home, "openspec", "config.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(config if isinstance(config, str) else json.dumps(config, indent=2) + "\n")
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))
    return path


def pin_config_home(server: Any, home: str) -> None:
    """``XDG_CONFIG_HOME`` = ``home/.config`` for the server's agents and CLI, whatever the test process has."""
    server.runtime.ctx.agents.env_overrides = {"XDG_CONFIG_HOME": os.path.join(home, ".config")}


def openspec_bin() -> str | None:
    return shutil.which("openspec")


def cli_env(home: str) -> dict[str, str]:
    """What the oracle runs with (NORMALISATION.md): empty HOME and XDG dirs, no telemetry, UTC, a Latin locale."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "OPENSPEC_TELEMETRY": "0",
        "DO_NOT_TRACK": "1",
        "NO_COLOR": "1",
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "OPENSPEC_CONCURRENCY": "1",
    }


def run_cli(args: list[str], cwd: str, home: str, timeout: float = 120) -> tuple[int, Any]:
    """``openspec <args>`` in ``cwd``: (exit code, parsed stdout)."""
    done = subprocess.run(
        [openspec_bin() or "openspec", *args],
        cwd=cwd,
        env=cli_env(home),
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, json.loads(done.stdout.decode("utf-8"))
