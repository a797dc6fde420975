"""Terminals (API.md "Processes and terminals"): a pseudo-terminal, its window size, and its scrollback on disk.

A terminal's output is one byte stream numbered from 0 over the life of the
process. :class:`ByteLog` appends it to segment files ``pty-<first byte>.bin``
(IOLoop side, buffered) and deletes the oldest segment once the others hold
the last ``scrollback`` bytes; :func:`read_bytes` (thread pool) reads from an
offset. :class:`Terminal` owns the master side of the pty: it reads it on the
IOLoop with ``add_reader`` whenever the kernel has something — whatever the
clients do — and writes keystrokes without ever blocking.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import re
import struct
import termios
from typing import IO, Callable

log = logging.getLogger("wsruntime.processes")

_SEGMENT = re.compile(r"^pty-(\d{16})\.bin$")
MIN_SEGMENT = 4 << 10
SEGMENTS_PER_SCROLLBACK = 8
READ_CHUNK = 1 << 16
READS_PER_WAKE = 16  # at most this many reads per readiness callback, so one chatty terminal cannot hog the loop
MAX_PENDING_INPUT = 4 << 20


def segment_name(first: int) -> str:
    return f"pty-{first:016d}.bin"


class ByteLog:
    """A terminal's output on disk: appended here, the oldest segment dropped once ``scrollback`` bytes are newer."""

    def __init__(self, directory: str, scrollback: int, segments: list[tuple[int, int]] | None = None) -> None:
        self.directory = directory
        self.scrollback = scrollback
        self.segment_size = max(MIN_SEGMENT, scrollback // SEGMENTS_PER_SCROLLBACK)
        self.segments: list[tuple[int, int]] = list(segments or [])  # (first byte, size), oldest first
        self.error: str | None = None
        self._file: IO[bytes] | None = None

    @property
    def end(self) -> int:
        """The number of the byte that comes next (every byte ever written)."""
        if not self.segments:
            return 0
        first, size = self.segments[-1]
        return first + size

    @property
    def oldest(self) -> int:
        """The number of the oldest byte kept (replay starts here at the earliest)."""
        if not self.segments:
            return 0
        return max(self.segments[0][0], self.end - self.scrollback)

    def append(self, data: bytes) -> None:
        try:
            if self._file is None or self.segments[-1][1] >= self.segment_size:
                self._start_segment()
            assert self._file is not None
            self._file.write(data)
        except OSError as exc:
            if self.error is None:
                log.error("cannot write terminal output in %s: %s", self.directory, exc)
            self.error = f"output could not be stored: {exc.strerror or exc}"
        # Counted even when it could not be stored: byte numbers follow the terminal, not the disk.
        first, size = self.segments[-1] if self.segments else (0, 0)
        if self.segments:
            self.segments[-1] = (first, size + len(data))
        else:
            self.segments.append((0, len(data)))
        self._prune()

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self.error = f"output could not be stored: {exc.strerror or exc}"

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def _start_segment(self) -> None:
        end = self.end
        self.close()
        self._file = open(os.path.join(self.directory, segment_name(end)), "ab", buffering=1 << 16)
        if not self.segments or self.segments[-1][1] > 0:
            self.segments.append((end, 0))

    def _prune(self) -> None:
        while len(self.segments) > 1 and self.end - self.segments[1][0] >= self.scrollback:
            first, _ = self.segments.pop(0)
            try:
                os.unlink(os.path.join(self.directory, segment_name(first)))
            except FileNotFoundError:
                pass


def scan_byte_segments(directory: str) -> list[tuple[int, int]]:
    """(first byte, size) of a terminal's segments on disk, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    segments = []
    for name in names:
        match = _SEGMENT.match(name)
        if match:
            try:
                segments.append((int(match.group(1)), os.path.getsize(os.path.join(directory, name))))
            except OSError:
                continue
    segments.sort()
    return segments


def read_bytes(directory: str, segments: list[tuple[int, int]], oldest: int, start: int, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` stored bytes from byte ``start`` on (``start`` ≥ ``oldest``; blocking)."""
    chunks: list[bytes] = []
    position = max(start, oldest)
    wanted = max_bytes
    for first, size in segments:
        if wanted <= 0:
            break
        if first + size <= position:
            continue
        if first > position:
            break  # a gap: a segment that vanished meanwhile
        try:
            with open(os.path.join(directory, segment_name(first)), "rb") as f:
                f.seek(position - first)
                data = f.read(min(wanted, first + size - position))
        except FileNotFoundError:
            break
        if not data:
            break
        chunks.append(data)
        position += len(data)
        wanted -= len(data)
    return b"".join(chunks)


def open_terminal(cols: int, rows: int) -> tuple[int, int]:
    """A new pty of ``cols`` × ``rows``: (master, slave); the master is non-blocking."""
    master, slave = os.openpty()
    try:
        set_window_size(slave, cols, rows)
        os.set_blocking(master, False)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def set_window_size(fd: int, cols: int, rows: int) -> None:
    """The kernel's window size of the pty; its foreground process group gets SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def window_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


_TIOCSCTTY = termios.TIOCSCTTY
_ioctl = fcntl.ioctl


def take_controlling_terminal() -> None:
    """In the child, after ``setsid``: its stdin (the pty's slave) becomes the session's controlling terminal."""
    _ioctl(0, _TIOCSCTTY, 0)


class Terminal:
    """The master side of a pty on the IOLoop: output to ``on_output`` as it comes, input queued without blocking."""

    def __init__(self, master: int, loop: asyncio.AbstractEventLoop, on_output: Callable[[bytes], None]) -> None:
        self.master = master
        self.loop = loop
        self.on_output = on_output
        # Resolved at EOF: every holder of the slave side has gone.
        self.closed: asyncio.Future[None] = loop.create_future()
        self._pending = bytearray()
        self._writing = False
        self._watching = True
        loop.add_reader(master, self._readable)

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKE):
            try:
                data = os.read(self.master, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the last slave fd closed — the terminal's end of file
                    log.warning("terminal read failed: %s", exc)
                data = b""
            if not data:
                self._eof()
                return
            self.on_output(data)

    def _eof(self) -> None:
        self._stop_watching()
        if not self.closed.done():
            self.closed.set_result(None)

    def _stop_watching(self) -> None:
        if not self._watching:
            return
        self._watching = False
        self.loop.remove_reader(self.master)
        if self._writing:
            self.loop.remove_writer(self.master)
            self._writing = False

    def write(self, data: bytes) -> int:
        """Queue keystrokes; returns how many were taken (all of them, unless the queue is full)."""
        if self.closed.done():
            return 0
        room = MAX_PENDING_INPUT - len(self._pending)
        data = data[: max(room, 0)]
        self._pending += data
        self._flush()
        return len(data)

    def _flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self.master, self._pending)
            except BlockingIOError:
                break
            except OSError:
                self._pending.clear()
                break
            del self._pending[:written]
        if self._pending and not self._writing:
            self.loop.add_writer(self.master, self._flush)
            self._writing = True
        elif not self._pending and self._writing:
            self.loop.remove_writer(self.master)
            self._writing = False

    def resize(self, cols: int, rows: int) -> None:
        set_window_size(self.master, cols, rows)

    def foreground_group(self) -> int | None:
        try:
            return os.tcgetpgrp(self.master)
        except OSError:
            return None

    def close(self) -> None:
        """Stop reading and close the master (after EOF, or when the process is gone)."""
        self._stop_watching()  # also when the end was never seen (``closed`` cancelled)
        if not self.closed.done():
            self.closed.set_result(None)
        try:
            os.close(self.master)
        except OSError:
            pass
