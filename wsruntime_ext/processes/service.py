"""The process service (API.md "Processes and terminals"): start, list, feed, signal, resize and stop processes.

A process is a run of the engine (``engine.py``) that a client started with
an argv, a ``/bin/sh -c`` line or — under a pseudo-terminal — the login
shell. This service adds what is a process's own: its statuses (``exited``,
``killed``, ``timed_out``, ``interrupted``), its stdin or terminal input,
signals to the process or to the terminal's foreground process group, window
sizes, and ``process`` events. It knows no HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING, Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.context import now_iso
from wsruntime_ext.paths import new_record_id, resolve_in_workspace
from wsruntime_ext.processes.engine import Run, RunEngine, signal_name
from wsruntime_ext.processes.pty import ByteLog
from wsruntime_ext.processes.runs import OutputLog

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

STATUSES = ("running", "exited", "killed", "timed_out", "interrupted")
ENDED_STATUSES = frozenset(STATUSES[1:])
SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGSTOP", "SIGCONT")
WAIT_TAIL = 1 << 20  # characters of stdout and of stderr in a ?wait=true answer
STDIN_DRAIN_S = 10.0  # input waits this long at most for a child that does not read its stdin
TAG_VARIABLE = "WSRUNTIME_PROCESS"


@dataclasses.dataclass
class ProcessRequest:
    """A validated ``POST /api/v1/processes``: exactly one of ``command`` and ``shell``, or neither for a terminal."""

    command: list[str] | None = None
    shell: str | None = None
    cwd: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    stdin: bool = False
    timeout_s: float | None = None
    pty: tuple[int, int] | None = None  # (cols, rows)
    name: str | None = None


def login_shell() -> str:
    """``$SHELL`` if it exists, else bash, else sh."""
    shell = os.environ.get("SHELL", "")
    if shell and os.path.isabs(shell) and os.access(shell, os.X_OK):
        return shell
    return shutil.which("bash") or "/bin/sh"


class ProcessService(RunEngine):
    """Every process and terminal of the workspace, running or stored."""

    folder = "processes"
    id_key = "id"
    id_prefix = "proc_"
    time_key = "created_at"
    tag_variable = TAG_VARIABLE
    ended_statuses = ENDED_STATUSES
    interrupted_error = "the runtime stopped while this process ran"

    def __init__(self, ctx: Context) -> None:
        config = ctx.config
        super().__init__(ctx, config.max_processes, config.process_output_limit, config.terminal_scrollback)

    def health(self) -> dict[str, Any]:
        return {"processes": {"running": self.live_count(), "max_processes": self.max_live}}

    def not_found(self, run_id: str) -> ApiError:
        return ApiError(404, "process_not_found", "No process with this id", id=run_id[:80])

    def too_many(self) -> ApiError:
        return ApiError(
            429,
            "too_many_processes",
            f"{self.max_live} processes are running already",
            max_processes=self.max_live,
        )

    def final_state(self, run: Run, code: int | None) -> tuple[str, int | None, str | None]:
        reason = run.stop_reason
        if reason in ("timed_out", "killed", "interrupted"):
            return str(reason), None, signal_name(code) or run.stop_signal
        if code is not None and code < 0:
            return "killed", None, signal_name(code)
        return "exited", code, None

    def public(self, run: Run) -> dict[str, Any]:
        record = dict(run.record)
        if run.terminal_log is None:
            record["last_seq"] = run.last_seq
            record["output_dropped_bytes"] = run.output_dropped_bytes
        else:  # a terminal's bytes have no seq: output_bytes is the offset of the next one
            record.pop("last_seq", None)
            record.pop("output_dropped_bytes", None)
        return record

    def publish(self, run: Run) -> None:
        self.ctx.hub.publish("process", {"id": run.id, "status": run.status, "exit_code": run.record["exit_code"]})

    # -- starting ----------------------------------------------------------------------

    async def start_process(self, request: ProcessRequest) -> Run:
        """Start one; 404 for a missing cwd, 429 too_many_processes, 422 spawn_failed when it cannot start."""
        if request.command is not None:
            argv = list(request.command)
        elif request.shell is not None:
            argv = ["/bin/sh", "-c", request.shell]
        else:
            argv = [await self.ctx.run_blocking(login_shell)]
        where = resolve_in_workspace(self.ctx.workspace, request.cwd)
        if not await self.ctx.run_blocking(os.path.isdir, where.real):
            raise ApiError(404, "not_found", "cwd is not a directory of the workspace", cwd=where.rel)
        env = {**os.environ, "HOME": self.ctx.config.home_dir}
        if request.pty is not None:
            env.update(TERM="xterm-256color", COLORTERM="truecolor")
        env.update(request.env)
        async with self.slot():
            run_id = new_record_id(self.id_prefix)
            directory = self.store.directory(run_id)
            await self.ctx.run_blocking(lambda: os.makedirs(directory, exist_ok=True))
            try:
                proc, master = await self.spawn(
                    run_id, argv, where.real, env, stdin=request.stdin and request.pty is None, pty=request.pty
                )
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                await self.ctx.run_blocking(self.store.remove, run_id)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ApiError(
                    422, "spawn_failed", f"Cannot start {argv[0]!r}: {reason}", command=argv[0], reason=reason
                ) from None
            pty = None if request.pty is None else {"cols": request.pty[0], "rows": request.pty[1]}
            record: dict[str, Any] = {
                "id": run_id,
                "name": request.name,
                "pid": proc.pid,
                "command": argv,
                "cwd": where.rel,
                "pty": pty,
                "stdin": request.pty is not None or request.stdin,
                "status": "running",
                "exit_code": None,
                "signal": None,
                "created_at": now_iso(),
                "ended_at": None,
                "timeout_s": request.timeout_s,
                "output_bytes": 0,
                "error": None,
            }
            terminal_log = ByteLog(directory, self.scrollback) if pty is not None else None
            run = Run(run_id, record, directory, OutputLog(directory, self.output_limit), terminal_log)
            await self.launch(run, proc, request.timeout_s, master)
        return run

    # -- talking to a running one -------------------------------------------------------

    def _running(self, run: Run) -> None:
        if run.ended.is_set() or run.proc is None:
            raise ApiError(409, "process_ended", "The process has ended", id=run.id, process_status=run.status)

    async def write_input(self, run: Run, data: bytes, eof: bool = False) -> int:
        """Keystrokes for a terminal (``eof``: ^D), bytes for a stdin pipe (``eof``: close it)."""
        self._running(run)
        if run.terminal is not None:
            return run.terminal.write(data + (b"\x04" if eof else b""))
        stdin = run.stdin
        if stdin is None or stdin.is_closing():
            raise ApiError(409, "stdin_closed", "The process has no open stdin", id=run.id)
        try:
            if data:
                stdin.write(data)
                await asyncio.wait_for(stdin.drain(), STDIN_DRAIN_S)
            if eof:
                run.stdin = None
                stdin.close()
        except asyncio.TimeoutError:
            pass  # queued: the child has not read it yet
        except (BrokenPipeError, ConnectionResetError):
            run.stdin = None
            raise ApiError(409, "stdin_closed", "The process closed its stdin", id=run.id) from None
        return len(data)

    def send_signal(self, run: Run, name: str) -> None:
        """A terminal's signal goes to its foreground process group (as Ctrl-C would); else to the process."""
        self._running(run)
        signum = getattr(signal, name)
        proc = run.proc
        assert proc is not None
        group = run.terminal.foreground_group() if run.terminal is not None else None
        if group is not None and group > 0:
            try:
                os.killpg(group, signum)
                return
            except (ProcessLookupError, PermissionError):
                pass
        proc.send_signal(signum)

    def resize(self, run: Run, cols: int, rows: int) -> None:
        if run.record.get("pty") is None:
            raise ApiError(409, "not_a_terminal", "The process does not run in a terminal", id=run.id)
        self._running(run)
        assert run.terminal is not None
        try:
            run.terminal.resize(cols, rows)
        except OSError as exc:
            raise ApiError(409, "process_ended", f"The terminal is gone: {exc.strerror or exc}", id=run.id) from None
        run.record["pty"] = {"cols": cols, "rows": rows}
        self.save_soon(run)

    async def kill(self, run: Run) -> dict[str, Any]:
        """SIGHUP (terminal) or SIGTERM, then SIGKILL, to the whole tree; an ended process is returned as it is."""
        await self.stop(run, "killed", signal.SIGHUP if run.is_terminal else signal.SIGTERM)
        return self.public(run)

    async def wait_output(self, run: Run) -> dict[str, Any]:
        """The ended process with its stdout and stderr (each the last ``WAIT_TAIL`` characters)."""
        await run.ended.wait()
        tails = await self.stream_output(run, WAIT_TAIL)
        stdout, stdout_cut = tails["stdout"]
        stderr, stderr_cut = tails["stderr"]
        return {
            **self.public(run),
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": stdout_cut,
            "stderr_truncated": stderr_cut,
        }
