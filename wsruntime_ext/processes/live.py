"""The live side of a run's pipe output: the child's pipes read in big chunks, and the newest frames kept framed once.

:class:`PipeReader` reads one of the child's pipes on the IOLoop with
``add_reader`` (the pipe enlarged to ``PIPE_SIZE`` where Linux allows it), up
to ``READ_BUDGET`` bytes per readiness callback, handed on as one chunk — one
output frame — so that a fast writer makes few large frames and a slow one
is still sent at once. :class:`OutputWindow` keeps the newest frames as the
bytes of their WebSocket frames, built once for every client: a client that
keeps up sends them from here; one that fell out of the window reads the
disk (``runs.read_frames``) as a replay does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import logging
import os
from typing import Callable

log = logging.getLogger("wsruntime.processes")

PIPE_SIZE = 1 << 20  # the default /proc/sys/fs/pipe-max-size: an unprivileged process may ask for this much
READ_BUDGET = 128 << 10  # bytes read per readiness callback (one frame at most)
WINDOW_BYTES = 2 << 20  # the newest frames kept in memory for live clients
LIVE_BATCH = 512 << 10  # bytes of window frames sent per step of a live client (views, not copies)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class PipeReader:
    """One of a child's pipes, read on the IOLoop whatever the clients do; ``closed`` resolves at EOF.

    ``on_data`` gets each chunk, and b"" once at the end of the pipe.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, on_data: Callable[[bytes], None]) -> None:
        self.fd = fd
        self.loop = loop
        self.on_data = on_data
        self.closed: asyncio.Future[None] = loop.create_future()
        self._watching = True
        self._paused = False
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):  # larger reads, fewer wake-ups; the default 64 KiB where refused
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        parts: list[bytes] = []
        size = 0
        eof = False
        while size < READ_BUDGET:
            try:
                data = os.read(self.fd, READ_BUDGET - size)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("pipe read failed: %s", exc)
                data = b""
            if not data:
                eof = True
                break
            parts.append(data)
            size += len(data)
        if parts:
            self.on_data(b"".join(parts))  # one part (the common case) is not copied
        if eof:
            self.on_data(b"")  # the end: what is left of an incomplete UTF-8 sequence
            self.close()

    def pause(self) -> None:
        """Stop reading for now (the child blocks once the pipe is full)."""
        if self._watching and not self._paused:
            self._paused = True
            self.loop.remove_reader(self.fd)

    def resume(self) -> None:
        if self._watching and self._paused:
            self._paused = False
            self.loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        """Stop reading and close the pipe (at EOF, or when the process is gone)."""
        if self._watching:
            self._watching = False
            if not self._paused:
                self.loop.remove_reader(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
        if not self.closed.done():
            self.closed.set_result(None)


@dataclasses.dataclass
class LiveFrame:
    """One output frame as sent (a WebSocket text frame), and where its line ends on disk."""

    seq: int
    frame: bytes
    segment: int  # the segment (its first seq) holding the frame's line
    offset: int  # the byte offset just after that line


class OutputWindow:
    """The newest output frames, framed once for every live client; at most about ``limit`` bytes."""

    def __init__(self, limit: int = WINDOW_BYTES) -> None:
        self.limit = limit
        self.frames: collections.deque[LiveFrame] = collections.deque()
        self.size = 0

    def add(self, seq: int, frame: bytes, segment: int, offset: int) -> None:
        """A frame built by ``websocket.text_frame``."""
        self.frames.append(LiveFrame(seq, frame, segment, offset))
        self.size += len(frame)
        while self.size > self.limit and len(self.frames) > 1:
            self.size -= len(self.frames.popleft().frame)

    def since(self, seq: int, max_bytes: int) -> list[LiveFrame] | None:
        """Frames from ``seq`` on (about ``max_bytes``; [] when none is newer), or None when ``seq`` left the window."""
        frames = self.frames
        if not frames:
            return None
        first = frames[0].seq
        if seq < first:
            return None
        index = seq - first  # seqs in the window are consecutive
        if index >= len(frames):
            return [] if index == len(frames) else None
        chosen: list[LiveFrame] = []
        size = 0
        while index < len(frames) and size < max_bytes:
            item = frames[index]
            chosen.append(item)
            size += len(item.frame)
            index += 1
        return chosen

    def clear(self) -> None:
        self.frames.clear()
        self.size = 0
