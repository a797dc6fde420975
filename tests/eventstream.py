"""A client of ``WS /api/v1/ws`` for the tests: read events, wait for one, collect for a while."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

import tornado.websocket

from tests.conftest import ServerThread

Predicate = Callable[[dict[str, Any]], bool]


class EventStream:
    """One connection; remembers every event it read, so a failed expectation can show them."""

    def __init__(self, ws: tornado.websocket.WebSocketClientConnection, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, server: ServerThread, query: str = "", **kwargs: Any) -> EventStream:
        ws = await server.websocket("/api/v1/ws" + query, **kwargs)
        hello = json.loads(await asyncio.wait_for(ws.read_message(), 10))  # type: ignore[arg-type]
        assert hello["type"] == "hello", hello
        return cls(ws, hello)

    async def send(self, message: Any) -> None:
        await self.ws.write_message(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        try:
            text = await asyncio.wait_for(self.ws.read_message(), timeout)
        except asyncio.TimeoutError:
            return None
        assert text is not None, f"the socket closed ({self.ws.close_code} {self.ws.close_reason})"
        event: dict[str, Any] = json.loads(text)
        event["_received"] = time.monotonic()
        self.seen.append(event)
        return event

    async def expect(self, predicate: Predicate, timeout: float = 1.0, what: str = "") -> dict[str, Any]:
        """Read until an event matches; fail (showing what came) if none does within ``timeout``."""
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while True:
            remaining = deadline - time.monotonic()
            event = await self.next(max(0.0, remaining)) if remaining > 0 else None
            if event is None:
                raise AssertionError(f"no {what or 'matching event'} within {timeout}s; got {self.seen[start:]}")
            if predicate(event):
                return event

    async def expect_file(self, path: str, kind: str, timeout: float = 1.0) -> dict[str, Any]:
        return await self.expect(
            lambda e: e["type"] == "file_changed" and e["path"] == path and e["event_type"] == kind,
            timeout,
            f"{kind} {path}",
        )

    async def expect_files(self, wanted: set[tuple[str, str]], timeout: float = 1.0) -> None:
        """Read until every (path, kind) came, in any order (a child found by the kernel may precede its parent
        found by a walk)."""
        missing = set(wanted)
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while missing:
            remaining = deadline - time.monotonic()
            event = await self.next(remaining) if remaining > 0 else None
            if event is None:
                raise AssertionError(f"no {sorted(missing)} within {timeout}s; got {self.seen[start:]}")
            if event["type"] == "file_changed":
                missing.discard((event["path"], event["event_type"]))

    async def collect(self, duration: float) -> list[dict[str, Any]]:
        """Every event that arrives within ``duration`` seconds."""
        deadline = time.monotonic() + duration
        events = []
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.next(remaining)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> None:
        self.ws.close()


def file_events(events: list[dict[str, Any]], prefix: str = "") -> list[tuple[str, str]]:
    """(event_type, path) of the file_changed events under ``prefix``."""
    return [
        (e["event_type"], e["path"]) for e in events if e["type"] == "file_changed" and e["path"].startswith(prefix)
    ]


async def wait_until_watching(server: ServerThread, timeout: float = 20) -> dict[str, Any]:
    """Wait until the watcher finished its first walk; returns /health's ``watch``."""
    deadline = time.monotonic() + timeout
    while True:
        watch: dict[str, Any] = (await server.request("GET", "/health")).body["watch"]
        if watch["ready"] or time.monotonic() > deadline:
            return watch
        await asyncio.sleep(0.05)
