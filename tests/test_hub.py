"""The event hub on its own: seq numbers, topics, bounded queues, history and demand."""

from __future__ import annotations

import asyncio

import pytest

from wsruntime_ext.hub import EventHub, SubscriptionClosed


async def test_every_event_gets_the_next_seq_and_its_type() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    first = hub.publish("git_changed")
    second = hub.publish("file_changed", {"path": "a", "event_type": "created"})
    assert (first.seq, second.seq) == (1, 2)
    assert (await sub.get()).data == {"type": "git_changed", "seq": 1}
    event = await sub.get()
    assert event.data == {"type": "file_changed", "path": "a", "event_type": "created", "seq": 2}
    assert event.text == '{"type":"file_changed","path":"a","event_type":"created","seq":2}'


async def test_topics_narrow_and_resync_always_arrives() -> None:
    hub = EventHub()
    sub = hub.subscribe(["git_changed"])
    hub.publish("file_changed", {"path": "a"})
    hub.publish("git_changed")
    hub.publish("resync", {"reason": "overflow"})
    assert [e.topic for e in sub.get_nowait(10)] == ["git_changed", "resync"]
    sub.set_topics(["*"])
    hub.publish("file_changed", {"path": "b"})
    assert [e.topic for e in sub.get_nowait(10)] == ["file_changed"]
    with pytest.raises(ValueError, match="unknown topic"):
        sub.set_topics(["nope"])
    assert sub.topics is None  # unchanged by a bad request
    with pytest.raises(ValueError, match="unknown topic"):
        hub.publish("nope")
    hub.add_topic("nope")
    hub.publish("nope")


async def test_a_subscriber_that_falls_behind_gets_a_resync_alone_and_goes_on() -> None:
    hub = EventHub(queue_size=10)
    slow = hub.subscribe()
    fast = hub.subscribe()
    received = []
    for i in range(25):
        hub.publish("git_changed", {"i": i})
        received += [e.data["i"] for e in fast.get_nowait(100)]
    assert received == list(range(25))  # the fast one got every event
    # The slow one: its full queue gave way to a resync twice (at the 11th and the 21st event), never more than
    # queue_size held; what it gets now is the last resync (it covers everything up to seq 21), then the rest.
    assert not slow.closed and len(slow) <= 10
    events = slow.get_nowait(100)
    assert events[0].data == {"type": "resync", "reason": "overflow", "seq": 21}
    assert [e.data["i"] for e in events[1:]] == [21, 22, 23, 24]
    assert hub.stats()["overflows"] == 2 and slow.overflows == 2 and hub.subscriber_count() == 2
    assert hub.stats()["undelivered"] == 11 + 10  # events 0-10, then 11-20: never sent (the resyncs cover them)
    hub.publish("git_changed", {"i": 25})
    assert [e.data["i"] for e in slow.get_nowait(10)] == [25]  # and it reads on


async def test_a_replay_larger_than_the_queue_is_a_resync_alone() -> None:
    hub = EventHub(queue_size=10, history=100)
    for i in range(30):
        hub.publish("git_changed", {"i": i})
    late = hub.subscribe(after=5)  # 25 events to replay: more than its queue holds
    assert [e.data for e in late.get_nowait(100)] == [{"type": "resync", "reason": "overflow", "seq": 30}]
    assert hub.stats()["overflows"] == 1
    hub.publish("git_changed", {"i": 30})
    assert [e.data["i"] for e in late.get_nowait(10)] == [30]
    fits = hub.subscribe(after=22)  # 8 events: replayed as they are
    assert [e.seq for e in fits.get_nowait(100)] == list(range(23, 32))


async def test_get_waits_and_close_wakes_the_reader() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    reader = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0.01)
    assert not reader.done()
    hub.publish("git_changed")
    assert (await reader).seq == 1
    reader = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0.01)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await reader


async def test_after_replays_what_was_missed_or_says_resync() -> None:
    hub = EventHub(history=5)
    for i in range(3):
        hub.publish("file_changed", {"i": i})
    hub.publish("system_stats", {"stats": {}})  # ephemeral: not replayed
    sub = hub.subscribe(after=1)
    assert [e.seq for e in sub.get_nowait(10)] == [2, 3]
    assert hub.subscribe(after=hub.last_seq).get_nowait(10) == []
    for i in range(10):
        hub.publish("file_changed", {"i": i})
    late = hub.subscribe(["file_changed"], after=2)
    events = late.get_nowait(100)
    assert events[0].data["type"] == "resync" and events[0].data["reason"] == "history"
    assert [e.seq for e in events[1:]] == list(range(hub.last_seq - 4, hub.last_seq + 1))
    future = hub.subscribe(after=hub.last_seq + 5).get_nowait(10)  # a seq of an earlier run
    assert [e.data["type"] for e in future] == ["resync"]
    with pytest.raises(ValueError):
        hub.subscribe(after=-1)


async def test_demand_callbacks_follow_the_first_and_last_listener() -> None:
    hub = EventHub()
    calls: list[bool] = []
    hub.on_demand("system_stats", calls.append)
    a = hub.subscribe(["file_changed"])
    assert calls == []
    b = hub.subscribe(["system_stats"])
    c = hub.subscribe()
    assert calls == [True]
    b.close()
    assert calls == [True]
    c.set_topics(["file_changed"])
    assert calls == [True, False]
    a.set_topics(["*"])
    assert calls == [True, False, True]
    a.close()
    assert calls == [True, False, True, False]
    assert not hub.listening("system_stats")
