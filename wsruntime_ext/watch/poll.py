"""The polling backend: an mtime/size scan, for systems without inotify and for what it cannot watch.

A full stat of every file on every pass would cost ~0.2 s of CPU per 100k
files, so a pass is tiered:

1. every known directory is ``lstat``-ed: a directory's mtime changes when an
   entry is created, deleted or renamed in it (which is also how editors and
   git save files), and only such directories are listed again;
2. files that changed recently ("hot" files) are ``lstat``-ed on every pass;
3. the remaining files are ``lstat``-ed in a rotation, a slice per pass.

The interval between passes adapts to what a pass costs (CPU time measured
in the worker thread): about 1 % of a core when idle, up to 10 % for a few
seconds after a change, never more often than every 0.1 s. Every pass runs
in a worker thread, off the IOLoop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

from wsruntime_ext.paths import REPLACING
from wsruntime_ext.watch.rules import IgnoreRules

if TYPE_CHECKING:
    from wsruntime_ext.watch import Watcher

log = logging.getLogger("wsruntime.watch")

IDLE_CPU_SHARE = 0.01  # of one core, while nothing changes
ACTIVE_CPU_SHARE = 0.10  # for ACTIVE_S after a change
ACTIVE_S = 5.0
MIN_INTERVAL_S = 0.1
IDLE_MIN_INTERVAL_S = 0.25
MAX_INTERVAL_S = 5.0
HOT_S = 60.0  # a file that changed within this long is checked on every pass
HOT_LIMIT = 4096
MIN_ROTATION = 256  # files of the rotation checked per pass, at least
REPORT_CAP = 10_000  # entries of a new directory reported one by one; beyond that, a resync

Change = tuple[str, str, bool]  # (path, event type, is_dir)


class _Stopped(Exception):
    pass


class PollScanner:
    """What the workspace (or some subtrees of it) looked like at the last pass, and how to compare."""

    def __init__(self, workspace: str, rules: IgnoreRules, roots: list[str] | None = None) -> None:
        self.workspace = workspace
        self.rules = rules
        self.roots: list[str] = list(roots) if roots is not None else [""]
        self.dirs: dict[str, tuple[int, int]] = {}  # rel → (mtime_ns, ino)
        self.children: dict[str, dict[str, bool]] = {}  # rel dir → {name: is_dir}
        self.files: dict[str, tuple[int, int, int]] = {}  # rel → (mtime_ns, size, ino)
        self.hot: dict[str, float] = {}  # rel → when it last changed (monotonic)
        self.stopping = False
        self.capped = False
        self._order: list[str] = []
        self._order_stale = True
        self._cursor = 0
        self._new_roots: list[str] = []
        self._lock = threading.Lock()  # guards _new_roots, handed in from the IOLoop
        self.dir_cost_s = 0.0  # CPU seconds of the directory tier of the last pass
        self.file_cost_s = 2e-6  # CPU seconds per file lstat (a moving average)

    # -- called from the IOLoop -----------------------------------------------------------

    def add_roots(self, roots: list[str]) -> None:
        with self._lock:
            self._new_roots.extend(roots)

    @property
    def has_new_roots(self) -> bool:
        with self._lock:
            return bool(self._new_roots)

    # -- called in a worker thread ----------------------------------------------------------

    def baseline(self) -> None:
        """Record the current state without reporting anything."""
        for root in self.roots:
            self._add_tree(root, None)

    def scan(self, rotation: int) -> list[Change]:
        """One pass; returns the changes since the previous one."""
        changes: list[Change] = []
        self.capped = False
        with self._lock:
            new_roots, self._new_roots = self._new_roots, []
        for root in new_roots:
            if root not in self.dirs and not any(root.startswith(r + "/") or r == "" for r in self.roots):
                self.roots.append(root)
                self._add_tree(root, None)
        started = time.thread_time()
        for rel in list(self.dirs):
            if self.stopping:
                raise _Stopped
            signature = self.dirs.get(rel)
            if signature is None:
                continue  # dropped with its parent earlier in this pass
            try:
                st = os.lstat(self._abs(rel))
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                if rel in self.roots:  # a polled root that vanished: its parent reports it
                    self._drop_tree(rel)
                    self.roots.remove(rel)
                continue
            if (st.st_mtime_ns, st.st_ino) != signature:
                self.dirs[rel] = (st.st_mtime_ns, st.st_ino)
                self._relist(rel, changes)
        self.dir_cost_s = time.thread_time() - started

        now = time.monotonic()
        started = time.thread_time()
        checked = 0
        for rel, when in list(self.hot.items()):
            if now - when > HOT_S:
                del self.hot[rel]
            else:
                self._check_file(rel, changes, now)
                checked += 1
        if self._order_stale:
            self._order = list(self.files)
            self._order_stale = False
            self._cursor = min(self._cursor, len(self._order))
        count = min(rotation, len(self._order))
        for _ in range(count):
            if self._cursor >= len(self._order):
                self._cursor = 0
            rel = self._order[self._cursor]
            self._cursor += 1
            if rel in self.files and rel not in self.hot:
                self._check_file(rel, changes, now)
                checked += 1
        if checked:
            per_file = (time.thread_time() - started) / checked
            self.file_cost_s = 0.8 * self.file_cost_s + 0.2 * max(per_file, 1e-7)
        return changes

    def _abs(self, rel: str) -> str:
        return os.path.join(self.workspace, rel) if rel else self.workspace

    def _list(self, rel: str) -> dict[str, bool] | None:
        entries: dict[str, bool] = {}
        try:
            for name, _child, is_dir in self.rules.entries(self._abs(rel), rel):
                entries[name] = is_dir
        except OSError:
            return None
        return entries

    def _add_tree(self, top: str, changes: list[Change] | None) -> None:
        """Record ``top`` and everything below; with ``changes``, report what is inside as created."""
        stack = [top]
        while stack:
            if self.stopping:
                raise _Stopped
            rel = stack.pop()
            try:
                st = os.lstat(self._abs(rel))
            except OSError:
                continue
            entries = self._list(rel)
            if entries is None:
                continue
            self.dirs[rel] = (st.st_mtime_ns, st.st_ino)
            self.children[rel] = entries
            for name, is_dir in entries.items():
                child = f"{rel}/{name}" if rel else name
                if changes is not None:
                    self._report(changes, (child, "created", is_dir))
                if is_dir:
                    stack.append(child)
                else:
                    self._record_file(child)

    def _report(self, changes: list[Change], change: Change) -> None:
        if len(changes) < REPORT_CAP:
            changes.append(change)
        else:
            self.capped = True

    def _record_file(self, rel: str) -> tuple[int, int, int] | None:
        try:
            st = os.lstat(self._abs(rel))
        except OSError:
            return None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if rel not in self.files:
            self._order_stale = True
        self.files[rel] = signature
        return signature

    def _relist(self, rel: str, changes: list[Change]) -> None:
        """A directory's entries changed: report what came and went."""
        new = self._list(rel)
        if new is None:
            return  # gone: the pass over its parent reports it
        old = self.children.get(rel, {})
        self.children[rel] = new
        now = time.monotonic()
        for name, was_dir in old.items():
            is_dir = new.get(name)
            if is_dir is None or is_dir != was_dir:
                child = f"{rel}/{name}" if rel else name
                self._forget(child, was_dir)
                self._report(changes, (child, "deleted", was_dir))
        for name, is_dir in new.items():
            child = f"{rel}/{name}" if rel else name
            if old.get(name) == is_dir:
                if not is_dir:
                    self._check_file(child, changes, now)  # replaced by a rename keeps the name
                continue
            self._report(changes, (child, "created", is_dir))
            if is_dir:
                self._add_tree(child, changes)
            elif self._record_file(child) is not None:
                self._heat(child, now)

    def _forget(self, rel: str, is_dir: bool) -> None:
        if is_dir:
            self._drop_tree(rel)
        elif self.files.pop(rel, None) is not None:
            self._order_stale = True
            self.hot.pop(rel, None)

    def _drop_tree(self, rel: str) -> None:
        prefix = rel + "/"
        for d in [d for d in self.dirs if d == rel or d.startswith(prefix)]:
            del self.dirs[d]
            self.children.pop(d, None)
        for f in [f for f in self.files if f.startswith(prefix)]:
            del self.files[f]
            self.hot.pop(f, None)
        self._order_stale = True

    def _check_file(self, rel: str, changes: list[Change], now: float) -> None:
        old = self.files.get(rel)
        if old is None:
            return
        try:
            st = os.lstat(self._abs(rel))
        except OSError:
            return  # deleted: its directory's mtime changed too, and the directory tier reports it
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == old:
            return
        self.files[rel] = signature
        self._heat(rel, now)
        # A new inode under the same name is a rename over it: API.md's "created"; else "modified" — as is a
        # write of the runtime's own that lands by replacing its target (paths.REPLACING).
        renamed_over = signature[2] != old[2] and not REPLACING.take(self._abs(rel))
        self._report(changes, (rel, "created" if renamed_over else "modified", False))

    def _heat(self, rel: str, now: float) -> None:
        if len(self.hot) >= HOT_LIMIT:
            oldest = min(self.hot, key=self.hot.__getitem__)
            del self.hot[oldest]
        self.hot[rel] = now

    def stats(self) -> dict[str, int]:
        return {"directories": len(self.dirs), "files": len(self.files)}


class PollingBackend:
    """Runs :class:`PollScanner` passes in a worker thread, at an interval that follows their cost."""

    name = "poll"

    def __init__(self, watcher: Watcher, roots: list[str] | None = None) -> None:
        self.watcher = watcher
        self.scanner = PollScanner(watcher.workspace, watcher.rules, roots)
        self.started = False
        self.interval = IDLE_MIN_INTERVAL_S
        self.passes = 0
        self._last_change = -ACTIVE_S
        self._wakeup = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._task = self.watcher.spawn(self._run())

    async def stop(self) -> None:
        self.scanner.stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 3.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    @property
    def ready(self) -> bool:
        """The first scan is done, and so is that of every subtree handed over since."""
        return self.started and not self.scanner.has_new_roots

    def add_roots(self, roots: list[str]) -> None:
        self.scanner.add_roots(roots)
        self._wakeup.set()

    def health(self) -> dict[str, Any]:
        return {**self.scanner.stats(), "interval_s": round(self.interval, 3)}

    async def _run(self) -> None:
        scanner = self.scanner
        try:
            await self.watcher.run_blocking(scanner.baseline)
            self.started = True
            while not scanner.stopping:
                now = time.monotonic()
                active = now - self._last_change < ACTIVE_S
                share = ACTIVE_CPU_SHARE if active else IDLE_CPU_SHARE
                # Half the CPU budget for the directory tier, half for the rotation of files.
                floor = MIN_INTERVAL_S if active else IDLE_MIN_INTERVAL_S
                self.interval = min(MAX_INTERVAL_S, max(floor, scanner.dir_cost_s / (share / 2)))
                rotation = max(MIN_ROTATION, int(self.interval * share / 2 / scanner.file_cost_s))
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
                self._wakeup.clear()
                if scanner.stopping:
                    break
                changes = await self.watcher.run_blocking(scanner.scan, rotation)
                self.passes += 1
                if changes:
                    self._last_change = time.monotonic()
                await self.watcher.report(changes)
                if scanner.capped:
                    self.watcher.resync("too_many_changes")
                await self.watcher.poll_git()
        except _Stopped:
            pass
        except Exception:
            log.exception("the polling watcher stopped")
