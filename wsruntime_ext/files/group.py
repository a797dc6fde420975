"""Small whole-body writes landed in groups (a group commit).

A small ``PUT`` (its body gathered whole, up to handlers.SMALL_WRITE) is
queued here instead of going to the shared thread pool. A writer thread
takes what is queued, in arrival order (up to GROUP_WRITES), and for the
group:

1. resolves each path (the jail), creates its recorded temporary, writes the
   body and asks the kernel to start writing it to disk (``start_writeback``);
2. fsyncs each temporary and lands it (stamp, precondition check, rename),
   one after the other in arrival order — two writes of one file in a group
   behave as they would one after the other;
3. fsyncs each directory a landed write touched, once for the group;
4. answers them all with one wake-up of the IOLoop.

Every guarantee of a single write holds for each: the temporary is fsynced
before its rename, and a write is answered only after an fsync of its
directory that began after its rename. What changes is the cost. Eight pool
threads each running write-fsync-rename-fsync hand the GIL to each other (and
back to the IOLoop) at every system call, and each write is a wake-up of the
IOLoop of its own; here a group's disk writes are started together, its
directories synced once, its answers sent at one wake-up. WRITERS threads
take groups in turn, so that one group's disk waits overlap the next one's
work (with a single thread the IOLoop and the writer wait for each other).
Measured in bench/README.md ("Files at full speed"). A write that fails (the
jail, a precondition, a full disk) fails alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections import deque
from typing import Any

from wsruntime_ext.files.errors import os_error
from wsruntime_ext.files.service import FileService, Preconditions
from wsruntime_ext.paths import AtomicWriter, WorkspacePath, fsync_directory

log = logging.getLogger("wsruntime.files")

WRITERS = 2  # threads landing groups: one group's disk waits overlap the next one's work
GROUP_WRITES = 16  # writes taken in one group at most (more wait for the other thread)
GROUP_BYTES = 8 << 20  # ... and bytes of bodies (one body is always taken, whatever its size)


@dataclasses.dataclass
class _Write:
    path: str
    data: bytes
    preconditions: Preconditions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[WorkspacePath, dict[str, Any]]]
    wp: WorkspacePath | None = None
    writer: AtomicWriter | None = None
    result: dict[str, Any] | None = None
    error: BaseException | None = None


class WriteGroups:
    """The queue of small writes and the threads that land them in groups."""

    def __init__(self, files: FileService) -> None:
        self.files = files
        self._queue: deque[_Write] = deque()
        self._wake = threading.Condition()
        self._running = 0  # writer threads started and not yet finished (they start at the first write)
        self._started = False
        self._closed = False
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()

    def write(
        self, path: str, data: bytes, preconditions: Preconditions
    ) -> asyncio.Future[tuple[WorkspacePath, dict[str, Any]]]:
        """Queue a write of ``data`` to the client path ``path``: (its WorkspacePath, FileService.commit's result)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[WorkspacePath, dict[str, Any]]] = loop.create_future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the runtime is shutting down")
            self._queue.append(_Write(path, data, preconditions, loop, future))
            if not self._started:
                self._started = True
                for i in range(WRITERS):
                    self._running += 1
                    threading.Thread(target=self._run, name=f"wsruntime-writes-{i}", daemon=True).start()
            self._wake.notify()
        return future

    def close(self) -> concurrent.futures.Future[None]:
        """Take no more writes; what is queued still lands. Done once the threads have finished."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            if not self._running and not self._stopped.done():
                self._stopped.set_result(None)
        return self._stopped

    # -- the threads ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._queue and not self._closed:
                        self._wake.wait()
                    if not self._queue:
                        return
                    group = [self._queue.popleft()]
                    size = len(group[0].data)
                    while self._queue and len(group) < GROUP_WRITES and size + len(self._queue[0].data) <= GROUP_BYTES:
                        size += len(self._queue[0].data)
                        group.append(self._queue.popleft())
                try:
                    self._land(group)
                except BaseException as exc:  # a bug: every write of the group fails with it, the thread goes on
                    log.exception("a group of writes failed")
                    for write in group:
                        self._fail(write, write.error or exc)
                self._answer(group)
        finally:
            with self._wake:
                self._running -= 1
                if not self._running and self._closed and not self._stopped.done():
                    self._stopped.set_result(None)

    def _land(self, group: list[_Write]) -> None:
        files = self.files
        for write in group:
            try:
                write.wp = files.resolve_write(write.path)
                write.writer = files.begin_write(write.wp)
                files.write_chunk(write.writer, write.data, write.wp.rel)
                try:
                    write.writer.start_writeback()
                except OSError as exc:  # its flush met a full disk (507), as the commit's would
                    raise os_error(exc, write.wp.rel, writing=True) from None
            except BaseException as exc:
                self._fail(write, exc)
        synced: dict[str, list[_Write]] = {}
        for write in group:
            if write.error is not None or write.writer is None or write.wp is None:
                continue
            try:
                write.result = files.commit(write.writer, write.wp, write.preconditions, sync_directories=False)
            except BaseException as exc:
                self._fail(write, exc)
                continue
            for directory in write.writer.directories:
                synced.setdefault(directory, []).append(write)
        for directory, writes in synced.items():
            try:
                fsync_directory(directory)
            except OSError as exc:  # the folder went away under the write: as a single write reports it
                for write in writes:
                    assert write.wp is not None
                    write.error = os_error(exc, write.wp.rel, writing=True)

    @staticmethod
    def _fail(write: _Write, exc: BaseException) -> None:
        write.error = exc
        if write.writer is not None and not write.writer._done:
            write.writer.abort()

    @staticmethod
    def _answer(group: list[_Write]) -> None:
        loops: dict[asyncio.AbstractEventLoop, list[_Write]] = {}
        for write in group:
            loops.setdefault(write.loop, []).append(write)
        for loop, writes in loops.items():
            try:
                loop.call_soon_threadsafe(_settle, writes)
            except RuntimeError:  # the loop is closed: nobody waits for these answers any more
                pass


def _settle(writes: list[_Write]) -> None:
    for write in writes:
        if write.future.cancelled():
            continue
        if write.error is not None:
            write.future.set_exception(write.error)
        else:
            assert write.wp is not None and write.result is not None
            write.future.set_result((write.wp, write.result))
