"""Helpers for the git tests: real repositories, a git environment of their own, servers on them.

Every git the tests run — their own, and the server's children — gets an
environment with a private HOME (its .gitconfig sets an identity and
nothing else), no system config, and none of the caller's ``GIT_*``
variables, so a developer's global hooks, signing or pull settings never
leak in and a runner with no identity at all still works.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from tests.conftest import Response, ServerPool, ServerThread

WORKSPACE_ID = "ws"
AUTHOR = ("Test Author", "author@example.com")

_HOME = tempfile.mkdtemp(prefix="wsruntime-git-home-")
with open(os.path.join(_HOME, ".gitconfig"), "w", encoding="utf-8") as _f:
    _f.write(
        f"[user]\n\tname = {AUTHOR[0]}\n\temail = {AUTHOR[1]}\n"
        "[init]\n\tdefaultBranch = main\n"
        "[commit]\n\tgpgsign = false\n"
        '[protocol "file"]\n\tallow = always\n'
    )


def git_env(home: str = _HOME, **extra: str) -> dict[str, str]:
    """The environment for git in tests: ``home``'s config only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    env.update(extra)
    return env


GIT_ENV = git_env()


def git(
    cwd: str, *args: str, input: bytes | None = None, check: bool = True, env: Mapping[str, str] | None = None
) -> str:
    """Run git in a test repository; its stdout as text."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=dict(env or GIT_ENV), input=input, capture_output=True, timeout=60
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode("utf-8", "surrogateescape")


def write(root: str, rel: str, content: str | bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)


def read(root: str, rel: str) -> str:
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        return f.read()


def make_repo(path: str, files: Mapping[str, str] | None = None, message: str = "initial") -> str:
    """A repository at ``path`` (created), with ``files`` committed when given."""
    os.makedirs(path, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    if files:
        for rel, content in files.items():
            write(path, rel, content)
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", message)
    return path


def commit_file(repo: str, rel: str, content: str, message: str) -> str:
    write(repo, rel, content)
    git(repo, "add", "--", rel)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@contextlib.contextmanager
def git_server(servers: ServerPool, workspace: str, env: Mapping[str, str] | None = None) -> Iterator[ServerThread]:
    """A server of its own on ``workspace``, its git children running with the tests' environment."""
    server = servers.fresh("--workspace-id", WORKSPACE_ID, workspace=workspace)
    try:
        assert server.runtime is not None
        server.runtime.ctx.git.runner.set_base_env(env or GIT_ENV)
        yield server
    finally:
        server.stop()


async def vc(server: ServerThread, method: str, endpoint: str, body: Any = None, **kwargs: Any) -> Response:
    """A request to ``/api/v1/workspaces/ws/version-control/<endpoint>``."""
    return await server.request(
        method, f"/api/v1/workspaces/{WORKSPACE_ID}/version-control/{endpoint}", body=body, **kwargs
    )


def paths_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A status answer's files by path."""
    return {f["path"]: f for f in status["files"]}
