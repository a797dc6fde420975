"""Subprocesses: spawn, read, time out, kill whole trees, reap — for git, agents and scripts.

Every child is started with an argument list (never a shell), in its own
session, and tracked by the :class:`ProcessRegistry` on the Context so that
shutdown can stop everything. Killing a child kills its whole tree: the
descendants are listed *before* any signal (afterwards an orphan is no longer
linked to us), and processes that left the process group or even the session
(Claude Code's Bash tool runs commands in their own session) are still found
through that snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Callable

log = logging.getLogger("wsruntime.procs")

DEFAULT_OUTPUT_LIMIT = 16 << 20


@dataclasses.dataclass
class Completed:
    """What a finished command left: exit code, output (bounded), and whether it timed out."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _children_from_proc() -> dict[int, list[int]]:
    """ppid → pids, read from /proc (used when psutil is unavailable)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def tagged_processes(variable: str, values: Iterable[str]) -> dict[str, list[int]]:
    """Processes whose environment sets ``variable`` to one of ``values``: a run's tree, double-forked daemons too.

    A process that re-parents itself away from its parent (``setsid`` in a
    subshell that exits at once) is no descendant by the time anyone looks;
    it still carries the environment it inherited (blocking: reads /proc).
    """
    wanted = {f"{variable}={value}".encode(): value for value in values}
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    prefix = variable.encode() + b"="
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc (macOS): nothing to find this way
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or another user's
            continue
        if prefix not in environ:
            continue
        for item in environ.split(b"\x00"):
            value = wanted.get(item)
            if value is not None:
                found.setdefault(value, []).append(int(entry))
    return found


def stop_tagged(variable: str, values: Iterable[str], grace: float = 0.0) -> dict[str, list[int]]:
    """Stop what a killed runtime left running of these runs (see :func:`tagged_processes`); blocking.

    SIGKILL at once, or with ``grace`` SIGTERM first (a CLI saves its state) and SIGKILL to what is
    still there after ``grace`` seconds. Returns the pids found, per value, for the caller to log.
    """
    found = tagged_processes(variable, values)
    pids = [pid for value_pids in found.values() for pid in value_pids]
    if grace > 0:
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), via psutil or /proc."""
    try:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    except ImportError:
        pass
    tree = _children_from_proc()
    found: list[int] = []
    queue = list(tree.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(tree.get(child, []))
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        state = data[data.rfind(b")") + 2 : data.rfind(b")") + 3]
        return state not in (b"Z", b"X")
    except OSError:
        return False


class ManagedProcess:
    """A child started by the registry, with its own session; ``kill_tree`` stops it and all it started."""

    def __init__(self, proc: asyncio.subprocess.Process, argv: Sequence[str], registry: ProcessRegistry) -> None:
        self.proc = proc
        self.argv = list(argv)
        self.pid = proc.pid
        self.started = time.monotonic()
        self._registry = registry
        self._known: set[int] = set()  # descendants seen so far: escaped ones are still ours to stop

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def remember_descendants(self) -> None:
        """Snapshot the tree now; call it periodically for long-lived children (agents)."""
        if self.proc.returncode is None:
            self._known.update(descendants(self.pid))

    def adopt(self, pids: Iterable[int]) -> None:
        """Count these processes as part of the tree too (found another way, e.g. by an environment tag)."""
        self._known.update(pid for pid in pids if pid != self.pid)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the child alone (while it runs)."""
        if self.proc.returncode is None:
            _signal(self.pid, signum)

    def signal_tree(self, signum: int) -> None:
        """Send ``signum`` to the child, its process group and every descendant known or found now."""
        self.remember_descendants()
        _signal_group(self.pid, signum)  # the session leader's group: pgid == pid
        if self.proc.returncode is None:
            _signal(self.pid, signum)
        for pid in list(self._known):
            if _alive(pid):
                _signal(pid, signum)
            else:
                self._known.discard(pid)

    async def kill_tree(self, grace: float = 2.0, first_signal: int = signal.SIGTERM) -> int:
        """SIGTERM (or ``first_signal``) to the whole tree, SIGKILL after ``grace`` seconds to whatever is left;
        returns the exit code."""
        self.signal_tree(first_signal)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc.returncode is not None and not any(_alive(p) for p in self._known):
                break
            await asyncio.sleep(0.05)
        self.signal_tree(signal.SIGKILL)
        code = await self.proc.wait()
        # Descendants were reparented; SIGKILL cannot be ignored, give the kernel a moment.
        for _ in range(40):
            if not any(_alive(p) for p in self._known):
                break
            await asyncio.sleep(0.025)
        return code

    async def wait(self) -> int:
        return await self.proc.wait()

    async def wait_exit(self, poll: float = 0.2) -> int:
        """The exit code as soon as the child exits, even while a descendant still holds its pipes open.

        (Before Python 3.12, asyncio's ``Process.wait()`` answers only once every pipe is closed.)
        """
        waiting = asyncio.ensure_future(self.proc.wait())
        try:
            while self.proc.returncode is None:
                await asyncio.wait([waiting], timeout=poll)
        finally:
            if not waiting.done():
                waiting.cancel()
        code = self.proc.returncode
        assert code is not None
        return code


# The runtime's own secrets: no subprocess (agent, script, git hook) is given them.
PRIVATE_VARIABLES = frozenset({"WSRUNTIME_TOKEN"})


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: the runtime's environment) without the runtime's own secrets."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k not in PRIVATE_VARIABLES}


_VERSION_OUTPUTS: dict[tuple[str, ...], tuple[int, str]] = {}


def version_output(argv: Sequence[str], timeout: float = 20.0, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Exit code and stdout of a CLI's ``--version`` (blocking: run it off the IOLoop).

    Kept for the life of the process per executable file (path, inode, size, mtime), so that detection never
    runs twice for the same installed version: a Node CLI's start-up costs up to 2 s of CPU, and several
    runtimes may share a process (the tests). Raises OSError or SubprocessError when it cannot run.
    """
    st = os.stat(argv[0])
    key = (*argv, str(st.st_ino), str(st.st_size), str(st.st_mtime_ns))
    cached = _VERSION_OUTPUTS.get(key)
    if cached is None:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=child_environment(env),
            start_new_session=True,
        )
        cached = _VERSION_OUTPUTS[key] = (done.returncode, done.stdout.decode("utf-8", "replace").strip())
    return cached


class ProcessRegistry:
    """Every subprocess the runtime runs, so that none outlives it."""

    def __init__(self) -> None:
        self.running: set[ManagedProcess] = set()

    async def spawn(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str] | None = None,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
        limit: int = 1 << 20,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` in its own session; raises FileNotFoundError/PermissionError when it cannot start."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=child_environment(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            limit=limit,
            preexec_fn=preexec_fn,
        )
        managed = ManagedProcess(proc, argv, self)
        self.running.add(managed)
        proc_wait = asyncio.ensure_future(proc.wait())
        proc_wait.add_done_callback(lambda _: self.running.discard(managed))
        return managed

    async def run(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        input: bytes | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> Completed:
        """Run to completion with a timeout (the whole tree is killed when it expires), output bounded."""
        managed = await self.spawn(
            argv, cwd, env, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL
        )
        proc = managed.proc
        assert proc.stdout is not None and proc.stderr is not None
        truncated = False

        async def read_all(stream: asyncio.StreamReader) -> bytes:
            nonlocal truncated
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return b"".join(chunks)
                if size < output_limit:
                    chunks.append(chunk[: output_limit - size])
                    truncated = truncated or size + len(chunk) > output_limit
                else:
                    truncated = True
                size += len(chunk)

        async def feed() -> None:
            if input is not None and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(input)
                    await proc.stdin.drain()
                proc.stdin.close()

        readers = asyncio.gather(read_all(proc.stdout), read_all(proc.stderr), feed(), proc.wait())
        timed_out = False
        try:
            out, err, _, code = await asyncio.wait_for(asyncio.shield(readers), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            await managed.kill_tree(grace=1.0)
            try:
                out, err, _, code = await asyncio.wait_for(readers, 5.0)
            except asyncio.TimeoutError:  # a descendant kept the pipes open: give up on the output
                readers.cancel()
                out, err, code = b"", b"", await proc.wait()
        except BaseException:
            await managed.kill_tree(grace=0.5)
            raise
        return Completed(list(argv), code, out, err, timed_out, truncated)

    async def shutdown(self, grace: float = 2.0) -> None:
        """Stop every child tree still running (SIGTERM, then SIGKILL after ``grace``)."""
        if self.running:
            await asyncio.gather(*(p.kill_tree(grace) for p in list(self.running)), return_exceptions=True)
