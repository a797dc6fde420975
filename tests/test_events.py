"""``WS /api/v1/ws`` over a real WebSocket: the protocol, narrowing, resuming, slow clients, system stats."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest
import tornado.httpclient

from tests.conftest import TOKEN, ServerPool, ServerThread
from tests.eventstream import EventStream, file_events, wait_until_watching
from wsruntime_ext.hub import EventHub

FAKE_AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_agent.py")


def stats_server(servers: ServerPool) -> ServerThread:
    return servers.get("--stats-interval", "0.2")


async def test_hello_then_events_each_with_a_seq(server: ServerThread) -> None:
    await wait_until_watching(server)
    stream = await EventStream.open(server)
    try:
        assert stream.hello["topics"] == ["*"] and stream.hello["watch"] == "inotify"
        assert isinstance(stream.hello["seq"], int)
        name = f"hello-{uuid.uuid4().hex[:6]}.txt"
        with open(os.path.join(server.workspace, name), "w", encoding="utf-8") as f:
            f.write("x")
        event = await stream.expect_file(name, "created")
        assert event["seq"] > stream.hello["seq"]
        seqs = [e["seq"] for e in stream.seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        stream.close()


async def test_subscribe_narrows_the_stream(servers: ServerPool) -> None:
    server = stats_server(servers)
    await wait_until_watching(server)
    stream = await EventStream.open(server)
    try:
        await stream.send({"type": "subscribe", "topics": ["system_stats"]})
        ack = await stream.expect(lambda e: e["type"] == "subscribed")
        assert ack["topics"] == ["system_stats"] and isinstance(ack["seq"], int)
        with open(os.path.join(server.workspace, "narrow.txt"), "w", encoding="utf-8") as f:
            f.write("x")
        later = await stream.collect(0.8)
        assert [e for e in later if e["type"] == "file_changed"] == []
        assert [e for e in later if e["type"] == "system_stats"]

        await stream.send({"type": "subscribe", "topics": ["file_changed"]})
        await stream.expect(lambda e: e["type"] == "subscribed")
        os.unlink(os.path.join(server.workspace, "narrow.txt"))
        await stream.expect_file("narrow.txt", "deleted")
        assert [e for e in await stream.collect(0.5) if e["type"] == "system_stats"] == []
    finally:
        stream.close()


async def test_topics_on_connect_and_bad_query_parameters(server: ServerThread) -> None:
    stream = await EventStream.open(server, "?topics=git_changed,file_changed")
    assert stream.hello["topics"] == ["file_changed", "git_changed"]
    stream.close()
    for query, code in [
        ("?topics=nope", "unknown_topic"),
        ("?after=x", "invalid_parameter"),
        ("?after=-1", ""),
        ("?after=%C2%B2", ""),  # a digit to str.isdigit(), not to int()
        ("?after=" + "9" * 5000, ""),  # past int()'s limit on digits
        ("?topics=%FF", ""),
    ]:
        r = await server.request("GET", "/api/v1/ws" + query)
        assert r.status == 400, query
        assert r.error_code == (code or "invalid_parameter")
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await server.websocket("/api/v1/ws" + query)
        assert refused.value.code == 400
    r = await server.request("GET", "/api/v1/ws")
    assert r.status == 400 and r.error_code == "websocket_required"
    # A broken handshake is answered in JSON too (Tornado's own answer is plain text).
    handshake = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    r = await server.request("GET", "/api/v1/ws", headers=handshake)
    assert r.status == 400 and r.error_code == "websocket_required"
    handshake.update({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "99"})
    r = await server.request("GET", "/api/v1/ws", headers=handshake)
    assert r.status == 426 and r.error_code == "upgrade_required"


async def test_bad_messages_get_an_error_event_and_the_socket_stays(server: ServerThread) -> None:
    stream = await EventStream.open(server, "?topics=git_changed")
    try:
        cases: list[tuple[str | bytes, str]] = [
            ("not json", "invalid_json"),
            ('{"type": "subscribe", "topics": ["\\ud800"]}', "invalid_json"),  # a lone surrogate
            ('{"type": "ping", "n": NaN}', "invalid_json"),
            ("[" * 100_000 + "]" * 100_000, "invalid_json"),  # deeper than the parser goes
            ("[1, 2]", "invalid_message"),
            ('{"type": 5}', "invalid_message"),
            ('{"no": "type"}', "invalid_message"),
            ('{"type": "dance"}', "unknown_message_type"),
            ('{"type": "subscribe"}', "invalid_message"),
            ('{"type": "subscribe", "topics": "file_changed"}', "invalid_message"),
            ('{"type": "subscribe", "topics": [1]}', "invalid_message"),
            ('{"type": "subscribe", "topics": ["nope"]}', "unknown_topic"),
            (b"\x00\x01binary", "invalid_message"),
        ]
        for message, code in cases:
            await stream.ws.write_message(message, binary=isinstance(message, bytes))
            event = await stream.expect(lambda e: e["type"] == "error", what=f"error for {message!r}")
            assert event["code"] == code, message
            assert event["message"] and isinstance(event["seq"], int) and isinstance(event["details"], dict)
        await stream.send({"type": "ping", "id": 7})
        assert (await stream.expect(lambda e: e["type"] == "pong"))["id"] == 7
        # The failed subscribe left the topics as they were.
        await stream.send({"type": "subscribe", "topics": "*"})
        assert (await stream.expect(lambda e: e["type"] == "subscribed"))["topics"] == ["*"]
    finally:
        stream.close()


async def test_the_token_is_required(secured: ServerThread) -> None:
    for token, query in [(None, False), ("wrong", True)]:
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await secured.websocket("/api/v1/ws", token=token, query_token=query)
        assert refused.value.code == 401
    stream = await EventStream.open(secured, token=TOKEN, query_token=True)
    stream.close()


async def test_after_resumes_where_a_client_left(server: ServerThread) -> None:
    await wait_until_watching(server)
    stream = await EventStream.open(server, "?topics=file_changed")
    name = f"resume-{uuid.uuid4().hex[:6]}"
    with open(os.path.join(server.workspace, f"{name}-1"), "w", encoding="utf-8") as f:
        f.write("x")
    seen = await stream.expect_file(f"{name}-1", "created")
    stream.close()
    for i in (2, 3):  # while nobody of ours listens
        with open(os.path.join(server.workspace, f"{name}-{i}"), "w", encoding="utf-8") as f:
            f.write("x")
    await asyncio.sleep(0.3)
    again = await EventStream.open(server, f"?topics=file_changed&after={seen['seq']}")
    try:
        await again.expect_file(f"{name}-2", "created")
        await again.expect_file(f"{name}-3", "created")
        assert f"{name}-1" not in [p for _, p in file_events(again.seen)]
    finally:
        again.close()
    # A seq from an earlier run of the runtime (or no longer kept): reload.
    stale = await EventStream.open(server, f"?after={seen['seq'] + 10**9}")
    try:
        assert (await stale.expect(lambda e: e["type"] == "resync"))["reason"] == "history"
    finally:
        stale.close()


async def test_a_client_that_stops_reading_gets_a_resync_while_another_gets_everything(servers: ServerPool) -> None:
    server = servers.fresh("--watch", "off")
    try:
        assert server.runtime is not None
        hub: EventHub = server.runtime.ctx.hub
        hub.add_topic("test_blob")
        hub.queue_size = 512  # the bound under test, whatever the default
        slow = await EventStream.open(server, "?topics=test_blob")
        fast = await EventStream.open(server, "?topics=test_blob")
        blob = "x" * 4096
        total = 6000  # 24 MB, far more than the slow client's socket buffers and its queue; lowered at the cut
        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < total:
                text = await fast.ws.read_message()
                assert text is not None, "the fast client was closed"
                received.append(json.loads(text)["n"])

        reader = asyncio.ensure_future(read_fast())

        async def publish(start: int, count: int) -> None:
            for n in range(start, start + count):
                hub.publish("test_blob", {"n": n, "blob": blob})

        overflowed_at = None
        start = 0
        while start < total:
            server.call(lambda start=start: publish(start, 100))  # type: ignore[misc]
            deadline = time.monotonic() + 20
            while len(received) < start and not reader.done():  # keep the fast one within bounds
                assert time.monotonic() < deadline, "the fast client stalled"
                await asyncio.sleep(0.001)
            if overflowed_at is None and hub.stats()["overflows"]:
                overflowed_at = start
                total = start + 1100  # the fast client goes on getting everything after the cut
            start += 100
        await asyncio.wait_for(reader, 30)
        assert overflowed_at is not None, "the slow client's queue never filled"
        assert received == list(range(total))  # every event, in order
        assert hub.stats()["overflows"] >= 1 and hub.stats()["stalls"] == 0

        # The slow client reads again: what was already in flight, in order, then a resync in place of what
        # its queue held (reload what you show), then what comes next; it was never closed.
        got: list[int] = []
        while True:
            event = json.loads(await asyncio.wait_for(slow.ws.read_message(), 10))  # type: ignore[arg-type]
            if event["type"] == "resync":
                break
            got.append(event["n"])
        assert event["reason"] == "overflow" and event["seq"] > 0
        assert got == list(range(len(got)))
        server.call(lambda: publish(10**6, 1))
        then: list[int] = []  # what was published after the last overflow, then the new one
        while not then or then[-1] != 10**6:
            event = json.loads(await asyncio.wait_for(slow.ws.read_message(), 10))  # type: ignore[arg-type]
            assert event["type"] == "test_blob", event
            then.append(event["n"])
        assert then[:-1] == list(range(then[0], then[0] + len(then) - 1)) and then[0] > got[-1]
        fast.close()
        slow.close()
    finally:
        server.stop()


async def test_system_stats_arrive_with_sane_numbers_while_someone_listens(servers: ServerPool) -> None:
    server = stats_server(servers)
    stream = await EventStream.open(server, "?topics=system_stats")
    try:
        events = [await stream.expect(lambda e: e["type"] == "system_stats", 3) for _ in range(3)]
        for event in events:
            stats = event["stats"]
            assert set(stats) == {"cpu_percent", "memory_percent", "disk_percent"}
            assert all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in stats.values()), stats
            assert stats["memory_percent"] > 0 and stats["disk_percent"] > 0
        assert events[0]["seq"] < events[1]["seq"] < events[2]["seq"]  # three samples, not one repeated
        health = (await server.request("GET", "/health")).body["stats"]
        assert health["source"] in ("psutil", "proc") and health["sampling"] is True
    finally:
        stream.close()
    deadline = time.monotonic() + 5
    while (await server.request("GET", "/health")).body["stats"]["sampling"]:
        assert time.monotonic() < deadline, "still sampling with nobody listening"
        await asyncio.sleep(0.05)


async def test_shutdown_closes_the_socket_with_1001(servers: ServerPool) -> None:
    server = servers.fresh()
    stream = await EventStream.open(server)
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    while await asyncio.wait_for(stream.ws.read_message(), 10) is not None:
        pass
    assert stream.ws.close_code == 1001


async def test_agent_session_events_carry_the_id_and_status_of_api_md(servers: ServerPool) -> None:
    """API.md "WebSocket events": ``{"type": "agent_session", "id", "status"}`` (``session_id`` is an alias)."""
    server = servers.get("--claude-bin", FAKE_AGENT)
    stream = await EventStream.open(server, "?topics=agent_session")
    try:
        created = await server.request("POST", "/api/v1/agent-sessions", {"prompt": "echo evented"})
        assert created.status == 201, created.body
        sid = created.body["id"]
        event = await stream.expect(
            lambda e: e["type"] == "agent_session" and e.get("id") == sid and e["status"] == "completed",
            timeout=30,
            what="the session's completed event",
        )
        assert isinstance(event["seq"], int) and event["session_id"] == sid
        mine = [e for e in stream.seen if e["type"] == "agent_session" and e.get("id") == sid]
        assert [e["status"] for e in mine] == ["starting", "running", "completed"]
    finally:
        stream.close()


def test_every_module_can_publish_through_the_context(server: ServerThread) -> None:
    assert server.runtime is not None
    assert isinstance(server.runtime.ctx.hub, EventHub)
    for topic in ("agent_session", "script_run", "git_changed", "git_progress"):
        assert topic in server.runtime.ctx.hub.topics
