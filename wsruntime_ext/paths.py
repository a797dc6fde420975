"""The workspace jail and atomic writes.

Every client path goes through :func:`resolve_in_workspace` (API.md
"Conventions"): a path that resolves outside the workspace — an absolute
path, a ``..`` escape, a symlink or a chain of them leading out, also for
paths that do not exist yet — raises 403 ``path_outside_workspace``; control
characters raise 400 ``invalid_path``. :class:`AtomicWriter` lands files so
that readers see the old or the new content, never a mix, even if the
process dies mid-write, and stamps each new version with a modification time
that no earlier version written by this process has, so that
:func:`file_etag` changes on every write (two same-size writes in the same
second included).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable
from typing import IO, Callable

from wsruntime_ext.base import ApiError
from wsruntime_ext.temps import TempRegistry, new_token, temp_name

_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
_UMASK: int | None = None

# Check-then-rename sections run one at a time per target (locks striped by path), so a precondition
# checked there still holds when the rename lands; only a stat, the check and the rename run inside.
_COMMIT_LOCKS = [threading.Lock() for _ in range(64)]
_last_mtime_ns = 0


def commit_lock(path: str) -> threading.Lock:
    """The lock of the check-and-rename sections that land on ``path``."""
    return _COMMIT_LOCKS[hash(path) % len(_COMMIT_LOCKS)]


class commit_locks:
    """``with commit_locks(a, b):`` holds the sections of several paths (in a fixed order: no deadlock)."""

    def __init__(self, *paths: str) -> None:
        self.locks = [_COMMIT_LOCKS[i] for i in sorted({hash(p) % len(_COMMIT_LOCKS) for p in paths})]

    def __enter__(self) -> None:
        for lock in self.locks:
            lock.acquire()

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self.locks):
            lock.release()


def _same_version(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_mode, a.st_uid, a.st_gid) == (
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_mode,
        b.st_uid,
        b.st_gid,
    )


@dataclasses.dataclass(frozen=True)
class WorkspacePath:
    """A client path checked against the jail.

    ``rel`` is the normalised workspace-relative path (``""`` for the root),
    ``path`` the absolute path with every parent resolved but the last
    component left as it is (operate on a symlink itself: lstat, delete,
    rename), and ``real`` the path with the last component resolved too
    (follow it: read, write).
    """

    rel: str
    path: str
    real: str

    @property
    def is_root(self) -> bool:
        return self.rel == ""


def _outside(client_path: str) -> ApiError:
    return ApiError(403, "path_outside_workspace", "Path resolves outside the workspace", path=client_path)


def is_within(root: str, path: str) -> bool:
    """True when ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_in_workspace(root: str, client_path: str, follow_final: bool = True) -> WorkspacePath:
    """Turn a client path into a path inside ``root`` (the workspace's real path) or raise.

    ``..`` is resolved the way the kernel does, after the symlinks before it;
    the result must stay inside the workspace. With ``follow_final=False`` a
    final symlink is allowed to point anywhere (it is operated on, not
    followed); its parents are still jailed.
    """
    if not isinstance(client_path, str):
        raise ApiError(400, "invalid_path", "Path must be a string")
    if _CONTROL_CHAR.search(client_path) is not None:
        raise ApiError(
            400, "invalid_path", "Path contains a control character", path=client_path.encode("unicode_escape").decode()
        )
    if client_path.startswith("/"):
        raise _outside(client_path)
    try:
        client_path.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_path", "Path is not valid UTF-8") from None

    parts = [p for p in client_path.split("/") if p not in ("", ".")]
    if not parts:
        return WorkspacePath("", root, root)

    parent_real = _realpath_below(root, parts[:-1])
    name = parts[-1]
    if name == "..":
        # "a/.." names a directory, not a link: resolve it whole.
        real = os.path.realpath(os.path.join(root, *parts))
        if not is_within(root, real):
            raise _outside(client_path)
        rel = os.path.relpath(real, root)
        rel = "" if rel == "." else rel
        return WorkspacePath(rel.replace(os.sep, "/"), real, real)
    if not is_within(root, parent_real):
        raise _outside(client_path)
    path = os.path.join(parent_real, name)
    real = _realpath_last(path)
    if follow_final and not is_within(root, real):
        raise _outside(client_path)
    # ``path`` is normalised and below ``root`` (its parent was checked, its name is a plain name).
    prefix = root if root.endswith("/") else root + "/"
    rel = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)
    return WorkspacePath(rel.replace(os.sep, "/"), path, real)


def _realpath_below(root: str, parts: list[str]) -> str:
    """``os.path.realpath(root/parts...)`` for a ``root`` that is a real path already.

    The common case — every component exists and none is a symlink or ``..``
    — costs one ``lstat`` per component below the root instead of one per
    component from ``/`` (this runs on the event loop for every request).
    Anything else (a link, ``..``, a missing component) is answered by
    ``os.path.realpath`` itself, so the result is the same in every case.
    """
    path = root
    for part in parts:
        if part == "..":
            return os.path.realpath(os.path.join(root, *parts))
        candidate = f"{path}/{part}" if path != "/" else f"/{part}"
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return os.path.realpath(os.path.join(root, *parts))
        if stat.S_ISLNK(mode):
            return os.path.realpath(os.path.join(root, *parts))
        path = candidate
    return path


def _realpath_last(path: str) -> str:
    """``os.path.realpath(path)`` for a path whose parent is real already: only the last part may be a link."""
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path
    except OSError:
        return path  # missing (or unreachable): realpath keeps it as it is
    return os.path.realpath(path)


_PROC_FD = "/proc/self/fd"
_HAS_PROC_FD = os.path.isdir(_PROC_FD)


def fd_inside_workspace(fd: int, root: str) -> bool:
    """Whether an open descriptor really lies in the workspace (``/proc/self/fd``; True where there is none).

    Checked after every open of a client path, it closes the race where a
    directory on the path is swapped for a symlink between the jail's check
    and the open.
    """
    if not _HAS_PROC_FD:
        return True
    try:
        where = os.readlink(f"{_PROC_FD}/{fd}")
    except OSError:
        return True
    return is_within(root, where)


def outside_workspace(client_path: str) -> ApiError:
    """The jail's refusal: 403 ``path_outside_workspace``."""
    return ApiError(403, "path_outside_workspace", "Path resolves outside the workspace", path=client_path)


def new_record_id(prefix: str) -> str:
    """``prefix`` + time-ordered base36 + randomness: a state-directory record's id (sessions, runs) that sorts
    by creation, is unguessable enough, and is safe as a file name."""
    millis = int(time.time() * 1000)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    stamp = ""
    while millis:
        millis, rest = divmod(millis, 36)
        stamp = digits[rest] + stamp
    return f"{prefix}{stamp}{secrets.token_hex(5)}"


def file_etag(st: os.stat_result) -> str:
    """A strong ETag for a file version: device, inode, size and the nanosecond modification time.

    Every :class:`AtomicWriter` commit gives the new version a modification
    time strictly greater than the one it replaces and than any other this
    process stamped (:func:`next_mtime_ns`), so two versions written here
    never share an ETag, even with the same size in the same second and with
    a recycled inode number. Writers outside the runtime change it through
    the size, the inode (a rename) or the modification time.
    """
    return f'"{st.st_dev:x}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def next_mtime_ns(previous: int | None = None) -> int:
    """A modification time for a new file version: now, but later than ``previous`` and than any issued before."""
    global _last_mtime_ns
    with _MTIME_LOCK:
        stamp = max(time.time_ns(), _last_mtime_ns + 1, (previous or 0) + 1)
        _last_mtime_ns = stamp
        return stamp


_MTIME_LOCK = threading.Lock()
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_renameat2: Callable[..., int] | None = None
_renameat2_loaded = False


def _load_renameat2() -> Callable[..., int] | None:
    global _renameat2, _renameat2_loaded
    if not _renameat2_loaded:
        _renameat2_loaded = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            function = libc.renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
            _renameat2 = function
        except (OSError, AttributeError):  # not Linux, or a libc older than glibc 2.28
            _renameat2 = None
    return _renameat2


WRITEBACK_STEP = 8 << 20  # a streamed write starts the disk's writeback every this many bytes
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable[..., int] | None = None
_sync_file_range_loaded = False


def _load_sync_file_range() -> Callable[..., int] | None:
    """Linux's ``sync_file_range`` (not in the os module), or None; only ever a hint, never a substitute
    for the fsync of a commit."""
    global _sync_file_range, _sync_file_range_loaded
    if not _sync_file_range_loaded:
        _sync_file_range_loaded = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            function = libc.sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
            _sync_file_range = function
        except (OSError, AttributeError):  # not Linux
            _sync_file_range = None
    return _sync_file_range


def rename_noreplace(
    source: str, target: str, source_dir_fd: int | None = None, target_dir_fd: int | None = None
) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (FileExistsError), atomically where the
    kernel can (``renameat2(RENAME_NOREPLACE)``); elsewhere checked and renamed in the caller's
    ``commit_lock`` section, which still excludes every writer in this process. With directory
    descriptors the names are taken relative to them, as ``os.rename`` does."""
    function = _load_renameat2()
    source_fd = _AT_FDCWD if source_dir_fd is None else source_dir_fd
    target_fd = _AT_FDCWD if target_dir_fd is None else target_dir_fd
    if function is not None:
        if function(source_fd, os.fsencode(source), target_fd, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), target)
    try:
        os.stat(target, dir_fd=target_dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(source, target, src_dir_fd=source_dir_fd, dst_dir_fd=target_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)


def nearest_existing_directory(path: str) -> str:
    """``path`` itself when it is a directory, else its closest ancestor that exists."""
    current = path
    while not os.path.isdir(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _default_file_mode() -> int:
    global _UMASK
    if _UMASK is None:
        # os.umask can only be read by setting it; do it once, at first use.
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


class Replacements:
    """Targets an atomic write is about to replace rather than create (thread-safe).

    inotify says "moved to" of a rename whether it created its target or replaced one; the file watcher
    asks :meth:`take` and reports a replacement as ``modified`` (API.md: an API write that replaces a file
    is a change to it, not a new file). An entry not taken within ``TTL_S`` is forgotten.
    """

    TTL_S = 10.0
    PURGE_AT = 4096  # entries before the expired ones are dropped (then twice what is left, at least this)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, list[float]] = {}  # path -> deadlines of the renames in flight
        self._purge_at = self.PURGE_AT

    def add(self, path: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._pending) > self._purge_at:
                # Renames nobody takes (the watcher is off, or ignores the path) are dropped once expired;
                # the next purge waits for the table to double, so that adds stay O(1) however many are live.
                self._pending = {p: d for p, d in self._pending.items() if d[-1] >= now}
                self._purge_at = max(self.PURGE_AT, 2 * len(self._pending))
            self._pending.setdefault(path, []).append(now + self.TTL_S)

    def discard(self, path: str) -> None:
        """The rename did not happen."""
        with self._lock:
            deadlines = self._pending.get(path)
            if deadlines:
                deadlines.pop()
                if not deadlines:
                    del self._pending[path]

    def take(self, path: str) -> bool:
        """Whether the rename that landed ``path`` replaced it (an entry is used once)."""
        now = self._clock()
        with self._lock:
            deadlines = self._pending.get(path)
            while deadlines:
                deadline = deadlines.pop(0)
                if not deadlines:
                    del self._pending[path]
                if deadline >= now:
                    return True
            return False


REPLACING = Replacements()


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


_EUID = os.geteuid()
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC


def _create_temp(directory: str, name: str, temps: TempRegistry | None) -> tuple[int, str, str | None]:
    """A new, empty, exclusive temporary file beside ``name`` (cheaper than tempfile.mkstemp's name search),
    recorded in ``temps`` first when given: (descriptor, path, token of its record)."""
    if temps is not None:
        return temps.create(directory, name, _TEMP_FLAGS, 0o600)
    for _ in range(100):
        path = temp_name(directory, name, new_token())
        try:
            return os.open(path, _TEMP_FLAGS, 0o600), path, None
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", directory)


class AtomicWriter:
    """Write a file through a temporary sibling, then rename it over the target.

    Use as a context manager: leaving the block normally commits (fsync the
    file, keep the old file's mode and owner, stamp a fresh modification
    time, create missing parents, rename, fsync the directory); an exception
    discards the temporary file and leaves the target untouched. ``temp_dir``
    puts the temporary file elsewhere on the same file system — the nearest
    existing ancestor when the target's parents do not exist yet, so that
    nothing (not even an empty parent) appears unless the commit happens.
    With ``temps`` the temporary file is recorded before it is created and
    forgotten once it is gone, so that one a crash leaves is removed at the
    next start (temps.py). Blocking: call it from a thread pool, never on the
    IOLoop.
    """

    def __init__(
        self, target: str, mode: int | None = None, temp_dir: str | None = None, temps: TempRegistry | None = None
    ) -> None:
        self.target = target
        self.directory = os.path.dirname(target) or "."
        self.temp_dir = temp_dir or self.directory
        self._mode = mode
        self.temps = temps
        fd, self.temp_path, self._token = _create_temp(self.temp_dir, os.path.basename(target), temps)
        self.file: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 16)  # given: no isatty() probe
        self.size = 0
        self.created = False  # whether the commit created the target (rather than replacing it)
        self.created_dirs: list[str] = []  # parents the commit created, outermost first
        self.landed: os.stat_result | None = None
        self._done = False
        self._written_back = 0  # bytes handed to the kernel's writeback so far (see write())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)
        self.size += len(data)
        if self.size - self._written_back >= WRITEBACK_STEP:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Have the kernel start writing what is written so far, without waiting for it: the commit's
        fsync then has only the tail left, so a big body's disk time overlaps its network time."""
        function = _load_sync_file_range()
        if function is not None:
            function(self.file.fileno(), self._written_back, self.size - self._written_back, _SYNC_FILE_RANGE_WRITE)
        self._written_back = self.size

    def start_writeback(self) -> None:
        """Hand everything written to the kernel and have it start writing it to disk, without waiting: a
        group of small writes (files/group.py) starts all of theirs before the first fsync."""
        self.file.flush()
        if self.size > self._written_back:
            self._start_writeback()

    @property
    def directories(self) -> tuple[str, ...]:
        """The directories whose fsync makes the commit durable: the target's, and the temporary's if other."""
        return (self.directory,) if self.temp_dir == self.directory else (self.directory, self.temp_dir)

    def finish_writing(self) -> None:
        """Flush, fsync and close the temporary file now (many staged files need not hold descriptors)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def commit(
        self,
        replace: bool = True,
        check: Callable[[os.stat_result | None], None] | None = None,
        sync_directories: bool = True,
    ) -> os.stat_result:
        """Publish the new content; returns the new version's stat.

        ``check(old_stat_or_None)`` runs just before the rename, in the
        section no other commit of this process enters, and may raise to
        refuse (a failed precondition). With ``replace=False`` an existing
        target makes it raise FileExistsError, atomically where the kernel
        supports it. ``sync_directories=False`` leaves the fsync of
        :attr:`directories` to the caller, which must do it before it
        reports the write as done.
        """
        try:
            if not self.file.closed:
                self.file.flush()
                os.fsync(self.file.fileno())
                self._publish(self.file.fileno(), replace, check)
                self.file.close()
            else:  # closed early by finish_writing (staged uploads): its metadata is set through a new descriptor
                fd = os.open(self.temp_path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
                try:
                    self._publish(fd, replace, check)
                finally:
                    os.close(fd)
        finally:
            if not self._done:
                self.abort()
        if sync_directories:
            for directory in self.directories:
                fsync_directory(directory)
        assert self.landed is not None
        return self.landed

    def _publish(self, fd: int, replace: bool, check: Callable[[os.stat_result | None], None] | None) -> None:
        """Stamp the new version, then the check-and-rename section (one commit per target at a time;
        a plain replace with nothing to check needs none).

        Mode, owner and modification time are set before the section, from
        the version seen then; inside, only the check and the rename run,
        unless the target changed meanwhile (then they are set again there).
        """
        old = self._stat_target()
        self._stamp(fd, old)
        if check is None and replace and self.temp_dir == self.directory and _load_renameat2() is not None:
            # Nothing to check and no parent to make: no section is needed, so writers of one file do not
            # queue behind each other's renames. For a file that did not exist, renaming without replacing
            # first tells, atomically, whether this commit created it.
            self.created = False
            self._release_file()
            if old is None:
                try:
                    rename_noreplace(self.temp_path, self.target)
                    self.created = True
                except FileExistsError:
                    pass
            if not self.created:
                self._rename_over()
            self._done = True
            self._forget()
            return
        with commit_lock(self.target):
            current = self._stat_target()
            if not _same_version(current, old):
                old = current
                self._stamp(fd, old)
            if check is not None:
                check(old)
            if old is not None and not replace:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self.target)
            if self.temp_dir != self.directory:
                self._make_parents()
            self._release_file()
            if replace and old is not None:
                self._rename_over()
            elif replace:
                os.rename(self.temp_path, self.target)
            else:
                rename_noreplace(self.temp_path, self.target)
            self.created = old is None
            self._done = True
        self._forget()

    def _release_file(self) -> None:
        """Close the written temporary before its rename: closed after it, the file watcher would see its last
        write land on the target as a second change (the descriptor's stamps are done by then)."""
        if not self.file.closed:
            self.file.close()

    def _rename_over(self) -> None:
        """Rename the temporary over an existing target, telling the file watcher it replaces it."""
        REPLACING.add(self.target)
        try:
            os.rename(self.temp_path, self.target)
        except BaseException:
            REPLACING.discard(self.target)
            raise

    def _stat_target(self) -> os.stat_result | None:
        try:
            old = os.stat(self.target)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(old.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.target)
        return old

    def _stamp(self, fd: int, old: os.stat_result | None) -> None:
        """The old version's mode (and owner), and a modification time later than it and than any stamped before."""
        mode = self._mode if self._mode is not None else stat.S_IMODE(old.st_mode) if old else _default_file_mode()
        os.fchmod(fd, mode)
        if old is not None and _EUID == 0 and (old.st_uid, old.st_gid) != (0, 0):
            os.fchown(fd, old.st_uid, old.st_gid)
        stamp = next_mtime_ns(old.st_mtime_ns if old is not None else None)
        os.utime(fd, ns=(stamp, stamp))
        self.landed = os.fstat(fd)  # the version being published (a rename changes none of its ETag parts)

    def _make_parents(self) -> None:
        missing: list[str] = []
        current = self.directory
        while not os.path.isdir(current):
            if os.path.lexists(current):  # a file (or a dangling link) where a parent should be
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), current)
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for directory in reversed(missing):
            os.mkdir(directory)
            self.created_dirs.append(directory)

    def remove_created_dirs(self) -> None:
        """Undo the parents a commit created (those still empty), innermost first."""
        for directory in reversed(self.created_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                break
        self.created_dirs = []

    def abort(self) -> None:
        """Throw the temporary file away; the target is untouched."""
        self._done = True
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
        self._forget()
        self.remove_created_dirs()

    def _forget(self) -> None:
        """The temporary file is gone (renamed or removed): drop its record."""
        if self.temps is not None and self._token is not None:
            self.temps.forget(self._token)
            self._token = None

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(
    target: str, data: bytes | Iterable[bytes], mode: int | None = None, temps: TempRegistry | None = None
) -> os.stat_result:
    """Replace ``target`` with ``data`` atomically (see :class:`AtomicWriter`)."""
    with AtomicWriter(target, mode, temps=temps) as writer:
        if isinstance(data, (bytes, bytearray, memoryview)):
            writer.write(bytes(data))
        else:
            for chunk in data:
                writer.write(chunk)
        return writer.commit()
