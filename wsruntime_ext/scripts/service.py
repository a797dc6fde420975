"""The script runner (API.md "Scripts"): what the workspace offers, and a named way to start one.

Discovery lives in ``discovery.py``; a run is a run of the one engine under
processes (``wsruntime_ext.processes.engine``), which spawns it in its own
session, streams its output to disk, times it out, cancels it, kills its
whole tree and recovers it after a restart. This service adds only what is
a script's own: its name, its statuses (``succeeded``/``failed``/…) and its
``script_run`` events.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.context import now_iso
from wsruntime_ext.paths import new_record_id, resolve_in_workspace
from wsruntime_ext.processes.engine import Run, RunEngine, signal_name
from wsruntime_ext.processes.runs import Cursor, OutputLog
from wsruntime_ext.scripts.discovery import Discovery, make_targets, read_files

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

STATUSES = ("running", "succeeded", "failed", "timed_out", "cancelled", "interrupted")
ENDED_STATUSES = frozenset(STATUSES[1:])
OUTPUT_TAIL = 1 << 20  # characters of output in GET /runs/{id} and ?wait=true answers
DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 86400.0
TAG_VARIABLE = "WSRUNTIME_SCRIPT_RUN"

ScriptRun = Run


class ScriptService(RunEngine):
    """Every script run of the workspace, running or stored."""

    folder = "script-runs"
    id_key = "run_id"
    id_prefix = "sr_"
    time_key = "started_at"
    tag_variable = TAG_VARIABLE
    ended_statuses = ENDED_STATUSES
    interrupted_error = "the runtime stopped while this script ran"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, ctx.config.max_runs, ctx.config.script_output_limit)
        self.max_runs = ctx.config.max_runs

    def health(self) -> dict[str, Any]:
        return {"scripts": {"running": self.live_count(), "max_runs": self.max_runs}}

    def not_found(self, run_id: str) -> ApiError:
        return ApiError(404, "run_not_found", "No script run with this id", run_id=run_id[:80])

    def too_many(self) -> ApiError:
        return ApiError(429, "too_many_runs", f"{self.max_runs} scripts are running already", max_runs=self.max_runs)

    def final_state(self, run: Run, code: int | None) -> tuple[str, int | None, str | None]:
        status = run.stop_reason or ("succeeded" if code == 0 else "failed")
        return status, code if code is not None and code >= 0 else None, signal_name(code)

    def public(self, run: Run) -> dict[str, Any]:
        return {**run.record, "last_seq": run.last_seq, "output_dropped_bytes": run.output_dropped_bytes}

    def publish(self, run: Run) -> None:
        self.ctx.hub.publish(
            "script_run",
            {"run_id": run.id, "name": run.record["name"], "status": run.status, "exit_code": run.record["exit_code"]},
        )

    # -- discovery ---------------------------------------------------------------------

    async def discover(self) -> Discovery:
        """Every script the workspace offers now, and the problems met reading its sources."""
        files, make = await asyncio.gather(
            self.ctx.run_blocking(read_files, self.ctx.workspace), make_targets(self.ctx.workspace, self.ctx.procs)
        )
        npm = [s for s in files[0] if s.source == "package.json"]
        others = [s for s in files[0] if s.source != "package.json"]
        return Discovery([*npm, *make[0], *others], [*files[1], *make[1]])

    # -- runs --------------------------------------------------------------------------

    async def run(self, name: str, args: list[str], env: dict[str, str], timeout_s: float) -> Run:
        """Start a listed script; 404/409 for its name, 429 too_many_runs, 422 when it cannot start."""
        async with self.slot():
            script = (await self.discover()).resolve(name)
            where = resolve_in_workspace(self.ctx.workspace, script.cwd)
            if not await self.ctx.run_blocking(os.path.isdir, where.real):
                raise ApiError(422, "cwd_not_found", "The script's cwd is not a directory", cwd=where.rel)
            argv = script.argv(args)
            executable = argv[0]
            if script.source == "scripts/":
                executable = os.path.join(self.ctx.workspace, argv[0])
            run_id = new_record_id("sr_")
            directory = self.store.directory(run_id)
            await self.ctx.run_blocking(lambda: os.makedirs(directory, exist_ok=True))
            try:
                proc, _ = await self.spawn(
                    run_id, [executable, *argv[1:]], where.real, {**os.environ, **script.env, **env}
                )
            except OSError as exc:
                await self.ctx.run_blocking(self.store.remove, run_id)
                raise ApiError(
                    422,
                    "command_unavailable",
                    f"Cannot start {argv[0]!r}: {exc.strerror or exc}",
                    command=argv[0],
                    script=script.name,
                ) from None
            record: dict[str, Any] = {
                "run_id": run_id,
                "name": script.name,
                "source": script.source,
                "status": "running",
                "command": argv,
                "cwd": where.rel,
                "started_at": now_iso(),
                "ended_at": None,
                "exit_code": None,
                "signal": None,
                "timeout_s": timeout_s,
                "pid": proc.pid,
                "output_bytes": 0,
                "error": None,
            }
            run = Run(run_id, record, directory, OutputLog(directory, self.output_limit))
            await self.launch(run, proc, timeout_s)
        return run

    async def cancel(self, run: Run) -> dict[str, Any]:
        """Stop a running script and everything it started; an ended run is returned as it is."""
        await self.stop(run, "cancelled")
        return self.public(run)

    async def script_output(self, run: Run) -> tuple[str, bool]:
        """The tail of the run's output (at most ``OUTPUT_TAIL`` characters) and whether it was cut."""
        return await self.output(run, OUTPUT_TAIL)


__all__ = ["Cursor", "ScriptRun", "ScriptService"]
