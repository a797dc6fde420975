"""A bare WebSocket client over a blocking socket: it reads (or does not) exactly as a test tells it.

A library client reads and answers pings on its own; the slow-client tests need one that never reads, one
that reads at a set pace, and one that reads but never answers. Also used by bench/soak.py.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Callable

PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1


class RawWebSocket:
    """One client connection: the handshake, then frames read and written by hand."""

    def __init__(self, host: str, port: int, path: str, rcvbuf: int | None = None, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake refused: {status!r}")
        self.close_code: int | None = None
        self.close_reason = ""

    def _fill(self, size: int, limit: int) -> bool:
        while len(self.buffer) < size:
            chunk = self.sock.recv(limit)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_frame(self, recv_size: int = 1 << 16) -> tuple[int, bytes] | None:
        """The next frame (opcode, payload), reading at most ``recv_size`` bytes a call; None at the end."""
        if not self._fill(2, recv_size):
            return None
        opcode = self.buffer[0] & 0x0F
        size = self.buffer[1] & 0x7F
        header = 2
        if size == 126:
            if not self._fill(4, recv_size):
                return None
            size = struct.unpack("!H", self.buffer[2:4])[0]
            header = 4
        elif size == 127:
            if not self._fill(10, recv_size):
                return None
            size = struct.unpack("!Q", self.buffer[2:10])[0]
            header = 10
        if not self._fill(header + size, recv_size):
            return None
        payload = self.buffer[header : header + size]
        self.buffer = self.buffer[header + size :]
        if opcode == CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.close_reason = payload[2:].decode("utf-8", "replace")
        return opcode, payload

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """One masked frame, as a client must send it."""
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def read_until_close(
        self,
        answer_pings: bool = True,
        pause: float = 0.0,
        recv_size: int = 1 << 16,
        until: Callable[[bytes], bool] | None = None,
    ) -> list[bytes]:
        """Read every text frame until the close frame (or the end, or a text frame ``until`` says yes to);
        pings answered unless told not to."""
        texts: list[bytes] = []
        while True:
            frame = self.read_frame(recv_size)
            if frame is None:
                return texts
            opcode, payload = frame
            if opcode == TEXT:
                texts.append(payload)
                if until is not None and until(payload):
                    return texts
                if pause:
                    time.sleep(pause)
            elif opcode == PING and answer_pings:
                self.send_frame(PONG, payload)
            elif opcode == CLOSE:
                return texts

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
