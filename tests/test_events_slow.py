"""Slow and stalled clients of ``WS /api/v1/ws`` (README "Live events", Slow clients): one that falls behind gets a
``resync`` and reads on; one that stops reading ends with 1013, counted in ``/health``, never with a ping timeout
that carries no code.

The clients are bare sockets (tests/rawws.py) that read exactly as told: never, slowly, or without ever
answering a ping. The ping timeout is shortened to 2 s for these tests (20 s in the runtime), and Tornado's
own pings are set to fire after 1 s, as they would have fired first in the soak: they must not decide.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerPool, ServerThread
from tests.eventstream import EventStream
from tests.rawws import CLOSE, RawWebSocket
from wsruntime_ext import events
from wsruntime_ext.hub import EventHub


@pytest.fixture
def slow_server(servers: ServerPool, monkeypatch: Any) -> Iterator[ServerThread]:
    monkeypatch.setattr(events, "PROBE_TIMEOUT_S", 2.0, raising=False)
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.5, raising=False)
    server = servers.fresh("--watch", "off")
    assert server.runtime is not None
    settings = server.runtime.server.request_callback.settings  # type: ignore[union-attr]
    settings["websocket_ping_interval"] = 1
    settings["websocket_ping_timeout"] = 1
    server.runtime.ctx.hub.add_topic("test_blob")
    try:
        yield server
    finally:
        server.stop()


def hub_of(server: ServerThread) -> EventHub:
    assert server.runtime is not None
    return server.runtime.ctx.hub


def publish(server: ServerThread, count: int, size: int) -> None:
    async def run() -> None:
        hub = hub_of(server)
        for _ in range(count):
            hub.publish("test_blob", {"blob": "x" * size})

    server.call(run)


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.05)


async def connect(server: ServerThread, **kwargs: Any) -> RawWebSocket:
    before = hub_of(server).subscriber_count()
    loop = asyncio.get_running_loop()
    raw = await loop.run_in_executor(
        None, lambda: RawWebSocket("127.0.0.1", server.port, "/api/v1/ws?topics=test_blob", **kwargs)
    )
    await wait_for(lambda: hub_of(server).subscriber_count() > before, 5, "subscribed")
    return raw


def seqs(texts: list[bytes]) -> list[int]:
    return [json.loads(t)["seq"] for t in texts]


async def test_a_client_that_never_reads_has_a_bounded_queue_then_is_closed_1013_by_the_ping_timeout(
    slow_server: ServerThread,
) -> None:
    """Small events, and a client whose socket buffers could hold all of them: no more than ``WINDOW`` go out
    unconfirmed, the rest wait in its queue, whose 4,096 give way to a resync; it answers no ping: 1013."""
    raw = await connect(slow_server, rcvbuf=4 << 20)
    try:
        hub = hub_of(slow_server)
        for _ in range(100):  # paced: the runtime writes each burst out before the next
            publish(slow_server, 100, 100)
            await asyncio.sleep(0.02)
        await wait_for(lambda: hub.stats()["stalls"] == 1, 10, "the client was cut off for answering no ping")
        stats = hub.stats()
        assert stats["overflows"] >= 1 and stats["subscribers"] == 0
        assert stats["undelivered"] >= 10000 - 4096 - events.WINDOW
        health = (await slow_server.request("GET", "/health")).body["events"]
        assert health["overflows"] == stats["overflows"] and health["undelivered"] == stats["undelivered"]
        # Reading now: the hello, what was in flight, in order, then the close frame with 1013.
        texts = await asyncio.get_running_loop().run_in_executor(None, lambda: raw.read_until_close(False))
        assert raw.close_code == 1013 and "ping" in raw.close_reason, (raw.close_code, raw.close_reason)
        got = seqs(texts[1:])
        assert got == list(range(got[0], got[0] + len(got))) and len(got) < events.WINDOW + events.WRITE_BATCH
    finally:
        raw.close()


async def test_a_client_that_reads_slowly_gets_a_resync_and_stays(slow_server: ServerThread, monkeypatch: Any) -> None:
    """It answers every ping, late (the runtime's 20 s timeout here): when its queue fills, what was queued gives
    way to a resync (reload what you show), and it reads on — never cut off for being behind."""
    monkeypatch.setattr(events, "PROBE_TIMEOUT_S", 20.0, raising=False)
    raw = await connect(slow_server)
    loop = asyncio.get_running_loop()

    def is_resync(text: bytes) -> bool:
        return bool(json.loads(text)["type"] == "resync")

    reader = loop.run_in_executor(None, lambda: raw.read_until_close(True, pause=0.002, until=is_resync))
    hub = hub_of(slow_server)
    try:
        deadline = time.monotonic() + 20
        while not hub.stats()["overflows"]:  # ~3k events a second until its queue fills
            assert time.monotonic() < deadline, "the slow client's queue never filled"
            assert not reader.done(), f"closed: {raw.close_code} {raw.close_reason!r}"
            publish(slow_server, 150, 100)
            await asyncio.sleep(0.05)
        texts = await asyncio.wait_for(reader, 60)
        assert raw.close_code is None, (raw.close_code, raw.close_reason)
        resync = json.loads(texts[-1])
        assert resync["type"] == "resync" and resync["reason"] == "overflow", resync
        got = seqs(texts[1:-1])
        assert got == list(range(got[0], got[0] + len(got)))  # no gap before the resync
        assert resync["seq"] > got[-1]
        stats = hub.stats()
        assert stats["stalls"] == 0 and stats["undelivered"] > 0 and stats["subscribers"] == 1
        # It reads on: what came after the resync, then a new event.
        publish(slow_server, 1, 10)
        tail = await loop.run_in_executor(
            None, lambda: raw.read_until_close(True, until=lambda t: json.loads(t)["blob"] == "x" * 10)
        )
        assert seqs(tail) == list(range(resync["seq"] + 1, resync["seq"] + 1 + len(tail)))
    finally:
        raw.close()


async def test_a_client_that_stops_responding_is_closed_1013_after_the_ping_timeout(
    slow_server: ServerThread,
) -> None:
    """Its network is gone (or it hangs): a quiet stream, no read, no pong — closed with 1013, counted."""
    raw = await connect(slow_server)
    try:
        publish(slow_server, 3, 10)
        hub = hub_of(slow_server)
        started = time.monotonic()
        await wait_for(lambda: hub.stats()["stalls"] == 1, 10, "the silent client was cut off")
        assert time.monotonic() - started >= 1.5  # by the ping timeout, not sooner
        assert hub.stats()["overflows"] == 0
        assert (await slow_server.request("GET", "/health")).body["events"]["stalls"] == 1
        texts = await asyncio.get_running_loop().run_in_executor(None, lambda: raw.read_until_close(False))
        assert raw.close_code == 1013 and "ping" in raw.close_reason, (raw.close_code, raw.close_reason)
        assert len(texts) == 4  # the hello and the three events
    finally:
        raw.close()


async def test_a_quiet_client_that_answers_pings_stays(slow_server: ServerThread) -> None:
    stream = await EventStream.open(slow_server, "?topics=test_blob")
    try:
        await asyncio.sleep(4)  # two ping timeouts: its library answers the pings as it waits
        publish(slow_server, 1, 10)
        assert (await stream.expect(lambda e: e["type"] == "test_blob", 5))["blob"] == "x" * 10
        assert hub_of(slow_server).stats()["stalls"] == 0
    finally:
        stream.close()


def test_a_frame_reader_sees_the_close_code(slow_server: ServerThread) -> None:
    """The bare client itself: a close frame's code is read (the other tests rely on it)."""
    raw = RawWebSocket("127.0.0.1", slow_server.port, "/api/v1/ws?topics=test_blob")
    try:
        raw.send_frame(CLOSE, (1000).to_bytes(2, "big"))
        raw.read_until_close()
        assert raw.close_code == 1000
    finally:
        raw.close()
