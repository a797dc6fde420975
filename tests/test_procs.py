"""The subprocess registry: timeouts, bounded output, and killing whole trees (procs.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from wsruntime_ext import procs
from wsruntime_ext.procs import ProcessRegistry

# A child that starts a grandchild in its own process group and a great-grandchild that
# escapes into a new session (as Claude Code's Bash tool does), prints their pids, then waits.
TREE = r"""
import os, subprocess, sys, time
same = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print(same.pid, escaped.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    return procs._alive(pid)


async def test_run_captures_output_and_code(tmp_path: os.PathLike[str]) -> None:
    registry = ProcessRegistry()
    done = await registry.run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
        cwd=os.fspath(tmp_path),
    )
    assert (done.returncode, done.stdout, done.stderr, done.timed_out) == (3, b"out\n", b"err\n", False)
    assert not done.ok
    done = await registry.run(["cat"], cwd=os.fspath(tmp_path), input=b"through stdin")
    assert done.stdout == b"through stdin" and done.ok


async def test_run_missing_binary(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(FileNotFoundError):
        await ProcessRegistry().run(["definitely-not-a-binary-xyz"], cwd=os.fspath(tmp_path))


async def test_output_is_bounded(tmp_path: os.PathLike[str]) -> None:
    done = await ProcessRegistry().run(
        [sys.executable, "-c", "import sys; sys.stdout.write('x' * 1000000)"],
        cwd=os.fspath(tmp_path),
        output_limit=1000,
    )
    assert done.stdout == b"x" * 1000 and done.truncated


async def test_timeout_kills_the_whole_tree(tmp_path: os.PathLike[str]) -> None:
    registry = ProcessRegistry()
    script = TREE.replace(
        "print(same.pid, escaped.pid, flush=True)", "open('pids', 'w').write(f'{same.pid} {escaped.pid}')"
    )
    done = await registry.run([sys.executable, "-c", script], cwd=os.fspath(tmp_path), timeout=1.5)
    assert done.timed_out
    pids = [int(p) for p in open(os.path.join(os.fspath(tmp_path), "pids")).read().split()]
    assert len(pids) == 2
    for pid in pids:
        assert not alive(pid), pid
    assert not registry.running


async def test_kill_tree_reaches_escaped_descendants(tmp_path: os.PathLike[str]) -> None:
    registry = ProcessRegistry()
    managed = await registry.spawn([sys.executable, "-c", TREE], cwd=os.fspath(tmp_path))
    assert managed.proc.stdout is not None
    line = await asyncio.wait_for(managed.proc.stdout.readline(), 20)
    pids = [int(p) for p in line.split()]
    assert all(alive(p) for p in pids)
    # The escaped one is in another session: killing the process group alone would miss it.
    assert os.getsid(pids[1]) != os.getsid(managed.pid)
    code = await managed.kill_tree(grace=1.0)
    assert code != 0
    for pid in [managed.pid, *pids]:
        assert not alive(pid), pid
    await asyncio.sleep(0)
    assert managed not in registry.running


async def test_shutdown_stops_everything(tmp_path: os.PathLike[str]) -> None:
    registry = ProcessRegistry()
    children = [await registry.spawn(["sleep", "60"], cwd=os.fspath(tmp_path)) for _ in range(3)]
    await registry.shutdown(grace=0.5)
    for child in children:
        assert child.returncode is not None
        assert not alive(child.pid)


def test_descendants_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    """The /proc reader finds the same children as psutil (used where psutil cannot load)."""
    import subprocess

    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 10
        with_psutil: list[int] = []
        while time.monotonic() < deadline and not with_psutil:
            with_psutil = procs.descendants(parent.pid)
            time.sleep(0.05)
        monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
        assert sorted(procs.descendants(parent.pid)) == sorted(with_psutil)
        assert with_psutil
    finally:
        for pid in procs.descendants(parent.pid):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()


async def test_children_never_get_the_runtime_token(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSRUNTIME_TOKEN", "tok-secret-2")
    monkeypatch.setenv("WSRT_TEST_MARK", "inherited")
    registry = ProcessRegistry()
    show = [sys.executable, "-c", "import os; print(sorted(os.environ))"]
    inherited = await registry.run(show, cwd=os.fspath(tmp_path))
    given = await registry.run(show, cwd=os.fspath(tmp_path), env={"WSRUNTIME_TOKEN": "x", "PATH": os.defpath})
    assert b"WSRT_TEST_MARK" in inherited.stdout and b"WSRUNTIME_TOKEN" not in inherited.stdout
    assert b"PATH" in given.stdout and b"WSRUNTIME_TOKEN" not in given.stdout


def test_a_cli_version_is_probed_once_per_installed_file(tmp_path: os.PathLike[str]) -> None:
    root = os.fspath(tmp_path)
    calls = os.path.join(root, "calls")
    cli = os.path.join(root, "fake-cli")

    def install(version: str) -> None:
        with open(cli, "w") as f:
            f.write(f"#!/bin/sh\necho x >> {calls}\necho 'fake-cli {version}'\n")
        os.chmod(cli, 0o755)

    install("1.0.0")
    assert procs.version_output([cli, "--version"]) == (0, "fake-cli 1.0.0")
    assert procs.version_output([cli, "--version"]) == (0, "fake-cli 1.0.0")
    with open(calls) as f:
        assert len(f.readlines()) == 1  # the second answer came from the cache
    install("1.0.10")  # an upgrade: another file, probed again
    assert procs.version_output([cli, "--version"]) == (0, "fake-cli 1.0.10")
    with pytest.raises(OSError):
        procs.version_output([os.path.join(root, "missing"), "--version"])
