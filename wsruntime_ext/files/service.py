"""FileService: the Files area's logic (API.md "Files"), with no HTTP in it.

Every client path goes through the workspace jail; every blocking step
(directory walks, opens, reads, writes, renames, deletes) is a plain function
meant to run in a thread pool (directory walks on the service's own). Errors are ApiErrors in API.md's
shape; operating-system errors are mapped by :func:`errors.os_error`, and
listings live in listing.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Awaitable
from typing import Any, Callable, TypeVar

from wsruntime_ext.base import ApiError
from wsruntime_ext.config import Config
from wsruntime_ext.files.errors import os_error
from wsruntime_ext.files.listing import DIR_FLAGS, guess_mime, iso_time, list_directory
from wsruntime_ext.paths import (
    AtomicWriter,
    WorkspacePath,
    commit_locks,
    fd_inside_workspace,
    file_etag,
    fsync_directory,
    is_within,
    nearest_existing_directory,
    outside_workspace,
    rename_noreplace,
    resolve_in_workspace,
)
from wsruntime_ext.temps import TempRegistry

T = TypeVar("T")
SMALL_FILE = 256 << 10  # read whole in the same thread hop as the open
# Read whole right where it is opened, on the IOLoop: an open, an fstat and a read of this much from a
# local disk take ~10-20 µs, several times less than a trip through the thread pool; bigger files stream.
INLINE_READ = 64 << 10
READ_CHUNK = 1 << 20  # streamed reads: a chunk goes out while the next is read (two in memory per response)
JSON_READ_LIMIT = 32 << 20  # ?format=json answers hold the file in memory (and base64 grows it by a third)
JSON_WRITE_LIMIT = 48 << 20  # ?format=json bodies are parsed in memory; raw bodies stream and take --max-upload-size

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not hang us


def _rmtree(name: str, parent_fd: int, path: str) -> None:
    """Remove a directory tree, never following symlinks (fd-based), relative to ``parent_fd`` where the
    interpreter can (3.11+)."""
    if sys.version_info >= (3, 11):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:  # pragma: no cover - older interpreters: by path, still fd-based below it
        shutil.rmtree(path)


def _fsync_fd(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass


_ETAG_TOKEN = re.compile(r'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')


def parse_etags(header: str | None) -> list[str] | None:
    """``If-Match`` / ``If-None-Match`` as a list of entity tags (``["*"]`` for a star); None when absent."""
    if header is None or not header.strip():
        return None  # an empty header is no condition
    tags = [m.group(1) for m in _ETAG_TOKEN.finditer(header)]
    if not tags:
        raise ApiError(400, "invalid_header", "Conditional header is not a list of entity tags", header=header)
    return tags


def _weak(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


@dataclasses.dataclass(frozen=True)
class Preconditions:
    """``If-Match`` and ``If-None-Match`` of a request that changes a file (412 when they fail)."""

    if_match: list[str] | None = None
    if_none_match: list[str] | None = None

    @property
    def create_only(self) -> bool:
        return self.if_none_match == ["*"]

    def __bool__(self) -> bool:
        return self.if_match is not None or self.if_none_match is not None

    def check(self, st: os.stat_result | None, rel: str) -> None:
        """Raise 412 ``precondition_failed`` unless the current version (``st``, None: absent) passes."""
        current = file_etag(st) if st is not None and not stat.S_ISDIR(st.st_mode) else None
        if self.if_match is not None:
            # Strong comparison (RFC 9110 13.1.1): weak tags never match.
            ok = st is not None and ("*" in self.if_match or (current is not None and current in self.if_match))
            if not ok:
                raise ApiError(
                    412,
                    "precondition_failed",
                    "If-Match failed: the file changed (or is gone) since you read it",
                    path=rel,
                    current_etag=current,
                )
        if self.if_none_match is not None and st is not None:
            if "*" in self.if_none_match:
                raise ApiError(412, "precondition_failed", "If-None-Match: * failed: it exists", path=rel)
            if current is not None and _weak(current) in {_weak(t) for t in self.if_none_match}:
                raise ApiError(
                    412,
                    "precondition_failed",
                    "If-None-Match failed: it is that version",
                    path=rel,
                    current_etag=current,
                )


@dataclasses.dataclass
class OpenedFile:
    """A regular file opened for reading: its descriptor (None once read whole), its stat, maybe its bytes."""

    fd: int | None
    st: os.stat_result
    data: bytes | None = None

    @property
    def etag(self) -> str:
        return file_etag(self.st)


class FileService:
    """Files in the workspace: list, read, write, delete, move, mkdir — blocking methods for the thread pool."""

    def __init__(self, config: Config, temps: TempRegistry | None = None) -> None:
        self.root = config.workspace
        self.temps = temps  # where every temporary file is recorded (temps.py)
        self.state_dir = os.path.realpath(config.state_dir)
        # Directory walks (listings, the Python search) get threads of their own, two at a time: a walk
        # releases the GIL for every stat, and many walks at once hand it around so often that each
        # crawls (and they would fill the shared pool that reads and writes need).
        self.walker = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="wsruntime-walk")

    def walk(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run a directory walk on the walker threads."""
        return asyncio.get_running_loop().run_in_executor(self.walker, fn, *args)

    def shutdown(self) -> None:
        self.walker.shutdown(wait=False)

    # -- paths ------------------------------------------------------------------------------

    def resolve(self, client_path: str, follow_final: bool = True) -> WorkspacePath:
        """The jail: 403 outside the workspace, 400 for control characters."""
        return resolve_in_workspace(self.root, client_path, follow_final)

    def resolve_write(self, client_path: str) -> WorkspacePath:
        """The jail, for a file to write: its path must not end with ``/``."""
        wp = self.resolve(client_path)
        if client_path.endswith("/") and not wp.is_root:
            raise ApiError(400, "invalid_path", "A file path must not end with /", path=client_path)
        return wp

    def resolve_own(self, client_path: str) -> WorkspacePath:
        """A path whose last component is operated on itself (delete, move): its parents are jailed,
        and a final symlink may not lead outside unless the operation is a delete (see handlers)."""
        return resolve_in_workspace(self.root, client_path, follow_final=False)

    def protects(self, wp: WorkspacePath) -> bool:
        """Whether removing or moving ``wp`` would take the runtime's state directory with it."""
        return is_within(wp.path, self.state_dir)

    # -- listing ----------------------------------------------------------------------------

    def list_directory(self, wp: WorkspacePath, hidden: bool = True, limit: int | None = None) -> bytes:
        """The listing as JSON bytes (see listing.py); blocking: run it through :meth:`walk`."""
        return list_directory(self.root, wp, hidden, limit)

    # -- reading ----------------------------------------------------------------------------

    def open_for_read(self, wp: WorkspacePath, whole: int = SMALL_FILE) -> OpenedFile | None:
        """Open a regular file (and read it whole when it has at most ``whole`` bytes); None for a directory."""
        try:
            fd = os.open(wp.real, _READ_FLAGS)
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                return None
            raise os_error(exc, wp.rel) from None
        try:
            if not fd_inside_workspace(fd, self.root):
                raise outside_workspace(wp.rel)
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                os.close(fd)
                return None
            if not stat.S_ISREG(st.st_mode):
                raise ApiError(400, "not_a_file", f"{wp.rel} is not a regular file", path=wp.rel)
            if st.st_size <= whole:
                data = self._read_all(fd, st.st_size)
                os.close(fd)
                return OpenedFile(None, st, data)
            return OpenedFile(fd, st)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise

    @staticmethod
    def _read_all(fd: int, size: int) -> bytes:
        chunks = []
        remaining = size
        offset = 0
        while remaining > 0:
            chunk = os.pread(fd, remaining, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            remaining -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def read_chunk(fd: int, offset: int, size: int) -> bytes:
        return os.pread(fd, size, offset)

    @staticmethod
    def close(fd: int | None) -> None:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def read_json(self, wp: WorkspacePath) -> dict[str, Any] | None:
        """``?format=json``: the content as UTF-8 text or base64; None for a directory."""
        opened = self.open_for_read(wp)
        if opened is None:
            return None
        st = opened.st
        try:
            if st.st_size > JSON_READ_LIMIT:
                raise ApiError(
                    422,
                    "file_too_large",
                    f"{wp.rel} is {st.st_size} bytes; ?format=json answers up to {JSON_READ_LIMIT} bytes "
                    "(read the raw bytes instead, with Range for parts)",
                    path=wp.rel,
                    size=st.st_size,
                    limit=JSON_READ_LIMIT,
                )
            data = opened.data if opened.data is not None else self._read_all(opened.fd, st.st_size)  # type: ignore[arg-type]
        finally:
            self.close(opened.fd)
        try:
            content, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(data).decode("ascii"), "base64"
        return {
            "path": wp.rel,
            "content": content,
            "encoding": encoding,
            "size": len(data),
            "modified": iso_time(st.st_mtime),
            "etag": file_etag(st),
            "mime": guess_mime(os.path.basename(wp.path)),
        }

    # -- writing ----------------------------------------------------------------------------

    def write_target(self, wp: WorkspacePath) -> str:
        """The file a write lands on: the target of a symlink inside the workspace, else the path."""
        if wp.is_root:
            raise ApiError(409, "is_a_directory", "The workspace root is a directory", path="")
        return wp.real

    def stat_target(self, target: str, rel: str) -> os.stat_result | None:
        try:
            return os.stat(target)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise ApiError(
                409, "not_a_directory", "A parent of this path is a file, not a directory", path=rel
            ) from None
        except OSError as exc:
            raise os_error(exc, rel, writing=True) from None

    def check_writable(self, wp: WorkspacePath, preconditions: Preconditions) -> os.stat_result | None:
        """Before a body arrives: refuse what would fail anyway (directory, precondition, a file as parent)."""
        target = self.write_target(wp)
        st = self.stat_target(target, wp.rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ApiError(409, "is_a_directory", f"{wp.rel} is a directory", path=wp.rel)
        preconditions.check(st, wp.rel)
        if st is None:
            ancestor = nearest_existing_directory(os.path.dirname(target))
            parent = os.path.dirname(target)
            if ancestor != parent and os.path.lexists(self._first_missing(parent, ancestor)):
                raise ApiError(409, "not_a_directory", "A parent of this path is a file, not a directory", path=wp.rel)
        return st

    @staticmethod
    def _first_missing(parent: str, ancestor: str) -> str:
        rest = os.path.relpath(parent, ancestor).split(os.sep)[0]
        return os.path.join(ancestor, rest)

    def begin_write(self, wp: WorkspacePath) -> AtomicWriter:
        """A temporary file next to the target (or in its nearest existing ancestor), checked to be inside."""
        target = self.write_target(wp)
        # ``target`` is fully resolved, so its ancestors are real paths already; the descriptor check
        # below catches a directory swapped for a link since.
        try:
            try:
                writer = AtomicWriter(target, temps=self.temps)  # the usual case: the parent exists
            except (FileNotFoundError, NotADirectoryError):
                temp_dir = nearest_existing_directory(os.path.dirname(target))
                writer = AtomicWriter(target, temp_dir=temp_dir, temps=self.temps)
        except OSError as exc:
            raise os_error(exc, wp.rel, writing=True) from None
        if not fd_inside_workspace(writer.file.fileno(), self.root):
            writer.abort()
            raise outside_workspace(wp.rel)
        return writer

    def start_write(self, wp: WorkspacePath, preconditions: Preconditions) -> AtomicWriter:
        """Before a streamed body: refuse what would fail anyway, then open the temporary file."""
        self.check_writable(wp, preconditions)
        return self.begin_write(wp)

    def finish_write(
        self, writer: AtomicWriter, wp: WorkspacePath, rest: bytes, preconditions: Preconditions
    ) -> dict[str, Any]:
        """After a streamed body: write what is left of it and land the file."""
        if rest:
            self.write_chunk(writer, rest, wp.rel)
        return self.commit(writer, wp, preconditions)

    def write_chunk(self, writer: AtomicWriter, data: bytes, rel: str) -> None:
        try:
            writer.write(data)
        except OSError as exc:
            writer.abort()
            raise os_error(exc, rel, writing=True) from None
        except ValueError:  # closed under us: the request was abandoned meanwhile
            raise ApiError(400, "aborted", "The write was abandoned", path=rel) from None

    def commit(
        self, writer: AtomicWriter, wp: WorkspacePath, preconditions: Preconditions, sync_directories: bool = True
    ) -> dict[str, Any]:
        """Land a streamed write atomically; rechecks the preconditions in the commit section
        (``sync_directories``: see AtomicWriter.commit)."""
        try:
            st = writer.commit(
                replace=not preconditions.create_only,
                check=(lambda old: preconditions.check(old, wp.rel)) if preconditions else None,
                sync_directories=sync_directories,
            )
        except FileExistsError:
            raise ApiError(412, "precondition_failed", "If-None-Match: * failed: it exists", path=wp.rel) from None
        except OSError as exc:
            raise os_error(exc, wp.rel, writing=True) from None
        return {**self.describe(wp.rel, st), "created": writer.created}

    def write_bytes(self, wp: WorkspacePath, data: bytes, preconditions: Preconditions) -> dict[str, Any]:
        """A whole body at once: the commit checks what ``check_writable`` would (it runs anyway)."""
        writer = self.begin_write(wp)
        try:
            self.write_chunk(writer, data, wp.rel)
        except BaseException:
            writer.abort()
            raise
        return self.commit(writer, wp, preconditions)

    @staticmethod
    def describe(rel: str, st: os.stat_result) -> dict[str, Any]:
        return {"path": rel, "size": st.st_size, "modified": iso_time(st.st_mtime), "etag": file_etag(st)}

    @staticmethod
    def decode_json_content(body: dict[str, Any]) -> bytes:
        """The ``{"content", "encoding"}`` body of a ``?format=json`` write, as bytes."""
        content = body.get("content")
        encoding = body.get("encoding", "utf-8")
        if not isinstance(content, str):
            raise ApiError(400, "invalid_body", '"content" must be a string')
        if not isinstance(encoding, str) or encoding.lower() not in ("utf-8", "utf8", "base64"):
            raise ApiError(400, "invalid_body", '"encoding" must be "utf-8" or "base64"')
        if encoding.lower() == "base64":
            try:
                return base64.b64decode(content.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                raise ApiError(400, "invalid_body", '"content" is not valid base64') from None
        try:
            return content.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_body", '"content" is not valid Unicode (a lone surrogate)') from None

    # -- delete, move, mkdir ------------------------------------------------------------------

    def delete(self, wp: WorkspacePath, recursive: bool, preconditions: Preconditions) -> None:
        """Delete a file, a symlink (the link, never its target) or a directory (``recursive`` when not empty)."""
        if wp.is_root:
            raise ApiError(403, "cannot_delete_root", "The workspace root cannot be deleted", path="")
        if self.protects(wp):
            raise ApiError(403, "protected_path", "This holds the runtime's state directory", path=wp.rel)
        parent, name = os.path.split(wp.path)
        parent_fd = self._open_directory(parent, wp.rel)
        try:
            # Relative to the checked parent: a parent swapped for a link since cannot redirect the delete.
            try:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except OSError as exc:
                raise os_error(exc, wp.rel) from None
            preconditions.check(st, wp.rel)
            try:
                if stat.S_ISDIR(st.st_mode):
                    try:
                        os.rmdir(name, dir_fd=parent_fd)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                            raise
                        if not recursive:
                            raise ApiError(
                                409,
                                "directory_not_empty",
                                f"{wp.rel} is not empty; pass ?recursive=true to delete it with its content",
                                path=wp.rel,
                            ) from None
                        _rmtree(name, parent_fd, wp.path)
                else:
                    os.unlink(name, dir_fd=parent_fd)
            except OSError as exc:
                raise os_error(exc, wp.rel, writing=True) from None
            _fsync_fd(parent_fd)
        finally:
            os.close(parent_fd)

    def _open_directory(self, path: str, rel: str) -> int:
        """A descriptor of a directory, checked to lie in the workspace."""
        try:
            fd = os.open(path, DIR_FLAGS | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise os_error(exc, rel) from None
        if not fd_inside_workspace(fd, self.root):
            os.close(fd)
            raise outside_workspace(rel)
        return fd

    def move(self, source: WorkspacePath, target: WorkspacePath, overwrite: bool, preconditions: Preconditions) -> str:
        """Rename ``source`` (a symlink itself, not its target) to ``target``; parents of the target are created."""
        if source.is_root:
            raise ApiError(403, "cannot_move_root", "The workspace root cannot be moved", path="")
        if target.is_root:
            raise ApiError(409, "already_exists", "The target is the workspace root", path="")
        if self.protects(source):
            raise ApiError(403, "protected_path", "This holds the runtime's state directory", path=source.rel)
        try:
            st = os.lstat(source.path)
        except OSError as exc:
            raise os_error(exc, source.rel) from None
        if source.path == target.path:
            preconditions.check(st, source.rel)
            return target.rel
        if stat.S_ISDIR(st.st_mode) and is_within(source.path, target.path):
            raise ApiError(400, "invalid_move", "A directory cannot be moved into itself", path=target.rel)
        parent, target_name = os.path.split(target.path)
        source_parent, source_name = os.path.split(source.path)
        created: list[str] = []
        fds: list[int] = []
        try:
            with commit_locks(source.path, target.path):
                # Both ends relative to checked parent descriptors: a parent swapped for a link since the
                # paths were resolved cannot redirect the rename.
                fds.append(self._open_directory(source_parent, source.rel))
                source_fd = fds[0]
                try:
                    st = os.stat(source_name, dir_fd=source_fd, follow_symlinks=False)
                except OSError as exc:
                    raise os_error(exc, source.rel) from None
                preconditions.check(st, source.rel)
                exists = os.path.lexists(target.path)
                if exists and (preconditions.create_only or not overwrite):
                    if preconditions.create_only:
                        raise ApiError(412, "precondition_failed", "If-None-Match: * failed: the target exists")
                    raise ApiError(
                        409,
                        "already_exists",
                        f"{target.rel} exists; pass overwrite=true to replace it",
                        path=target.rel,
                    )
                created = self._make_dirs(parent, target.rel)
                fds.append(self._open_directory(parent, target.rel))
                target_fd = fds[1]
                if exists:
                    target_st = os.stat(target_name, dir_fd=target_fd, follow_symlinks=False)
                    if stat.S_ISDIR(target_st.st_mode) and not stat.S_ISDIR(st.st_mode):
                        raise ApiError(409, "is_a_directory", f"{target.rel} is a directory", path=target.rel)
                    if not stat.S_ISDIR(target_st.st_mode) and stat.S_ISDIR(st.st_mode):
                        raise ApiError(409, "not_a_directory", f"{target.rel} is a file", path=target.rel)
                    os.rename(source_name, target_name, src_dir_fd=source_fd, dst_dir_fd=target_fd)
                else:
                    rename_noreplace(source_name, target_name, source_fd, target_fd)
            for fd in fds:
                _fsync_fd(fd)
        except ApiError:
            self._remove_dirs(created)
            raise
        except OSError as exc:
            self._remove_dirs(created)
            if exc.errno == errno.EXDEV:
                raise ApiError(
                    409, "cross_device", "The target is on another file system; copy and delete instead"
                ) from None
            raise os_error(exc, target.rel, writing=True) from None
        finally:
            for fd in fds:
                os.close(fd)
        return target.rel

    def _make_dirs(self, directory: str, rel: str) -> list[str]:
        """``mkdir -p`` inside the workspace; returns what it created (outermost first)."""
        missing = []
        current = directory
        while not os.path.isdir(current):
            if os.path.lexists(current):
                raise ApiError(409, "not_a_directory", "A parent of this path is a file, not a directory", path=rel)
            missing.append(current)
            current = os.path.dirname(current)
        created = []
        try:
            for path in reversed(missing):
                os.mkdir(path)
                created.append(path)
        except OSError:
            self._remove_dirs(created)
            raise
        return created

    @staticmethod
    def _remove_dirs(created: list[str]) -> None:
        for path in reversed(created):
            try:
                os.rmdir(path)
            except OSError:
                break

    def mkdir(self, wp: WorkspacePath, exist_ok: bool = False) -> bool:
        """Create a directory and its parents; True when created, False when it existed (``exist_ok``)."""
        if os.path.isdir(wp.real):
            if exist_ok:
                return False
            raise ApiError(409, "already_exists", f"{wp.rel or '/'} already exists", path=wp.rel, type="directory")
        if os.path.lexists(wp.path):
            raise ApiError(409, "already_exists", f"{wp.rel} already exists and is not a directory", path=wp.rel)
        try:
            created = self._make_dirs(wp.real, wp.rel)
        except OSError as exc:
            raise os_error(exc, wp.rel, writing=True) from None
        if created:
            fsync_directory(os.path.dirname(created[0]))
        return True
