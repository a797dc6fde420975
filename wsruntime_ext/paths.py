"""The workspace jail and atomic writes.

Every client path goes through :func:`resolve_in_workspace` (API.md
"Conventions"): a path that resolves outside the workspace — an absolute
path, a ``..`` escape, a symlink or a chain of them leading out, also for
paths that do not exist yet — raises 403 ``path_outside_workspace``; control
characters raise 400 ``invalid_path``. :class:`AtomicWriter` lands files so
that readers see the old or the new content, never a mix, even if the
process dies mid-write.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tempfile
from collections.abc import Iterable
from typing import IO

from wsruntime_ext.base import ApiError

_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))
_UMASK: int | None = None


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
    if any(ch in _CONTROL for ch in client_path):
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

    joined = os.path.join(root, *parts)
    parent_real = os.path.realpath(os.path.dirname(joined))
    name = os.path.basename(joined)
    if name == "..":
        # "a/.." names a directory, not a link: resolve it whole.
        real = os.path.realpath(joined)
        if not is_within(root, real):
            raise _outside(client_path)
        rel = os.path.relpath(real, root)
        rel = "" if rel == "." else rel
        return WorkspacePath(rel.replace(os.sep, "/"), real, real)
    if not is_within(root, parent_real):
        raise _outside(client_path)
    path = os.path.join(parent_real, name)
    real = os.path.realpath(path)
    if follow_final and not is_within(root, real):
        raise _outside(client_path)
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return WorkspacePath("" if rel == "." else rel, path, real)


def _default_file_mode() -> int:
    global _UMASK
    if _UMASK is None:
        # os.umask can only be read by setting it; do it once, at first use.
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


class AtomicWriter:
    """Write a file through a temporary sibling, then rename it over the target.

    Use as a context manager: leaving the block normally commits (fsync the
    file, keep the old file's mode and owner, rename, fsync the directory);
    an exception discards the temporary file and leaves the target untouched.
    Blocking: call it from a thread pool, never on the IOLoop.
    """

    def __init__(self, target: str, mode: int | None = None) -> None:
        self.target = target
        self.directory = os.path.dirname(target) or "."
        self._mode = mode
        fd, self.temp_path = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)[:64]}.", suffix=".wsrt-tmp", dir=self.directory
        )
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def commit(self) -> os.stat_result:
        """Publish the new content; returns the new file's stat."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            try:
                old = os.stat(self.target)
            except FileNotFoundError:
                old = None
            if old is not None and stat.S_ISDIR(old.st_mode):
                raise IsADirectoryError(self.target)
            mode = self._mode if self._mode is not None else stat.S_IMODE(old.st_mode) if old else _default_file_mode()
            os.fchmod(self.file.fileno(), mode)
            if old is not None and os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
                os.fchown(self.file.fileno(), old.st_uid, old.st_gid)
            self.file.close()
            os.rename(self.temp_path, self.target)
            self._done = True
        finally:
            if not self._done:
                self.abort()
        fsync_directory(self.directory)
        return os.stat(self.target)

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

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(target: str, data: bytes | Iterable[bytes], mode: int | None = None) -> os.stat_result:
    """Replace ``target`` with ``data`` atomically (see :class:`AtomicWriter`)."""
    with AtomicWriter(target, mode) as writer:
        if isinstance(data, (bytes, bytearray, memoryview)):
            writer.write(bytes(data))
        else:
            for chunk in data:
                writer.write(chunk)
        return writer.commit()
