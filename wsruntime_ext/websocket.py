"""The base of every WebSocket (``ApiWebSocket``) and the frames a server writes itself.

The same host, origin, token and query checks as HTTP run before the upgrade,
with JSON errors; open sockets are tracked for shutdown (1001); frames can be
written in batches, one write to the socket for many frames. A socket closed
while frames are still queued for a slow client (1013, the end of a stream)
stays open while the client keeps reading, so the close frame reaches it.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Awaitable
from typing import Any

import tornado.websocket

from wsruntime_ext.base import SERVER_HEADER, ApiError, JsonErrorsMixin


class ApiWebSocket(JsonErrorsMixin, tornado.websocket.WebSocketHandler):
    """Base of every WebSocket: the same security before the upgrade, JSON errors, shutdown tracking."""

    token_in_query = True

    def set_default_headers(self) -> None:
        self.set_header("Server", SERVER_HEADER)

    def prepare(self) -> Awaitable[None] | None:
        self.check_security()
        self.check_query()
        return None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Tornado answers a broken handshake in plain text: check it here, for a JSON answer.
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(
                400, "websocket_required", "This endpoint is a WebSocket: send an Upgrade: websocket request"
            )
        if not any(part.strip().lower() == "upgrade" for part in headers.get("Connection", "").split(",")):
            raise ApiError(400, "websocket_required", "A WebSocket handshake needs Connection: Upgrade")
        if not headers.get("Sec-WebSocket-Key"):
            raise ApiError(400, "websocket_required", "A WebSocket handshake needs a Sec-WebSocket-Key header")
        if headers.get("Sec-WebSocket-Version") not in ("7", "8", "13"):
            raise ApiError(426, "upgrade_required", "Unsupported WebSocket version: use 13", supported=["13"])
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        return True  # already checked, with a JSON answer, in prepare()

    def query_after(self) -> int:
        """``?after=SEQ`` of a replaying stream (default 0: everything), or 400 before the upgrade."""
        text = self.query("after", "0") or "0"
        if not text.isdigit() or len(text) > 15:
            raise ApiError(400, "invalid_parameter", "after must be a non-negative integer", parameter="after")
        return int(text)

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        self.ctx.websockets.add(self)
        return None

    def on_close(self) -> None:
        self.ctx.websockets.discard(self)

    def close_after_queued(self, code: int, reason: str) -> None:
        """Close with ``code`` behind the frames already queued, and wait for the client to read up to it.

        Tornado drops a connection 5 s after its close frame whatever is still queued, and the client then
        sees neither the last frames nor the code (a 1013 that says "reconnect" arrives as a bare drop). So
        the drop waits instead until the client has read nothing for ``CLOSE_IDLE_S`` (then 5 s more once
        everything, close frame included, was taken by the socket).
        """
        conn: Any = self.ws_connection  # WebSocketProtocol13 (its _waiting timer and _abort); close() forgets it
        self.close(code, reason)
        stream = getattr(conn, "stream", None)
        if conn is None or stream is None or getattr(conn, "_waiting", None) is None:
            return  # the client's close already came, or a Tornado without the timer: its own rules
        loop = stream.io_loop
        loop.remove_timeout(conn._waiting)
        conn._waiting = None
        state: dict[str, Any] = {"done": -1, "since": time.monotonic()}

        def check() -> None:
            conn._waiting = None
            if stream.closed():
                return
            done = getattr(stream, "_total_write_done_index", None)
            queued = getattr(stream, "_total_write_index", None)
            now = time.monotonic()
            if done != state["done"]:
                state["done"], state["since"] = done, now
            if done is not None and done == queued:
                conn._waiting = loop.add_timeout(loop.time() + 5, conn._abort)  # all sent: Tornado's own wait
            elif now - state["since"] >= CLOSE_IDLE_S:
                conn._abort()
            else:
                conn._waiting = loop.add_timeout(loop.time() + CLOSE_CHECK_S, check)

        conn._waiting = loop.add_timeout(loop.time() + CLOSE_CHECK_S, check)

    def send_message(self, message: dict[str, Any]) -> None:
        """Send one JSON frame; a socket that already closed is ignored."""
        try:
            self.write_message(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
        except tornado.websocket.WebSocketClosedError:
            pass

    def write_text_frames(self, payloads: list[bytes]) -> Awaitable[None] | None:
        """Send UTF-8 JSON texts as text frames in one write to the socket (one syscall, not one per frame).

        Raises WebSocketClosedError when the socket is closed; the result resolves when the socket took them.
        """
        conn = self.ws_connection
        stream = getattr(conn, "stream", None)
        if conn is None or conn.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        if stream is None or getattr(conn, "_compressor", None) is not None:
            last = None  # a connection we cannot frame for ourselves (compression): one message at a time
            for payload in payloads:
                last = self.write_message(payload.decode("utf-8", "surrogateescape"))
            return last
        # Small frames are joined into one write; a large payload goes after its header without being copied.
        written: Awaitable[None] | None = None
        small: list[bytes] = []
        for payload in payloads:
            if len(payload) < PREPARED_JOIN:
                small.append(text_frame(payload))
                continue
            small.append(text_frame_header(len(payload)))
            stream.write(b"".join(small))
            small = []
            written = stream.write(payload)
        if small:
            written = stream.write(b"".join(small))
        return written

    def write_prepared_frames(self, frames: list[bytes]) -> Awaitable[None] | None:
        """Send WebSocket text frames built by :func:`text_frame` (shared by clients: never copied per client).

        Small frames go in one write; large ones each in its own (tornado keeps them as views, not copies).
        Raises WebSocketClosedError when the socket is closed; the result resolves when the socket took them.
        """
        conn = self.ws_connection
        stream = getattr(conn, "stream", None)
        if conn is None or conn.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        if stream is None or getattr(conn, "_compressor", None) is not None:
            return self.write_text_frames([frame_payload(frame) for frame in frames])
        written: Awaitable[None] | None = None
        small: list[bytes] = []
        for frame in frames:
            if len(frame) < PREPARED_JOIN:
                small.append(frame)
                continue
            if small:
                stream.write(b"".join(small))
                small = []
            written = stream.write(frame)
        if small:
            written = stream.write(b"".join(small))
        return written


CLOSE_IDLE_S = 20.0  # a closed socket whose client reads nothing for this long is dropped
CLOSE_CHECK_S = 1.0  # how often a closed socket's progress is looked at
PREPARED_JOIN = 16 << 10  # prepared frames smaller than this are joined into one write


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame built by :func:`text_frame`."""
    size = frame[1]
    return frame[2:] if size < 126 else frame[4:] if size == 126 else frame[10:]


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    return text_frame_header(len(payload)) + payload


def text_frame_header(size: int) -> bytes:
    """The header of :func:`text_frame` for a payload of ``size`` bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)
