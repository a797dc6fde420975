"""The file watcher behind ``file_changed``, ``git_changed`` and ``resync`` (API.md "WebSocket events").

``--watch inotify`` (the default) uses inotify through ctypes on the IOLoop
and falls back to polling where inotify is missing; ``--watch poll`` polls;
``--watch off`` reports nothing. Whatever the backend, changes pass through
one :class:`Coalescer`: the first change to a path goes out at once, further
changes within ``COALESCE_WINDOW_S`` are held and the final state is reported
at the end of the window (a deletion at once) — a single save arrives in
milliseconds, a thousand writes to one file become a handful of events, and
the last one is never lost. A rename is ``deleted`` + ``created``. ``git_changed`` is sent when
HEAD, the index or a ref changes; ``resync`` when events were lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from wsruntime_ext.watch.inotify import InotifyBackend
from wsruntime_ext.watch.poll import PollingBackend
from wsruntime_ext.watch.rules import IgnoreRules, state_dir_rel

if TYPE_CHECKING:
    from wsruntime_ext.hub import EventHub

log = logging.getLogger("wsruntime.watch")

COALESCE_WINDOW_S = 0.1
GIT_WINDOW_S = 0.2  # a git command touches HEAD, the index and refs in a few milliseconds
RESYNC_WINDOW_S = 0.5
REPORT_SLICE = 500  # changes published between two chances for the sockets to drain
DELETED_KEPT = 100_000  # deletions remembered for the walks under way (see Watcher.deleted_since)
T = TypeVar("T")

__all__ = ["IgnoreRules", "Watcher"]


class _Burst:
    """A path that changed within the current window: what clients were told, and what happened since."""

    __slots__ = ("exists", "is_dir", "pending", "reported_exists", "saw_create", "saw_delete", "saw_modify", "timer")

    def __init__(self, exists: bool, is_dir: bool) -> None:
        self.reported_exists = exists
        self.exists = exists
        self.is_dir = is_dir
        self.pending = False
        self.saw_delete = False
        self.saw_modify = False
        self.saw_create = False  # moved onto within the window (a rename over it): its content changed
        self.timer: asyncio.TimerHandle | None = None


class Coalescer:
    """Leading-edge and trailing-edge throttling per path: at once, then at most once a window."""

    def __init__(self, emit: Callable[[str, str, bool], None], window: float = COALESCE_WINDOW_S) -> None:
        self.emit = emit
        self.window = window
        self.bursts: dict[str, _Burst] = {}

    def change(self, path: str, kind: str, is_dir: bool, moved: bool = False) -> None:
        """One change; ``moved``: a ``created`` that is a rename onto the path (it may replace what was there)."""
        burst = self.bursts.get(path)
        if burst is None:
            self.emit(path, kind, is_dir)
            self._open(path, _Burst(kind != "deleted", is_dir))
            return
        burst.pending = True
        burst.is_dir = is_dir
        if kind == "deleted":
            burst.exists = False
            burst.saw_delete = True
            # A deletion is final: it goes out now, so that a rename's two halves stay in order.
            if burst.timer is not None:
                burst.timer.cancel()
            self._flush(path, early=True)
        else:
            burst.exists = True
            burst.saw_modify = burst.saw_modify or kind == "modified"
            burst.saw_create = burst.saw_create or moved

    def _open(self, path: str, burst: _Burst) -> None:
        self.bursts[path] = burst
        burst.timer = asyncio.get_running_loop().call_later(self.window, self._flush, path)

    def _flush(self, path: str, early: bool = False) -> None:
        burst = self.bursts.pop(path)
        if not burst.pending:
            return
        emitted = False
        if not burst.exists:
            if burst.reported_exists:
                self.emit(path, "deleted", burst.is_dir)
                emitted = True
        elif not burst.reported_exists:
            self.emit(path, "created", burst.is_dir)
            emitted = True
        elif burst.saw_delete:
            self.emit(path, "deleted", burst.is_dir)
            self.emit(path, "created", burst.is_dir)
            emitted = True
        elif burst.saw_create:  # replaced by a rename over it, as it would be reported outside a burst
            self.emit(path, "created", burst.is_dir)
            emitted = True
        elif burst.saw_modify:
            self.emit(path, "modified", burst.is_dir)
            emitted = True
        if emitted or early:  # keep throttling a path that keeps changing
            self._open(path, _Burst(burst.exists if emitted else burst.reported_exists, burst.is_dir))

    def close(self) -> None:
        for burst in self.bursts.values():
            if burst.timer is not None:
                burst.timer.cancel()
        self.bursts.clear()


class Throttle:
    """Calls ``fire`` at once, then at most once per window while triggers keep coming."""

    def __init__(self, fire: Callable[[], None], window: float) -> None:
        self.fire = fire
        self.window = window
        self._timer: asyncio.TimerHandle | None = None
        self._pending = False

    def trigger(self) -> None:
        if self._timer is not None:
            self._pending = True
            return
        self.fire()
        self._timer = asyncio.get_running_loop().call_later(self.window, self._end)

    def _end(self) -> None:
        self._timer = None
        if self._pending:
            self._pending = False
            self.trigger()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GitTracker:
    """Where the workspace's git directory is, and whether a changed path is HEAD, the index or a ref."""

    def __init__(self, workspace: str) -> None:
        self.workspace = workspace
        self.git_dir: str | None = None
        self.common_dir: str | None = None

    def locate(self) -> bool:
        """Find ``.git`` (a directory, or a file pointing at a worktree's git directory); True if it moved."""
        git_dir = common_dir = None
        dot_git = os.path.join(self.workspace, ".git")
        try:
            if os.path.isdir(dot_git):
                git_dir = dot_git
            elif os.path.isfile(dot_git):
                with open(dot_git, encoding="utf-8", errors="replace") as f:
                    line = f.readline().strip()
                if line.startswith("gitdir:"):
                    git_dir = os.path.normpath(os.path.join(self.workspace, line[7:].strip()))
            if git_dir is not None:
                common_dir = git_dir
                common_file = os.path.join(git_dir, "commondir")
                if os.path.isfile(common_file):
                    with open(common_file, encoding="utf-8", errors="replace") as f:
                        common_dir = os.path.normpath(os.path.join(git_dir, f.readline().strip()))
        except OSError:
            git_dir = common_dir = None
        moved = (git_dir, common_dir) != (self.git_dir, self.common_dir)
        self.git_dir, self.common_dir = git_dir, common_dir
        return moved

    @property
    def refs_dir(self) -> str | None:
        return None if self.common_dir is None else os.path.join(self.common_dir, "refs")

    def roots(self) -> list[str]:
        """The git directory and the common one (they differ in a worktree)."""
        if self.git_dir is None or self.common_dir is None:
            return []
        return [self.git_dir] if self.git_dir == self.common_dir else [self.git_dir, self.common_dir]

    def directories(self) -> list[str]:
        """The roots and every directory of refs: what polling compares."""
        found = self.roots()
        if self.refs_dir is not None:
            for top, dirs, _files in os.walk(self.refs_dir):
                found.append(top)
                dirs.sort()
        return found

    def relevant(self, path: str) -> bool:
        if self.git_dir is None or self.common_dir is None or path.endswith(".lock"):
            return False
        return (
            path in (os.path.join(self.git_dir, "HEAD"), os.path.join(self.git_dir, "index"))
            or path == os.path.join(self.common_dir, "packed-refs")
            or path.startswith(os.path.join(self.common_dir, "refs") + os.sep)
        )

    def signature(self) -> tuple[Any, ...]:
        """What polling compares from pass to pass (blocking: a few stats)."""
        self.locate()
        if self.git_dir is None or self.common_dir is None:
            return ()
        parts: list[Any] = []
        for path in (
            os.path.join(self.git_dir, "HEAD"),
            os.path.join(self.git_dir, "index"),
            os.path.join(self.common_dir, "packed-refs"),
            *self.directories(),
        ):
            try:
                st = os.stat(path)
                parts.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                parts.append((path, None))
        return tuple(parts)


class Watcher:
    """Chooses a backend, coalesces what it reports, and publishes it to the hub."""

    def __init__(
        self,
        hub: EventHub,
        workspace: str,
        state_dir: str,
        mode: str,
        ignore: tuple[str, ...],
        run_blocking: Callable[..., Awaitable[Any]],
    ) -> None:
        self.hub = hub
        self.workspace = workspace
        self.mode = mode
        self.rules = IgnoreRules(ignore, state_dir_rel(workspace, state_dir))
        self.run_blocking = run_blocking
        self.backend: InotifyBackend | PollingBackend | None = None
        self.poller: PollingBackend | None = None  # for what inotify could not watch
        self.fallback_reason: str | None = None
        self.git = GitTracker(workspace)
        self.git_polled = False
        self._git_signature: tuple[Any, ...] = ()
        self.resyncs = 0
        self._coalescer = Coalescer(self._publish)
        # path -> loop time of its last "deleted": a walk that found it before that must not report it created
        self._deleted: dict[str, float] = {}
        self._git_throttle = Throttle(self._publish_git_changed, GIT_WINDOW_S)
        self._resync_reason = "overflow"
        self._resync_throttle = Throttle(self._publish_resync, RESYNC_WINDOW_S)
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.mode == "off":
            return
        await self.run_blocking(self.git.locate)
        if self.mode == "inotify":
            try:
                self.backend = InotifyBackend(self)
            except OSError as exc:
                self.fallback_reason = f"inotify is unavailable: {exc.strerror or exc}"
                log.warning("%s; polling instead", self.fallback_reason)
        if isinstance(self.backend, InotifyBackend):
            await self.backend.start()
            await self._watch_git(self.backend)
        else:
            self.backend = PollingBackend(self)
            self.git_polled = True
            self._git_signature = await self.run_blocking(self.git.signature)
            await self.backend.start()

    async def stop(self) -> None:
        for backend in (self.backend, self.poller):
            if backend is not None:
                await backend.stop()
        for task in list(self._tasks):
            task.cancel()
        self._coalescer.close()
        self._git_throttle.close()
        self._resync_throttle.close()

    @property
    def ready(self) -> bool:
        """The first walk is done (and polling took over what inotify could not watch)."""
        if self.mode == "off":
            return True
        return self.backend is not None and self.backend.ready and (self.poller is None or self.poller.ready)

    def spawn(self, step: Awaitable[T]) -> asyncio.Future[T]:
        """Run a background step of a backend; kept so that stop() can cancel it."""
        task = asyncio.ensure_future(step)
        self._tasks.add(task)
        task.add_done_callback(self._step_done)
        return task

    def _step_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a watcher step failed", exc_info=task.exception())

    def health(self) -> dict[str, Any]:
        backend = "off" if self.backend is None else self.backend.name
        info: dict[str, Any] = {"backend": backend, "ready": self.ready}
        if self.backend is not None:
            info.update(self.backend.health())
        if self.poller is not None:
            info["backend"] = "inotify+poll"
            info["polled_directories"] = self.poller.scanner.stats()["directories"]
        if self.fallback_reason:
            info["fallback_reason"] = self.fallback_reason
        info["ignore"] = self.rules.patterns
        info["resyncs"] = self.resyncs
        return info

    # -- what the backends report ------------------------------------------------------------

    def file_changed(self, path: str, kind: str, is_dir: bool, moved: bool = False) -> None:
        if kind == "deleted":
            if len(self._deleted) >= DELETED_KEPT:
                self._deleted.clear()  # the walks they could concern are long over (each is seconds at most)
            self._deleted[path] = asyncio.get_running_loop().time()
        self._coalescer.change(path, kind, is_dir, moved)

    def deleted_since(self, path: str, since: float) -> bool:
        """Whether ``path`` or a folder above it was reported deleted at loop time ``since`` or later."""
        deleted = self._deleted
        if not deleted:
            return False
        while path:
            when = deleted.get(path)
            if when is not None and when >= since:
                return True
            path = path.rpartition("/")[0]
        return False

    async def report(self, changes: list[tuple[str, str, bool]], found_at: float | None = None) -> None:
        """Many changes at once (a walk, a polling pass): in slices, letting the sockets drain in between.

        ``found_at``: the loop time the walk that found them began; what was reported deleted since (it, or
        a folder above it: a tree made and removed while it was walked) is not reported created after that.
        """
        for start in range(0, len(changes), REPORT_SLICE):
            if start:
                await asyncio.sleep(0.001)
            for path, kind, is_dir in changes[start : start + REPORT_SLICE]:
                if found_at is not None and kind == "created" and self.deleted_since(path, found_at):
                    continue
                self._coalescer.change(path, kind, is_dir)

    def resync(self, reason: str) -> None:
        self._resync_reason = reason
        self._resync_throttle.trigger()

    def poll_unwatched(self, directories: list[str]) -> int:
        """inotify hit its watch limit: poll these subtrees. Returns how many were not polled already."""
        if self.poller is None:
            self.poller = PollingBackend(self, [])
            self.spawn(self.poller.start())
        known = self.poller.scanner.roots
        fresh = [d for d in directories if d not in known]
        self.poller.add_roots(fresh)
        return len(fresh)

    def unwatched_moved(self, old: str, new: str) -> None:
        """A directory moved: polled subtrees below it are polled under their new path."""
        if self.poller is None:
            return
        moved = [
            new + root[len(old) :] for root in self.poller.scanner.roots if root == old or root.startswith(old + "/")
        ]
        if moved:
            self.poller.add_roots(moved)  # the old paths are dropped by the next pass: they are gone

    def git_location_changed(self) -> None:
        """``.git`` appeared, vanished or was replaced at the workspace's root."""
        self.spawn(self._relocate_git())

    async def _relocate_git(self) -> None:
        moved = await self.run_blocking(self.git.locate)
        if moved and isinstance(self.backend, InotifyBackend):
            self.backend.unwatch_git()
            await self._watch_git(self.backend)
        self._git_throttle.trigger()

    async def _watch_git(self, backend: InotifyBackend) -> None:
        if self.git.refs_dir is not None:
            await self.run_blocking(backend.watch_git, self.git.roots(), self.git.refs_dir)

    def git_path_changed(self, path: str) -> None:
        if self.git.relevant(path):
            self._git_throttle.trigger()

    def git_poll_needed(self) -> None:
        """The watch limit left git unwatched: compare its signature on every polling pass."""
        self.git_polled = True
        self.poll_unwatched([])

    async def poll_git(self) -> None:
        if not self.git_polled:
            return
        signature = await self.run_blocking(self.git.signature)
        if signature != self._git_signature:
            self._git_signature = signature
            self._git_throttle.trigger()

    # -- publishing ---------------------------------------------------------------------

    def _publish(self, path: str, kind: str, is_dir: bool) -> None:
        self.hub.publish("file_changed", {"path": path, "event_type": kind, "is_dir": is_dir})

    def _publish_git_changed(self) -> None:
        self.hub.publish("git_changed", {})

    def _publish_resync(self) -> None:
        self.resyncs += 1
        self.hub.publish("resync", {"reason": self._resync_reason})
