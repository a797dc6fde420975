"""The inotify backend: Linux's inotify through ``ctypes``, its descriptor read on the IOLoop.

Every directory of the workspace that is not ignored gets a watch; new
directories are watched as they appear (and what was created in them before
the watch took hold is reported), moved directories keep their watches under
their new path, and a directory moved in from outside is walked. Walks run in
a worker thread; the table of watches is shared under a lock so that an event
never arrives for a watch the IOLoop does not know yet.

When the kernel's queue overflows (``IN_Q_OVERFLOW``) the backend reports a
resync and walks the tree again; when the watch limit is reached (``ENOSPC``)
it reports a resync and hands the directories it could not watch to a polling
scanner.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import tornado.ioloop

from wsruntime_ext.paths import REPLACING
from wsruntime_ext.temps import TEMP_SUFFIX

if TYPE_CHECKING:
    from wsruntime_ext.watch import Watcher

log = logging.getLogger("wsruntime.watch")

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

TREE_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
GIT_MASK = (
    IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ONLYDIR | IN_DONT_FOLLOW
)
_TEMP_SUFFIX = TEMP_SUFFIX.encode()
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len — then len bytes of NUL-padded name
# One read per wakeup, at most ~1,400 events: between two reads the sockets drain, so that a burst
# (a checkout of thousands of files) never fills a subscriber's queue in one go. The kernel's queue
# (fs.inotify.max_queued_events) holds the rest meanwhile.
READ_SIZE = 1 << 16
MAX_READS_PER_WAKEUP = 1
# Reads at most this often: events that come faster (the runtime's own writes under load make six each)
# gather in the kernel meanwhile and are read together; an event after a quiet spell is read at once.
READ_INTERVAL_S = 0.002
MOVE_PAIR_WAIT_S = 0.05  # how long an IN_MOVED_FROM of a directory waits for its IN_MOVED_TO
REPORT_CAP = 10_000  # entries found in a new directory reported one by one; beyond that, a resync


class Inotify:
    """A thin ctypes binding: one non-blocking inotify instance."""

    _libc: Any = None

    def __init__(self) -> None:
        if Inotify._libc is None:
            Inotify._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
                getattr(Inotify._libc, name).restype = ctypes.c_int
            Inotify._libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
            Inotify._libc.inotify_rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
        fd = Inotify._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        wd: int = Inotify._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def rm_watch(self, wd: int) -> None:
        Inotify._libc.inotify_rm_watch(self.fd, wd)  # EINVAL when the watch is already gone: fine

    def read(self) -> bytes:
        try:
            return os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_events(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """``(wd, mask, cookie, name)`` for each ``struct inotify_event`` in a buffer read from the fd."""
    offset = 0
    end = len(data)
    while offset + _HEADER.size <= end:
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        yield wd, mask, cookie, name


def encode_event(wd: int, mask: int, cookie: int = 0, name: bytes = b"") -> bytes:
    """One event in the kernel's layout (the tests feed the parser with these)."""
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return _HEADER.pack(wd, mask, cookie, len(padded)) + padded


class WatchTable:
    """Watch descriptor ↔ workspace-relative directory, shared by the IOLoop and the walker thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.path_of: dict[int, str] = {}
        self.wd_of: dict[str, int] = {}

    def add(self, wd: int, rel: str) -> None:
        old = self.path_of.get(wd)
        if old is not None and self.wd_of.get(old) == wd:
            del self.wd_of[old]  # the same directory seen under a new name
        self.path_of[wd] = rel
        self.wd_of[rel] = wd

    def discard_wd(self, wd: int) -> None:
        rel = self.path_of.pop(wd, None)
        if rel is not None and self.wd_of.get(rel) == wd:
            del self.wd_of[rel]

    def subtree(self, rel: str) -> list[tuple[str, int]]:
        prefix = rel + "/"
        return [(p, wd) for p, wd in self.wd_of.items() if p == rel or p.startswith(prefix) or rel == ""]

    def move(self, old: str, new: str) -> None:
        """A watched directory was renamed: its watches (which follow the inode) now live under ``new``."""
        for path, wd in self.subtree(old):
            del self.wd_of[path]
            moved = new + path[len(old) :]
            self.path_of[wd] = moved
            self.wd_of[moved] = wd

    def __len__(self) -> int:
        return len(self.path_of)


class InotifyBackend:
    """Watches every directory of the workspace (minus the ignored ones) with one inotify instance."""

    name = "inotify"

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.workspace = watcher.workspace
        self.rules = watcher.rules
        self.inotify = Inotify()  # OSError when inotify is missing or the instance limit is reached
        self.table = WatchTable()
        self.git_dirs: dict[int, str] = {}  # wd → absolute directory inside the git dir
        self.unreadable = 0
        self.ready = False
        self._moves: dict[int, tuple[str, Any]] = {}  # cookie → (old path of a directory, timer)
        self._fresh: dict[str, int] = {}  # new directories being walked → walks in progress
        self._stopping = False
        self._walking_all = False
        self._walk_again = False
        self._io_loop: tornado.ioloop.IOLoop | None = None
        self._paused = False
        self._last_read = 0.0
        self._deferred: object | None = None  # the timer of a read put off (the handler is off meanwhile)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Register on the IOLoop, then walk the workspace in a worker thread."""
        self._io_loop = tornado.ioloop.IOLoop.current()
        self._io_loop.add_handler(self.inotify.fd, self._on_readable, tornado.ioloop.IOLoop.READ)
        self.watcher.spawn(self._walk_all())

    async def _walk_all(self) -> None:
        """Watch the whole tree (again after an overflow: watching a watched directory is a no-op)."""
        self._walking_all = True
        try:
            while True:
                self._walk_again = False
                await self._walk("", report=False)
                if not self._walk_again or self._stopping:
                    break
        finally:
            self._walking_all = False
        self.ready = True

    async def stop(self) -> None:
        self._stopping = True
        for _, timer in self._moves.values():
            timer.cancel()
        self._moves.clear()
        if self._deferred is not None:
            self._cancel_deferred()
        elif self._io_loop is not None and self.inotify.fd >= 0 and not self._paused:
            self._io_loop.remove_handler(self.inotify.fd)
        with self.table.lock:  # a walker thread still running sees the closed fd as EBADF
            self.inotify.close()

    def pause(self) -> None:
        """Stop reading events, so they pile up in the kernel (tests provoke a real overflow with it)."""
        if self._io_loop is not None and not self._paused:
            if self._deferred is not None:
                self._cancel_deferred()
            else:
                self._io_loop.remove_handler(self.inotify.fd)
            self._paused = True

    def resume(self) -> None:
        if self._io_loop is not None and self._paused:
            self._paused = False
            self._io_loop.add_handler(self.inotify.fd, self._on_readable, tornado.ioloop.IOLoop.READ)
            self._read_all()

    def health(self) -> dict[str, Any]:
        return {"directories": len(self.table), "unreadable_directories": self.unreadable}

    # -- walking (in a worker thread) ---------------------------------------------------------

    async def _walk(self, top: str, report: bool) -> None:
        """Watch ``top`` and every directory below it; with ``report``, say what was found as created."""
        if report:
            self._fresh[top] = self._fresh.get(top, 0) + 1
        started = asyncio.get_running_loop().time()
        try:
            found, failed, capped = await self.watcher.run_blocking(self._walk_blocking, top, report)
            if self._stopping:
                return
            await self.watcher.report([(rel, "created", is_dir) for rel, is_dir in found], found_at=started)
        except Exception:
            log.exception("walking %r failed", top or ".")
            return
        finally:
            if report:
                self._fresh[top] -= 1
                if not self._fresh[top]:
                    del self._fresh[top]
        if capped:
            self.watcher.resync("too_many_changes")
        if failed:
            self._watch_limit_reached(failed)

    def _walk_blocking(self, top: str, report: bool) -> tuple[list[tuple[str, bool]], list[str], bool]:
        found: list[tuple[str, bool]] = []
        failed: list[str] = []
        capped = False
        workspace = self.workspace
        stack = [top]
        seen: set[int] = set()
        with self.table.lock:
            before = set(self.table.path_of) if top == "" else set()
        while stack and not self._stopping:
            rel = stack.pop()
            path = os.path.join(workspace, rel) if rel else workspace
            try:
                seen.add(self._add(path, rel))
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    failed.append(rel)  # the poller takes this whole subtree
                    continue
                if exc.errno in (errno.EACCES, errno.EPERM):
                    self.unreadable += 1
                elif exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF):
                    log.warning("cannot watch %s: %s", path, exc.strerror)
                continue
            try:
                for _name, child, is_dir in self.rules.entries(path, rel):
                    if report:
                        if len(found) < REPORT_CAP:
                            found.append((child, is_dir))
                        else:
                            capped = True
                    if is_dir:
                        stack.append(child)
            except OSError:
                continue  # gone or unreadable since: its parent's events say so
        if before and not self._stopping:
            self._prune(before - seen)
        return found, failed, capped

    def _prune(self, stale: set[int]) -> None:
        """After a whole walk: forget the watches of directories that are gone (their IN_IGNORED may be lost).

        Only watches that existed before the walk began: those added meanwhile, by the walk of
        a new directory, were not there to be seen.
        """
        with self.table.lock:
            for wd in [wd for wd in self.table.path_of if wd in stale]:
                self.inotify.rm_watch(wd)
                self.table.discard_wd(wd)

    def _add(self, path: str, rel: str) -> int:
        with self.table.lock:
            if self.inotify.fd < 0:
                raise OSError(errno.EBADF, "closed")
            wd = self.inotify.add_watch(path, TREE_MASK)
            self.table.add(wd, rel)
            return wd

    def _watch_limit_reached(self, failed: list[str]) -> None:
        fresh = self.watcher.poll_unwatched(failed)
        if not fresh:
            return
        log.warning(
            "the inotify watch limit is reached (%d directories watched): polling %d more directories; "
            "raise it with: sysctl fs.inotify.max_user_watches=524288",
            len(self.table),
            fresh,
        )
        self.watcher.resync("watch_limit")

    # -- git ------------------------------------------------------------------------------

    def watch_git(self, directories: list[str], refs: str) -> None:
        """Watch the git directories and every directory of ``refs`` (a worktree's may lie outside the workspace).

        Each directory is listed after its watch is in place, so that one created
        meanwhile (``git init``, ``git branch feature/x``) is never missed.
        """
        stack = list(directories)
        while stack:
            path = stack.pop()
            try:
                with self.table.lock:
                    wd = self.inotify.add_watch(path, GIT_MASK)
                    self.git_dirs[wd] = path
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self.watcher.git_poll_needed()
                    return
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF):
                    log.warning("cannot watch %s: %s", path, exc.strerror)
                continue
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        child = os.path.join(path, entry.name)
                        if (child == refs or child.startswith(refs + os.sep)) and entry.is_dir(follow_symlinks=False):
                            stack.append(child)
            except OSError:
                continue

    def unwatch_git(self) -> None:
        with self.table.lock:
            for wd in list(self.git_dirs):
                self.inotify.rm_watch(wd)
            self.git_dirs.clear()

    # -- events (on the IOLoop) ----------------------------------------------------------------

    def _on_readable(self, fd: int, events: int) -> None:
        assert self._io_loop is not None
        wait = self._last_read + READ_INTERVAL_S - self._io_loop.time()
        if wait > 0:  # events come fast: let the next ones gather
            self._io_loop.remove_handler(fd)
            self._deferred = self._io_loop.call_later(wait, self._deferred_read)
            return
        self._read_now()

    def _deferred_read(self) -> None:
        self._deferred = None
        if self._stopping or self._paused or self.inotify.fd < 0 or self._io_loop is None:
            return
        self._io_loop.add_handler(self.inotify.fd, self._on_readable, tornado.ioloop.IOLoop.READ)
        self._read_now()

    def _cancel_deferred(self) -> None:
        if self._io_loop is not None and self._deferred is not None:
            self._io_loop.remove_timeout(self._deferred)
        self._deferred = None

    def _read_now(self) -> None:
        if self._io_loop is not None:
            self._last_read = self._io_loop.time()
        try:
            self._read_all()
        except Exception:
            log.exception("handling inotify events failed")

    def _read_all(self) -> None:
        for _ in range(MAX_READS_PER_WAKEUP):
            if self.inotify.fd < 0 or self._paused:
                return
            data = self.inotify.read()
            if not data:
                return
            self.process(data)

    def process(self, data: bytes) -> None:
        """Turn one buffer of kernel events into changes for the watcher."""
        path_of = self.table.path_of
        for wd, mask, cookie, raw_name in parse_events(data):
            if mask & IN_Q_OVERFLOW:
                self._overflow()
                continue
            if raw_name.endswith(_TEMP_SUFFIX) and raw_name.startswith(b".") and not mask & IN_ISDIR:
                continue  # the runtime's own temporary (rules.py ignores it anyway): ~5 of a write's 7 events
            with self.table.lock:
                parent = path_of.get(wd)
                git_dir = self.git_dirs.get(wd)
            if git_dir is not None:
                self._git_event(wd, git_dir, mask, raw_name)
                continue
            if parent is None:
                continue  # a watch removed a moment ago
            if mask & IN_IGNORED:
                with self.table.lock:
                    self.table.discard_wd(wd)
                continue
            if not raw_name:
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) and parent == "":
                    log.warning("the workspace directory itself was moved or deleted")
                    self.watcher.resync("workspace_gone")
                continue  # other events on a directory itself come from its parent too
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                continue  # no JSON string can name it for a client
            rel = f"{parent}/{name}" if parent else name
            is_dir = bool(mask & IN_ISDIR)
            if rel == ".git" and mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO):
                self.watcher.git_location_changed()
            if self.rules.ignored(rel, is_dir):
                if is_dir and mask & IN_MOVED_TO:
                    self._forget_move(cookie)  # moved into an ignored place: stop watching it
                continue
            if mask & IN_CREATE:
                self.watcher.file_changed(rel, "created", is_dir)
                if is_dir:
                    self.watcher.spawn(self._walk(rel, report=True))
            elif mask & IN_MOVED_TO:
                # A rename is deleted + created, but a write that lands by replacing its target (the runtime's
                # own, which says so in REPLACING) changed that file.
                replaced = not is_dir and REPLACING.take(os.path.join(self.workspace, rel))
                self.watcher.file_changed(rel, "modified" if replaced else "created", is_dir, moved=not replaced)
                if is_dir:
                    self._moved_in(cookie, rel)
            elif mask & IN_MOVED_FROM:
                self.watcher.file_changed(rel, "deleted", is_dir)
                if is_dir:
                    self._moved_out(cookie, rel)
            elif mask & IN_DELETE:
                self.watcher.file_changed(rel, "deleted", is_dir)
            elif mask & (IN_MODIFY | IN_CLOSE_WRITE) or (mask & IN_ATTRIB and not is_dir):
                # In a directory that is new, a file written before the walk reports it was created
                # just before the watch took hold (its IN_CREATE never came): it is new, not modified.
                kind = "created" if self._fresh and self._in_fresh(parent) else "modified"
                self.watcher.file_changed(rel, kind, is_dir)

    def _in_fresh(self, directory: str) -> bool:
        return any(directory == top or directory.startswith(top + "/") for top in self._fresh)

    def _moved_out(self, cookie: int, rel: str) -> None:
        """A directory left its place: wait a moment for the other half of a rename."""
        assert self._io_loop is not None
        timer = self._io_loop.call_later(MOVE_PAIR_WAIT_S, self._moved_away, cookie)
        self._moves[cookie] = (rel, timer)

    def _moved_in(self, cookie: int, rel: str) -> None:
        move = self._moves.pop(cookie, None)
        if move is None:
            # From outside the workspace (or an ignored place): a whole new tree to watch.
            self.watcher.spawn(self._walk(rel, report=False))
            return
        old, timer = move
        timer.cancel()
        with self.table.lock:
            self.table.move(old, rel)
        self.watcher.unwatched_moved(old, rel)

    def _forget_move(self, cookie: int) -> None:
        move = self._moves.pop(cookie, None)
        if move is not None:
            move[1].cancel()
            self._drop_subtree(move[0])

    def _moved_away(self, cookie: int) -> None:
        move = self._moves.pop(cookie, None)
        if move is not None:
            self._drop_subtree(move[0])

    def _drop_subtree(self, rel: str) -> None:
        with self.table.lock:
            watches = self.table.subtree(rel)
            for _, wd in watches:
                self.inotify.rm_watch(wd)
                self.table.discard_wd(wd)

    def _overflow(self) -> None:
        log.warning("inotify queue overflow: events were lost; telling clients to resync and walking again")
        self.watcher.resync("overflow")
        if self._walking_all:
            self._walk_again = True
        else:
            self.watcher.spawn(self._walk_all())

    def _git_event(self, wd: int, directory: str, mask: int, raw_name: bytes) -> None:
        if mask & IN_IGNORED:
            with self.table.lock:
                self.git_dirs.pop(wd, None)
            return
        path = os.path.join(directory, os.fsdecode(raw_name))
        refs = self.watcher.git.refs_dir
        if (
            mask & (IN_CREATE | IN_MOVED_TO)
            and mask & IN_ISDIR
            and refs
            and (path == refs or path.startswith(refs + os.sep))
        ):
            self.watcher.spawn(self.watcher.run_blocking(self.watch_git, [path], refs))
        self.watcher.git_path_changed(path)
