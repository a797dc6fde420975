"""The script runner (API.md "Scripts"): discover, start, time out, cancel, list and recover runs.

It knows no HTTP: the handlers validate and call it. A run's child is started
through the process registry (its own session, stdin ``/dev/null``, argv only),
its stdout and stderr are read in chunks and appended to the run's output log
on disk as they arrive, and its whole tree — descendants that left the
process group or the session included — is killed on timeout, on cancel, at
shutdown, and when the script exits leaving background processes behind.
Runs that were running when the runtime stopped become ``interrupted``.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.context import now_iso
from wsruntime_ext.paths import new_record_id, resolve_in_workspace
from wsruntime_ext.scripts.discovery import Discovery, make_targets, read_files
from wsruntime_ext.scripts.runs import Cursor, OutputLog, RunStore, output_tail, read_frames

if TYPE_CHECKING:
    from wsruntime_ext.context import Context
    from wsruntime_ext.procs import ManagedProcess

log = logging.getLogger("wsruntime.scripts")

STATUSES = ("running", "succeeded", "failed", "timed_out", "cancelled", "interrupted")
ENDED_STATUSES = frozenset(STATUSES[1:])
READ_CHUNK = 1 << 16
DESCENDANT_SCAN_S = 0.5
SAVE_EVERY_SCANS = 10  # a running run's record is saved every 5 s
KILL_GRACE_S = 2.0
PIPE_DRAIN_S = 5.0
KEEP_RUNS = 200  # ended runs kept on disk; older ones are deleted
OUTPUT_TAIL = 1 << 20  # characters of output in GET /runs/{id} and ?wait=true answers
DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 86400.0


TAG_VARIABLE = "WSRUNTIME_SCRIPT_RUN"


def run_tag(run_id: str) -> bytes:
    return f"{TAG_VARIABLE}={run_id}".encode()


def tagged_processes(tag: bytes) -> list[int]:
    """Processes whose environment holds ``tag`` (``NAME=value``): a run's tree, even its double-forked daemons.

    A process that re-parents itself away from the script (``setsid`` in a
    subshell that exits at once) is no descendant by the time anyone looks;
    it still carries the environment it inherited.
    """
    pids = []
    needle = b"\x00" + tag + b"\x00"
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or another user's
            continue
        if needle in b"\x00" + environ + b"\x00":
            pids.append(int(entry))
    return pids


def _now() -> str:
    return now_iso()


class ScriptRun:
    """One run: its record, its output log and (while it runs) its process and readers."""

    def __init__(self, record: dict[str, Any], directory: str, output: OutputLog, last_seq: int = 0) -> None:
        self.record = record
        self.directory = directory
        self.output = output
        self.last_seq = last_seq
        self.proc: ManagedProcess | None = None
        self.stop_reason: str | None = None  # "timed_out", "cancelled" or "interrupted" once we stop it
        self.ended = asyncio.Event()
        self.listeners: set[asyncio.Event] = set()  # one per streaming client: set when there is more
        self.task: asyncio.Future[None] | None = None
        self._wake_handle: asyncio.Handle | None = None
        self.saving: asyncio.Future[None] | None = None
        self.dirty = False
        if record["status"] in ENDED_STATUSES:
            self.ended.set()

    @property
    def id(self) -> str:
        return str(self.record["run_id"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    def append(self, stream: str, text: str, size: int) -> None:
        """One chunk of output: numbered, stored; the listeners are woken once per IOLoop turn."""
        self.last_seq += 1
        self.output.append(self.last_seq, stream, text)
        self.record["output_bytes"] += size
        if self._wake_handle is None:
            self._wake_handle = asyncio.get_running_loop().call_soon(self._flush_and_wake)

    def _flush_and_wake(self) -> None:
        self._wake_handle = None
        self.output.flush()
        self.wake()

    def wake(self) -> None:
        for event in self.listeners:
            event.set()

    def public(self) -> dict[str, Any]:
        return {
            **self.record,
            "last_seq": self.last_seq,
            "output_dropped_bytes": self.output.dropped_bytes or self.record.get("output_dropped_bytes", 0),
        }

    def exit_frame(self) -> dict[str, Any]:
        return {
            "type": "exit",
            "code": self.record["exit_code"],
            "status": self.status,
            "signal": self.record["signal"],
        }


class ScriptService:
    """Every script run of the workspace, running or stored."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = RunStore(ctx.config.state_dir)
        self.runs: dict[str, ScriptRun] = {}
        self.max_runs = ctx.config.max_runs
        self.output_limit = ctx.config.script_output_limit
        self._starting = 0
        self._pending: set[asyncio.Future[Any]] = set()

    # -- start-up and shutdown ---------------------------------------------------------

    async def start(self) -> None:
        """Load the stored runs; those that were running when the runtime stopped become ``interrupted``."""
        for record, segments, last_seq in await self.ctx.run_blocking(self.store.load_all):
            directory = self.store.directory(record["run_id"])
            output = OutputLog(directory, self.output_limit, segments)
            run = ScriptRun(record, directory, output, max(last_seq, int(record.get("last_seq") or 0)))
            self.runs[run.id] = run
            if record.get("status") not in ENDED_STATUSES:
                record.update(status="interrupted", ended_at=_now(), pid=None, exit_code=None, signal=None)
                record["error"] = "the runtime stopped while this script ran"
                run.ended.set()
                await self.ctx.run_blocking(self.store.save, run.public())
        await self._prune()

    async def shutdown(self) -> None:
        """Stop every running script tree (the runs become ``interrupted``) and write every record."""
        live = [r for r in self.runs.values() if not r.ended.is_set()]
        for run in live:
            run.stop_reason = "interrupted"
        await asyncio.gather(*(self._kill(r, 0.5) for r in live), return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(r.ended.wait(), 3.0) for r in live), return_exceptions=True)
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def health(self) -> dict[str, Any]:
        return {"scripts": {"running": self.live_count(), "max_runs": self.max_runs}}

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

    def live_count(self) -> int:
        return self._starting + sum(1 for r in self.runs.values() if not r.ended.is_set())

    def get(self, run_id: str) -> ScriptRun:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, "run_not_found", "No script run with this id", run_id=run_id[:80])
        return run

    def list_runs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Run objects, newest first, optionally only those with ``status``."""
        chosen = [r for r in self.runs.values() if status is None or r.status == status]
        chosen.sort(key=lambda r: (r.record["started_at"], r.id), reverse=True)
        return [r.public() for r in chosen[:limit]]

    async def run(self, name: str, args: list[str], env: dict[str, str], timeout_s: float) -> ScriptRun:
        """Start a listed script; 404/409 for its name, 429 too_many_runs, 422 when it cannot start."""
        if self.live_count() >= self.max_runs:
            raise self._too_many()
        self._starting += 1  # a slot held across the awaits below, so concurrent starts count too
        try:
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
                proc = await self.ctx.procs.spawn(
                    [executable, *argv[1:]],
                    cwd=where.real,
                    env={**os.environ, **script.env, **env, TAG_VARIABLE: run_id},
                    stdin=asyncio.subprocess.DEVNULL,
                    limit=READ_CHUNK,
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
                "started_at": _now(),
                "ended_at": None,
                "exit_code": None,
                "signal": None,
                "timeout_s": timeout_s,
                "pid": proc.pid,
                "output_bytes": 0,
                "error": None,
            }
            run = ScriptRun(record, directory, OutputLog(directory, self.output_limit))
            run.proc = proc
            self.runs[run_id] = run
        finally:
            self._starting -= 1
        self._publish(run)
        self._save_soon(run)
        run.task = asyncio.ensure_future(self._supervise(run, proc, timeout_s))
        return run

    def _too_many(self) -> ApiError:
        return ApiError(429, "too_many_runs", f"{self.max_runs} scripts are running already", max_runs=self.max_runs)

    async def cancel(self, run: ScriptRun) -> dict[str, Any]:
        """Stop a running script and everything it started; an ended run is returned as it is."""
        if not run.ended.is_set():
            if run.stop_reason is None:
                run.stop_reason = "cancelled"
            await self._kill(run, KILL_GRACE_S)
            await run.ended.wait()
        return run.public()

    async def wait(self, run: ScriptRun) -> None:
        await run.ended.wait()

    async def output(self, run: ScriptRun) -> tuple[str, bool]:
        """The tail of the run's output (at most ``OUTPUT_TAIL`` characters) and whether it was cut."""
        first_seqs = run.output.first_seqs
        text, cut = await self.ctx.run_blocking(output_tail, run.directory, first_seqs, OUTPUT_TAIL)
        return text, cut or bool(first_seqs and first_seqs[0] > 1)

    async def read(self, run: ScriptRun, cursor: Cursor, max_bytes: int) -> tuple[list[bytes], int]:
        """Stored frames from ``cursor`` on (for streaming), and how many were skipped as dropped."""
        return await self.ctx.run_blocking(read_frames, run.directory, run.output.first_seqs, cursor, max_bytes)

    # -- internals ---------------------------------------------------------------------

    async def _kill(self, run: ScriptRun, grace: float) -> None:
        """The whole tree: descendants known or found now, and every process carrying the run's tag."""
        proc = run.proc
        if proc is not None:
            proc.adopt(await self.ctx.run_blocking(tagged_processes, run_tag(run.id)))
            await proc.kill_tree(grace)

    async def _supervise(self, run: ScriptRun, proc: ManagedProcess, timeout_s: float) -> None:
        child = proc.proc
        assert child.stdout is not None and child.stderr is not None
        readers = [
            asyncio.ensure_future(self._read_stream(run, child.stdout, "stdout")),
            asyncio.ensure_future(self._read_stream(run, child.stderr, "stderr")),
        ]
        scanner = asyncio.ensure_future(self._scan_descendants(run, proc))
        try:
            try:
                await asyncio.wait_for(asyncio.shield(child.wait()), timeout_s)
            except asyncio.TimeoutError:
                if run.stop_reason is None:
                    run.stop_reason = "timed_out"
                await self._kill(run, KILL_GRACE_S)
            scanner.cancel()
            # What the script left running in the background goes with it (and releases the pipes).
            await self._kill(run, 1.0)
            try:
                await asyncio.wait_for(asyncio.gather(*readers), PIPE_DRAIN_S)
            except asyncio.TimeoutError:
                log.warning("script run %s: a process we could not find kept its output open", run.id)
                for reader in readers:
                    reader.cancel()
        except Exception:
            log.exception("script run %s failed", run.id)
            run.record["error"] = "the runtime failed supervising this script (see its log)"
            if child.returncode is None:
                await proc.kill_tree(0.5)
        finally:
            scanner.cancel()
            self._finish(run, child.returncode)

    async def _read_stream(self, run: ScriptRun, stream: asyncio.StreamReader, name: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            chunk = await stream.read(READ_CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                run.append(name, text, len(chunk))
            else:
                run.record["output_bytes"] += len(chunk)  # the start of a UTF-8 sequence: sent with the next chunk
            if not chunk:
                return

    async def _scan_descendants(self, run: ScriptRun, proc: ManagedProcess) -> None:
        """Remember the tree while it runs (a grandchild whose parent exits is no longer linked to us),
        and save the record now and then, so that a restart after a crash knows how far the run got."""
        scans = 0
        while proc.returncode is None:
            await self.ctx.run_blocking(proc.remember_descendants)
            await asyncio.sleep(DESCENDANT_SCAN_S)
            scans += 1
            if scans % SAVE_EVERY_SCANS == 0:
                self._save_soon(run)

    def _finish(self, run: ScriptRun, code: int | None) -> None:
        run.output.close()
        if run.stop_reason is not None:
            status = run.stop_reason
        else:
            status = "succeeded" if code == 0 else "failed"
        record = run.record
        record.update(status=status, ended_at=_now(), pid=None, last_seq=run.last_seq)
        record["exit_code"] = code if code is not None and code >= 0 else None
        record["signal"] = signal.Signals(-code).name if code is not None and code < 0 else None
        record["output_dropped_bytes"] = run.output.dropped_bytes
        if run.output.error and not record.get("error"):
            record["error"] = run.output.error
        run.proc = None
        run.ended.set()
        run.wake()
        self._publish(run)
        self._save_soon(run)
        self._track(asyncio.ensure_future(self._prune()))

    def _publish(self, run: ScriptRun) -> None:
        self.ctx.hub.publish(
            "script_run",
            {"run_id": run.id, "name": run.record["name"], "status": run.status, "exit_code": run.record["exit_code"]},
        )

    def _save_soon(self, run: ScriptRun) -> None:
        """Write the run's record off the IOLoop; saves of one run never overtake each other."""
        run.dirty = True
        if run.saving is None:
            run.saving = asyncio.ensure_future(self._save(run))
            self._track(run.saving)

    async def _save(self, run: ScriptRun) -> None:
        try:
            while run.dirty:
                run.dirty = False
                try:
                    await self.ctx.run_blocking(self.store.save, run.public())
                except Exception:
                    log.exception("cannot save script run %s", run.id)
        finally:
            run.saving = None

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _prune(self) -> None:
        """Delete the oldest ended runs beyond ``KEEP_RUNS``."""
        ended = [r for r in self.runs.values() if r.ended.is_set() and not r.listeners]
        ended.sort(key=lambda r: (r.record["started_at"], r.id))
        for run in ended[: max(0, len(ended) - KEEP_RUNS)]:
            self.runs.pop(run.id, None)
            await self.ctx.run_blocking(self.store.remove, run.id)
