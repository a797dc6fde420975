"""The one engine under script runs and processes: spawn, stream to disk, supervise, stop, store and recover.

A run's child starts through the process registry in a new session, with an
environment tag (``WSRUNTIME_PROCESS=proc_…``) that every descendant inherits,
so that its whole tree — processes that left the session (``setsid``,
``nohup``) included — is found and stopped on timeout, on DELETE, at
shutdown, when the child exits leaving background processes behind, and at
the next start of a runtime that was killed. Output is read whatever the
clients do and appended to disk as it arrives (pipes: numbered JSON frames,
``runs.py``; a terminal: numbered bytes, ``pty.py``), so memory stays flat and
any client can replay from where it was. Records are saved atomically; runs
that were running when the runtime stopped read ``interrupted``.

:class:`RunEngine` knows no HTTP and nothing of scripts or processes: the
script service and the process service are subclasses that say how a run's
status and events look.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable

from wsruntime_ext.base import ApiError
from wsruntime_ext.context import now_iso
from wsruntime_ext.processes.live import OutputWindow, PipeReader
from wsruntime_ext.processes.pty import (
    ByteLog,
    Terminal,
    open_terminal,
    read_bytes,
    scan_byte_segments,
    take_controlling_terminal,
)
from wsruntime_ext.processes.runs import Cursor, OutputLog, RunStore, output_tail, read_frames, stream_tails
from wsruntime_ext.procs import stop_tagged, tagged_processes

if TYPE_CHECKING:
    from wsruntime_ext.context import Context
    from wsruntime_ext.procs import ManagedProcess

log = logging.getLogger("wsruntime.processes")

DESCENDANT_SCAN_S = 0.5
SAVE_EVERY_SCANS = 10  # a running run's record is saved every 5 s
KILL_GRACE_S = 2.0
PIPE_DRAIN_S = 5.0
KEEP_RUNS = 200  # ended runs kept on disk; older ones are deleted
MAX_LOG_LAG = 1 << 20  # bytes of output not yet on disk past which the pipes are not read (< the live window)
LIVE_DISK_BYTES = 32 << 20  # a client this close to the newest output, out of the window, reads on the IOLoop (read())
LIVE_BYTES = 1 << 20  # the same for a terminal's bytes


class Run:
    """One run: its record, its output on disk and (while it runs) its process, readers and terminal."""

    def __init__(
        self,
        run_id: str,
        record: dict[str, Any],
        directory: str,
        output: OutputLog,
        terminal_log: ByteLog | None = None,
        last_seq: int = 0,
        ended: bool = False,
    ) -> None:
        self.id = run_id
        self.record = record
        self.directory = directory
        self.output = output  # pipe output (empty for a terminal)
        self.terminal_log = terminal_log  # a terminal's bytes
        self.last_seq = last_seq
        self.proc: ManagedProcess | None = None
        self.terminal: Terminal | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stop_reason: str | None = None  # why we stopped it: "timed_out", "cancelled", "killed", "interrupted"
        self.stop_signal: str | None = None  # the first signal we sent when we did
        self.ended = asyncio.Event()
        self.window = OutputWindow()  # the newest pipe output, framed once for the live clients
        self.pipes: list[PipeReader] = []
        self.listeners: set[asyncio.Event] = set()  # one per streaming client: set when there is more
        self.task: asyncio.Future[None] | None = None
        self._wake_handle: asyncio.Handle | None = None
        self.saving: asyncio.Future[None] | None = None
        self.dirty = False
        self.reading_paused = False  # the pipes wait while the output log's writer is too far behind
        self.awaiting_disk = False  # a client waits for output that is not on disk yet
        output.on_written = self._log_written
        if ended:
            self.ended.set()

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def is_terminal(self) -> bool:
        return self.terminal_log is not None

    def append(self, stream: str, text: str, size: int) -> None:
        """One chunk of pipe output: numbered, stored, framed for live clients; listeners woken once per IOLoop turn."""
        self.last_seq += 1
        self._appended(self.output.append(self.last_seq, stream, text), size)

    def _appended(self, frame: bytes, size: int) -> None:
        if self.listeners:  # no window without live clients: it starts again with the next frame
            segment, offset = self.output.end
            self.window.add(self.last_seq, frame, segment, offset)
        self.record["output_bytes"] += size
        if self.output.lag > MAX_LOG_LAG and not self.reading_paused:
            # The disk is slower than the child: let the pipe fill (the child waits) rather than hold more
            # than the live clients' window in memory.
            self.reading_paused = True
            for pipe in self.pipes:
                pipe.pause()
        self._wake_soon()

    def _log_written(self) -> None:
        """The output log's writer caught up a little (on the IOLoop)."""
        if self.reading_paused and self.output.lag <= MAX_LOG_LAG // 2:
            self.reading_paused = False
            for pipe in self.pipes:
                pipe.resume()
        if self.awaiting_disk:
            self.awaiting_disk = False
            self.wake()

    def append_ascii(self, stream: str, data: bytes) -> bool:
        """:meth:`append` of ASCII output without decoding it, when it needs no JSON escapes but \\n, \\r and
        \\t; False (nothing done) otherwise."""
        frame = self.output.append_ascii(self.last_seq + 1, stream, data)
        if frame is None:
            return False
        self.last_seq += 1
        self._appended(frame, len(data))
        return True

    def append_bytes(self, data: bytes) -> None:
        """One chunk of terminal output: stored; the listeners are woken once per IOLoop turn."""
        assert self.terminal_log is not None
        self.terminal_log.append(data)
        self.record["output_bytes"] = self.terminal_log.end
        self._wake_soon()

    def _wake_soon(self) -> None:
        if self._wake_handle is None:
            self._wake_handle = asyncio.get_running_loop().call_soon(self._flush_and_wake)

    def _flush_and_wake(self) -> None:
        self._wake_handle = None
        self.output.flush()
        if self.terminal_log is not None:
            self.terminal_log.flush()
        self.wake()

    def listen(self, event: asyncio.Event) -> None:
        """A streaming client: ``event`` is set whenever there is more output."""
        self.listeners.add(event)

    def unlisten(self, event: asyncio.Event) -> None:
        self.listeners.discard(event)
        if not self.listeners:
            self.window.clear()  # its frames would no longer be consecutive (see append)

    def wake(self) -> None:
        for event in self.listeners:
            event.set()

    def exit_frame(self) -> dict[str, Any]:
        record = self.record
        return {"type": "exit", "code": record["exit_code"], "status": self.status, "signal": record["signal"]}

    @property
    def output_dropped_bytes(self) -> int:
        return self.output.dropped_bytes or int(self.record.get("output_dropped_bytes") or 0)


class RunEngine:
    """Runs of one kind (script runs, processes): spawn, supervise, stop, store, recover. Subclass it."""

    folder = "runs"  # under the state directory
    id_key = "id"
    id_prefix = "run_"
    time_key = "created_at"
    tag_variable = "WSRUNTIME_RUN"
    ended_statuses: frozenset[str] = frozenset()
    interrupted_error = "the runtime stopped while this ran"

    def __init__(self, ctx: Context, max_live: int, output_limit: int, scrollback: int = 1 << 20) -> None:
        self.ctx = ctx
        self.store = RunStore(
            os.path.join(ctx.config.state_dir, self.folder),
            self.id_key,
            rf"^{self.id_prefix}[0-9a-z]{{6,40}}$",
            ctx.temps,
        )
        self.runs: dict[str, Run] = {}
        self.max_live = max_live
        self.output_limit = output_limit
        self.scrollback = scrollback
        self._starting = 0
        self._pending: set[asyncio.Future[Any]] = set()
        self._output_fds: dict[ManagedProcess, tuple[int, int]] = {}  # spawned, not yet launched: its pipes

    # -- what a subclass says ------------------------------------------------------------

    def not_found(self, run_id: str) -> ApiError:
        return ApiError(404, "not_found", "No run with this id", id=run_id[:80])

    def too_many(self) -> ApiError:
        return ApiError(429, "too_many_runs", f"{self.max_live} are running already", max=self.max_live)

    def final_state(self, run: Run, code: int | None) -> tuple[str, int | None, str | None]:
        """(status, exit code, signal name) of a run whose child ended with ``code``."""
        raise NotImplementedError

    def public(self, run: Run) -> dict[str, Any]:
        return dict(run.record)

    def publish(self, run: Run) -> None:
        """Tell ``/api/v1/ws`` that the run started or ended."""

    # -- start-up and shutdown ---------------------------------------------------------

    async def start(self) -> None:
        """Load the stored runs; those that were running become ``interrupted`` and what is left of them is killed."""
        stale: list[str] = []
        for record, segments, last_seq in await self.ctx.run_blocking(self.store.load_all):
            run_id = str(record[self.id_key])
            directory = self.store.directory(run_id)
            terminal_log = None
            if record.get("pty"):
                byte_segments = await self.ctx.run_blocking(scan_byte_segments, directory)
                terminal_log = ByteLog(directory, self.scrollback, byte_segments)
            output = OutputLog(directory, self.output_limit, segments)
            run = Run(
                run_id,
                record,
                directory,
                output,
                terminal_log,
                max(last_seq, int(record.get("last_seq") or 0)),
                ended=record.get("status") in self.ended_statuses,
            )
            if terminal_log is not None:
                record["output_bytes"] = max(int(record.get("output_bytes") or 0), terminal_log.end)
            self.runs[run_id] = run
            if not run.ended.is_set():
                stale.append(run_id)
                record.update(status="interrupted", ended_at=now_iso(), pid=None, exit_code=None, signal=None)
                record["error"] = self.interrupted_error
                run.ended.set()
                await self.ctx.run_blocking(self.store.save, self.public(run))
        unrecorded = await self.ctx.run_blocking(self.store.unrecorded)
        if stale or unrecorded:
            await self.ctx.run_blocking(self._kill_leftovers, [*stale, *unrecorded])
        for run_id in unrecorded:
            await self.ctx.run_blocking(self.store.remove, run_id)
        await self._prune()

    def _kill_leftovers(self, run_ids: list[str]) -> None:
        """A runtime that was killed left these runs' trees behind: stop whatever of them still runs."""
        for run_id, pids in stop_tagged(self.tag_variable, run_ids).items():
            log.warning("stopped %d process(es) left behind by %s", len(pids), run_id)

    async def shutdown(self) -> None:
        """Stop every running tree (the runs become ``interrupted``) and write every record."""
        live = [r for r in self.runs.values() if not r.ended.is_set()]
        for run in live:
            run.stop_reason = "interrupted"
        await asyncio.gather(*(self._kill(r, 0.5) for r in live), return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(r.ended.wait(), 3.0) for r in live), return_exceptions=True)
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- runs --------------------------------------------------------------------------

    def live_count(self) -> int:
        return self._starting + sum(1 for r in self.runs.values() if not r.ended.is_set())

    def get(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise self.not_found(run_id)
        return run

    def list_runs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Run objects, newest first, optionally only those with ``status``."""
        chosen = [r for r in self.runs.values() if status is None or r.status == status]
        chosen.sort(key=lambda r: (r.record[self.time_key], r.id), reverse=True)
        return [self.public(r) for r in chosen[:limit]]

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_live`` places while a run starts (429 when none is free)."""
        if self.live_count() >= self.max_live:
            raise self.too_many()
        self._starting += 1  # held across the awaits of the start, so that concurrent starts count too
        try:
            yield
        finally:
            self._starting -= 1

    async def spawn(
        self,
        run_id: str,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        stdin: bool = False,
        pty: tuple[int, int] | None = None,
    ) -> tuple[ManagedProcess, int | None]:
        """Start ``argv`` tagged with ``run_id`` (on pipes, or under a new pty of (cols, rows)); raises OSError.

        Returns the process and, for a terminal, the pty's master.
        """
        full_env = {**env, self.tag_variable: run_id, "PWD": cwd}
        if pty is None:
            # Our own pipes, read with add_reader in big chunks (see live.PipeReader), not asyncio's streams.
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            try:
                proc = await self.ctx.procs.spawn(
                    argv,
                    cwd=cwd,
                    env=full_env,
                    stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                )
            except BaseException:
                os.close(out_r)
                os.close(err_r)
                raise
            finally:
                os.close(out_w)
                os.close(err_w)
            self._output_fds[proc] = (out_r, err_r)  # read from launch() on
            return proc, None
        master, slave = open_terminal(*pty)
        try:
            proc = await self.ctx.procs.spawn(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                preexec_fn=take_controlling_terminal,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return proc, master

    async def launch(self, run: Run, proc: ManagedProcess, timeout_s: float | None, master: int | None = None) -> None:
        """Supervise a spawned run: read its output, time it out, finish it; returns once its record is saved."""
        run.proc = proc
        if master is not None:
            run.terminal = Terminal(master, asyncio.get_running_loop(), run.append_bytes)
        else:
            run.stdin = proc.proc.stdin
            loop = asyncio.get_running_loop()
            out_fd, err_fd = self._output_fds.pop(proc)
            run.pipes = [
                PipeReader(out_fd, loop, self._decoding(run, "stdout")),
                PipeReader(err_fd, loop, self._decoding(run, "stderr")),
            ]
        self.runs[run.id] = run
        self.publish(run)
        self.save_soon(run)
        run.task = asyncio.ensure_future(self._supervise(run, proc, timeout_s))
        if run.saving is not None:
            await asyncio.shield(run.saving)  # a runtime that dies from now on finds the run at its next start

    async def stop(
        self, run: Run, reason: str, first_signal: int = signal.SIGTERM, grace: float = KILL_GRACE_S
    ) -> None:
        """Stop a running run and everything it started; waits for its end."""
        if not run.ended.is_set():
            if run.stop_reason is None:
                run.stop_reason = reason
                run.stop_signal = signal.Signals(first_signal).name
            await self._kill(run, grace, first_signal)
            await run.ended.wait()

    async def wait(self, run: Run) -> None:
        await run.ended.wait()

    async def output(self, run: Run, limit: int) -> tuple[str, bool]:
        """The tail of the run's pipe output (at most ``limit`` characters) and whether it was cut."""
        first_seqs = run.output.first_seqs
        text, cut = await self.ctx.run_blocking(output_tail, run.directory, first_seqs, limit)
        return text, cut or bool(first_seqs and first_seqs[0] > 1)

    async def stream_output(self, run: Run, limit: int) -> dict[str, tuple[str, bool]]:
        """stdout and stderr apart: each one's last ``limit`` characters and whether earlier ones are left out."""
        return await self.ctx.run_blocking(stream_tails, run.directory, run.output.first_seqs, limit)

    async def read(self, run: Run, cursor: Cursor, max_bytes: int) -> tuple[list[bytes], int]:
        """Stored frames from ``cursor`` on (for streaming), and how many were skipped as dropped.

        A client that follows the live output reads what was written a moment ago — from the page cache,
        a copy in memory: that read is done on the IOLoop, since handing it to a thread costs more (the
        thread and the IOLoop then take turns on the GIL at every system call, and a client catching up
        with a fast process would never make it). Replays of older output go to the pool.
        """
        behind = None if cursor.segment is None else run.output.bytes_after(cursor.segment, cursor.offset)
        if behind is not None and behind <= LIVE_DISK_BYTES:
            return read_frames(run.directory, run.output.first_seqs, cursor, max_bytes)
        return await self.ctx.run_blocking(read_frames, run.directory, run.output.first_seqs, cursor, max_bytes)

    def read_live(self, run: Run, cursor: Cursor, max_bytes: int) -> list[bytes] | None:
        """WebSocket frames after ``cursor`` (about ``max_bytes``) from the run's window, advancing it; None when
        ``cursor`` is not in the window (then the client reads the disk: :meth:`read`)."""
        frames = run.window.since(cursor.next_seq, max_bytes)
        if frames is None:
            return None
        if not frames:
            return []
        last = frames[-1]
        cursor.next_seq = last.seq + 1
        cursor.segment, cursor.offset = last.segment, last.offset
        return [item.frame for item in frames]

    async def read_terminal(self, run: Run, start: int, max_bytes: int) -> tuple[int, bytes]:
        """Stored terminal bytes from byte ``start`` (or the oldest kept, if later): (first byte's number, bytes)."""
        log_ = run.terminal_log
        assert log_ is not None
        oldest = log_.oldest
        begin = max(start, oldest)
        if begin >= log_.end:
            return begin, b""
        if log_.end - begin <= LIVE_BYTES:  # just written: in the page cache (see read())
            return begin, read_bytes(run.directory, list(log_.segments), oldest, begin, max_bytes)
        data = await self.ctx.run_blocking(read_bytes, run.directory, list(log_.segments), oldest, begin, max_bytes)
        return begin, data

    # -- internals ---------------------------------------------------------------------

    async def _kill(self, run: Run, grace: float, first_signal: int = signal.SIGTERM) -> None:
        """The whole tree: descendants known or found now, and every process carrying the run's tag."""
        proc = run.proc
        if proc is not None:
            found = await self.ctx.run_blocking(tagged_processes, self.tag_variable, [run.id])
            proc.adopt(found.get(run.id, []))
            await proc.kill_tree(grace, first_signal)

    async def _supervise(self, run: Run, proc: ManagedProcess, timeout_s: float | None) -> None:
        child = proc.proc
        readers: list[asyncio.Future[Any]]
        if run.terminal is not None:
            readers = [run.terminal.closed]
        else:
            readers = [pipe.closed for pipe in run.pipes]
        scanner = asyncio.ensure_future(self._scan_descendants(run, proc))
        first_signal = signal.SIGHUP if run.terminal is not None else signal.SIGTERM
        try:
            try:
                await asyncio.wait_for(proc.wait_exit(), timeout_s)
            except asyncio.TimeoutError:
                if run.stop_reason is None:
                    run.stop_reason = "timed_out"
                    run.stop_signal = first_signal.name
                await self._kill(run, KILL_GRACE_S, first_signal)
            scanner.cancel()
            # What it left running in the background goes with it (and releases the pipes or the terminal).
            await self._kill(run, 1.0, first_signal)
            try:
                await asyncio.wait_for(asyncio.gather(*readers), PIPE_DRAIN_S)
            except asyncio.TimeoutError:
                log.warning("run %s: a process we could not find kept its output open", run.id)
                for reader in readers:
                    reader.cancel()
        except Exception:
            log.exception("run %s failed", run.id)
            run.record["error"] = "the runtime failed supervising this run (see its log)"
            if child.returncode is None:
                await proc.kill_tree(0.5)
        finally:
            scanner.cancel()
            if run.terminal is not None:
                run.terminal.close()
            for pipe in run.pipes:
                pipe.close()
            run.output.close()
            try:
                await asyncio.shield(run.output.drained())  # an ended run has all its output on disk
            finally:
                self._finish(run, child.returncode)

    @staticmethod
    def _decoding(run: Run, name: str) -> Callable[[bytes], None]:
        """What a pipe reader calls with each chunk (b"" at the end): decoded as UTF-8 and appended to the run."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")

        def on_data(chunk: bytes) -> None:
            if chunk.isascii() and chunk and not decoder.getstate()[0]:
                if run.append_ascii(name, chunk):
                    return
            text = decoder.decode(chunk, final=not chunk)
            if text:
                run.append(name, text, len(chunk))
            else:
                run.record["output_bytes"] += len(chunk)  # the start of a UTF-8 sequence: sent with the next chunk

        return on_data

    async def _scan_descendants(self, run: Run, proc: ManagedProcess) -> None:
        """Remember the tree while it runs (a grandchild whose parent exits is no longer linked to us),
        and save the record now and then, so that a restart after a crash knows how far the run got."""
        scans = 0
        while proc.returncode is None:
            await self.ctx.run_blocking(proc.remember_descendants)
            await asyncio.sleep(DESCENDANT_SCAN_S)
            scans += 1
            if scans % SAVE_EVERY_SCANS == 0:
                self.save_soon(run)

    def _finish(self, run: Run, code: int | None) -> None:
        run.output.close()
        if run.terminal_log is not None:
            run.terminal_log.close()
            run.record["output_bytes"] = run.terminal_log.end
        if run.stdin is not None:
            run.stdin.close()
            run.stdin = None
        status, exit_code, signal_name = self.final_state(run, code)
        record = run.record
        record.update(status=status, ended_at=now_iso(), pid=None, exit_code=exit_code, signal=signal_name)
        record["last_seq"] = run.last_seq
        record["output_dropped_bytes"] = run.output.dropped_bytes
        error = run.output.error or (run.terminal_log.error if run.terminal_log is not None else None)
        if error and not record.get("error"):
            record["error"] = error
        run.proc = None
        run.terminal = None
        run.ended.set()
        run.wake()
        self.publish(run)
        self.save_soon(run)
        self._track(asyncio.ensure_future(self._prune()))

    def save_soon(self, run: Run) -> None:
        """Write the run's record off the IOLoop; saves of one run never overtake each other."""
        run.dirty = True
        if run.saving is None:
            run.saving = asyncio.ensure_future(self._save(run))
            self._track(run.saving)

    async def _save(self, run: Run) -> None:
        try:
            while run.dirty:
                run.dirty = False
                try:
                    await self.ctx.run_blocking(self.store.save, self.public(run))
                except Exception:
                    log.exception("cannot save run %s", run.id)
        finally:
            run.saving = None

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _prune(self) -> None:
        """Delete the oldest ended runs beyond ``KEEP_RUNS``."""
        ended = [r for r in self.runs.values() if r.ended.is_set() and not r.listeners]
        ended.sort(key=lambda r: (r.record[self.time_key], r.id))
        for run in ended[: max(0, len(ended) - KEEP_RUNS)]:
            self.runs.pop(run.id, None)
            await self.ctx.run_blocking(self.store.remove, run.id)


def signal_name(code: int | None) -> str | None:
    """The name of the signal that ended a child with return code ``code`` (negative), else None."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"SIG{-code}"
