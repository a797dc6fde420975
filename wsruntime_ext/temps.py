"""The runtime's own temporary files, recorded so that those a crash leaves are removed at the next start.

Every write lands through a temporary sibling ``.<name>.<token>.wsrt-tmp``
(paths.AtomicWriter; multipart uploads keep their backups under such names too).
Before such a file is created, its path is appended to this runtime's journal
``<state-dir>/temps/journal-<id>.log`` (``+<token> <path as JSON>``); once the
temporary is gone (renamed over its target, or thrown away) ``-<token>`` is
appended. One ``write`` each, on a descriptor kept open: a small write costs two
system calls more, not a file of its own. The journal is rewritten with only
what is outstanding once it grows past ``JOURNAL_LIMIT``. Each runtime holds an
exclusive ``flock`` on its own journal for its life; a SIGKILL releases it.

:meth:`TempRegistry.clean` — run at start-up, before the server listens —
reads the journals no live runtime holds (and single-record files
``<token>``, the older form), removes exactly the temporaries recorded there
without a matching ``-``, and deletes those journals: it reads the records,
never the workspace, so a workspace of any size starts at once.

A record is honoured only when the file it names still carries the record's
token in the temporary-name pattern, is a regular file (a symlink is never
followed nor removed), lies in a directory whose path has no symlink in it,
and lies under one of the roots the runtime writes to (the workspace, the
state directory, the settings' home). A user's file that merely looks like a
temporary was never recorded and is never touched.

Records are plain writes, not fsync'd: they survive any crash of the process
(the kernel has them), not necessarily a power cut (nor would the temporary's
own directory entry).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable

log = logging.getLogger("wsruntime.temps")

TEMP_SUFFIX = ".wsrt-tmp"
TOKEN = re.compile(r"^[0-9a-f]{12}$")
_TEMP_NAME = re.compile(r"^\..*\.([0-9a-f]{12})\.wsrt-tmp$", re.DOTALL)  # ``.<name>.<token>.wsrt-tmp``
_JOURNAL_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_JOURNAL = re.compile(r"^journal-[0-9a-f]{12}\.log$")
JOURNAL_LIMIT = 1 << 20  # bytes after which the journal is rewritten with only what is outstanding
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def is_temp_name(name: str) -> bool:
    """Is this file name one of the runtime's temporaries (never reported as a change: it is renamed
    into place or removed a moment later)?"""
    return name.endswith(TEMP_SUFFIX) and name.startswith(".")


def new_token() -> str:
    return os.urandom(6).hex()


def temp_name(directory: str, name: str, token: str) -> str:
    """The temporary sibling's path for a file named ``name`` (its name cut to 64 characters)."""
    return os.path.join(directory, f".{name[:64]}.{token}{TEMP_SUFFIX}")


class TempRegistry:
    """Records of the temporaries this runtime is writing, in ``<state-dir>/temps/`` (blocking calls)."""

    def __init__(self, state_dir: str, roots: Iterable[str] = ()) -> None:
        self.directory = os.path.join(state_dir, "temps")
        os.makedirs(self.directory, exist_ok=True)
        self.roots = sorted({os.path.realpath(r) for r in [state_dir, *roots]})
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()  # the journal: writers in several threads
        self._journal_fd = -1
        self._journal_path = ""
        self._journal_size = 0
        self._outstanding: dict[str, str] = {}  # token → path: recorded, not yet forgotten
        self._reals: dict[str, str] = {}  # directory → its real path (see _real)

    def record(self, token: str, path: str) -> None:
        """Record ``path`` under ``token`` before the file is created; FileExistsError when the token is taken."""
        line = f"+{token} {json.dumps(path)}\n".encode()
        with self._mutex:
            if token in self._outstanding:
                raise FileExistsError(errno.EEXIST, "token in use", token)
            self._append(line)
            self._outstanding[token] = path

    def forget(self, token: str) -> None:
        """The temporary is gone (landed or thrown away): its record is closed."""
        with self._mutex:
            if self._outstanding.pop(token, None) is None:
                return
            self._append(f"-{token}\n".encode())
            if self._journal_size > JOURNAL_LIMIT:
                self._rewrite()

    def close(self) -> None:
        """Let go of the journal (what a process's end does): what is outstanding is left for a clean-up."""
        with self._mutex:
            if self._journal_fd >= 0:
                os.close(self._journal_fd)
            self._journal_fd, self._journal_path = -1, ""

    def outstanding(self) -> dict[str, str]:
        """What this runtime recorded and has not forgotten (token → path)."""
        with self._mutex:
            return dict(self._outstanding)

    def _append(self, line: bytes) -> None:
        if self._journal_fd < 0:
            self._open_journal()
        os.write(self._journal_fd, line)  # O_APPEND: whole, after everything before it
        self._journal_size += len(line)

    def _open_journal(self) -> None:
        """A journal of this runtime's own, held with an exclusive lock for as long as it is in use."""
        for _ in range(100):
            path = os.path.join(self.directory, f"journal-{new_token()}.log")
            try:
                fd = os.open(path, _JOURNAL_FLAGS | os.O_EXCL, 0o600)
            except FileNotFoundError:  # the records directory was removed under us (by hand): make it again
                os.makedirs(self.directory, exist_ok=True)
                continue
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file nobody else knows of: at once
            self._journal_fd, self._journal_path, self._journal_size = fd, path, 0
            return
        raise FileExistsError(errno.EEXIST, "no unused journal name", self.directory)

    def _rewrite(self) -> None:
        """A fresh journal with what is outstanding; the old one goes (a crash in between leaves both: the
        clean-up reads both)."""
        old_fd, old_path = self._journal_fd, self._journal_path
        self._journal_fd = -1
        for token, path in self._outstanding.items():
            self._append(f"+{token} {json.dumps(path)}\n".encode())
        if self._journal_fd < 0:
            self._open_journal()
        try:
            os.unlink(old_path)
        except FileNotFoundError:
            pass
        os.close(old_fd)

    def create(self, directory: str, name: str, flags: int, mode: int) -> tuple[int, str, str]:
        """A new recorded temporary file beside ``name`` in ``directory``: (descriptor, path, token)."""
        directory = self._real(directory)  # recorded as the kernel reaches it (see _remove_leftover)
        for _ in range(100):
            token = new_token()
            path = temp_name(directory, name, token)
            try:
                self.record(token, path)
            except FileExistsError:
                continue
            try:
                return os.open(path, flags, mode), path, token
            except FileExistsError:
                self.forget(token)
                continue
            except BaseException:
                self.forget(token)
                raise
        raise FileExistsError(errno.EEXIST, "no unused temporary name", directory)

    def _real(self, directory: str) -> str:
        """``os.path.realpath``, remembered per directory (writes go to the same few folders). A folder swapped
        for a link since is recorded by its old path: the clean-up then refuses the record (no path through a
        link is ever followed), it never removes anything else."""
        real = self._reals.get(directory)
        if real is None:
            if len(self._reals) >= 1024:
                self._reals.clear()
            real = self._reals[directory] = os.path.realpath(directory)
        return real

    def reserve(self, directory: str, name: str) -> tuple[str, str]:
        """A recorded temporary name (the caller creates the file, e.g. a hard link): (path, token)."""
        directory = self._real(directory)
        for _ in range(100):
            token = new_token()
            path = temp_name(directory, name, token)
            if os.path.lexists(path):
                continue
            try:
                self.record(token, path)
            except FileExistsError:
                continue
            return path, token
        raise FileExistsError(errno.EEXIST, "no unused temporary name", directory)

    # -- start-up ------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Hold the registry for this process's life; False when another live runtime holds it."""
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def records(self) -> list[tuple[str, bytes]]:
        """(token, recorded path) of every record still open in a journal no live runtime holds, and of every
        single-record file (reads the records directory only)."""
        found, _journals = self._leftover_records()
        return found

    def _leftover_records(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, int]]]:
        """The open records, and the journals read (path, descriptor holding its lock: the caller closes)."""
        found: list[tuple[str, bytes]] = []
        journals: list[tuple[str, int]] = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if TOKEN.match(name):
                try:
                    with open(path, "rb") as f:
                        found.append((name, f.read(1 << 16)))
                except OSError:
                    continue
            elif _JOURNAL.match(name) and path != self._journal_path:
                try:
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)  # a live runtime's: its temporaries are being written
                    continue
                journals.append((path, fd))
                found.extend(_open_records(fd))
        return found, journals

    def clean(self) -> dict[str, int]:
        """Remove the temporaries a crash left, then their records; returns what it did.

        Skipped (records kept) while another live runtime holds this state directory: its temporaries are
        being written.
        """
        if self._lock_fd is None and not self.acquire():
            log.warning("another runtime uses the state directory %s: its temporaries are left alone", self.directory)
            return {"records": 0, "removed": 0, "refused": 0}
        removed = refused = 0
        records, journals = self._leftover_records()
        for token, raw in records:
            outcome = self._remove_leftover(os.fsdecode(raw), token)
            removed += outcome == "removed"
            refused += outcome == "refused"
            try:
                os.unlink(os.path.join(self.directory, token))  # a single-record file (the older form)
            except FileNotFoundError:
                pass
        for path, fd in journals:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.close(fd)
        if removed or refused:
            log.info("removed %d temporary file(s) left by a crash (%d record(s) refused)", removed, refused)
        return {"records": len(records), "removed": removed, "refused": refused}

    def _remove_leftover(self, path: str, token: str) -> str:
        """``removed``, ``absent`` or ``refused`` (the record does not name a temporary of ours)."""
        directory, name = os.path.split(path)
        match = _TEMP_NAME.match(name)
        if not os.path.isabs(path) or match is None or match.group(1) != token:
            return "refused"
        if os.path.normpath(directory) != directory or not any(_within(r, directory) for r in self.roots):
            return "refused"
        try:
            dir_fd = os.open(directory, _DIR_FLAGS)
        except FileNotFoundError:
            return "absent"  # the directory is gone: so is the temporary
        except OSError:
            return "refused"  # a symlink now (ELOOP), or a file: not the directory it was made in
        try:
            # The directory reached is the one recorded: no component of its path is a symlink.
            if os.path.realpath(directory) != directory:
                return "refused"
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return "absent"
            if not stat.S_ISREG(st.st_mode):
                return "refused"
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return "absent"
            return "removed"
        except OSError as exc:
            log.warning("cannot remove the temporary %s: %s", path, exc)
            return "refused"
        finally:
            os.close(dir_fd)


def _open_records(fd: int) -> list[tuple[str, bytes]]:
    """The records of a journal that were not closed by a ``-`` line (a torn last line is skipped)."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    open_: dict[str, bytes] = {}
    for line in b"".join(chunks).split(b"\n"):
        if line.startswith(b"+"):
            token, _, raw = line[1:].partition(b" ")
            try:
                path = json.loads(raw)
            except ValueError:
                continue
            if isinstance(path, str) and TOKEN.match(token.decode("ascii", "replace")):
                open_[token.decode("ascii")] = os.fsencode(path)
        elif line.startswith(b"-"):
            open_.pop(line[1:].decode("ascii", "replace"), None)
    return list(open_.items())


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
