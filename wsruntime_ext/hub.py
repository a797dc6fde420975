"""The event hub: topics, sequence numbers and bounded subscriber queues (API.md "WebSocket events").

Every module publishes through the one hub on the Context —
``ctx.hub.publish("git_changed", {})`` — and every listener (the ``WS
/api/v1/ws`` socket, tests) reads from a :class:`Subscription`:
``sub = ctx.hub.subscribe({"file_changed"}); event = await sub.get()``.

Each published event gets the next hub-wide ``seq``; each subscriber has its
own bounded queue, so a subscriber that stops reading never slows the
publisher or the other subscribers: when its queue is full, what it holds is
dropped for one ``resync`` (API.md: "If events were lost (queue overflow) the
server sends resync so clients reload what they show"), and the subscriber
goes on from there. A client that reconnects with ``after=<last seq seen>``
gets what it missed from the hub's history, or a ``resync`` when that history
no longer reaches back or holds more than its queue. An owner that finds its
reader gone quiet cuts it off with :meth:`Subscription.stall`. ``stats()``
counts overflows and cut-offs, and the events they never delivered.

Everything here runs on the IOLoop's thread; it never blocks and never awaits.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Iterable
from typing import Any, Callable

log = logging.getLogger("wsruntime.hub")

# The topics of API.md; modules may add their own with EventHub.add_topic.
TOPICS = (
    "file_changed",
    "system_stats",
    "resync",
    "git_changed",
    "git_progress",
    "agent_session",
    "script_run",
    "process",
)
# Topics whose events are only worth anything when they are new: never replayed from history.
EPHEMERAL_TOPICS = frozenset({"system_stats", "git_progress"})
# Delivered to every subscriber whatever it narrowed to: "reload what you show".
ALWAYS_DELIVERED = frozenset({"resync"})

DEFAULT_QUEUE_SIZE = 4096  # events; a checkout of thousands of files must not cut off a healthy client
DEFAULT_HISTORY = 4096


class SubscriptionClosed(Exception):
    """Raised by :meth:`Subscription.get` once the subscription is closed."""


class Event:
    """One published event: its topic, its seq, its fields, and its JSON text (encoded once, lazily)."""

    __slots__ = ("_text", "data", "seq", "topic")

    def __init__(self, topic: str, seq: int, data: dict[str, Any]) -> None:
        self.topic = topic
        self.seq = seq
        self.data = data
        self._text: str | None = None

    @property
    def text(self) -> str:
        """The event as one JSON frame; shared by every subscriber, so it is encoded once."""
        if self._text is None:
            self._text = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return self._text

    def __repr__(self) -> str:
        return f"Event({self.data!r})"


class Subscription:
    """One listener's view of the hub: a topic filter and a bounded queue of events."""

    def __init__(
        self,
        hub: EventHub,
        topics: frozenset[str] | None,
        queue_size: int,
    ) -> None:
        self.hub = hub
        self.topics = topics  # None: every topic
        self.queue_size = queue_size
        self.closed = False
        self.stalled = False
        self.overflows = 0  # times its queue was full and gave way to a resync
        self._queue: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def wants(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics or topic in ALWAYS_DELIVERED

    def set_topics(self, topics: Iterable[str] | None) -> None:
        """Narrow (or widen) what this subscriber gets from the next event on."""
        old = self.topics
        self.topics = self.hub.check_topics(topics)
        if not self.closed:
            self.hub._demand_changed(old, self.topics)

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: Event) -> bool:
        """Queue one event; into a full queue a ``resync`` instead (see _overflow). False when not queued."""
        if self.closed:
            return False
        if len(self._queue) >= self.queue_size:
            self._overflow(event.seq)
            return False
        self._queue.append(event)
        self._wake()
        return True

    def put_direct(self, data: dict[str, Any]) -> bool:
        """Queue a message meant for this subscriber only (a reply), in order with the events."""
        data.setdefault("seq", self.hub.last_seq)
        return self.put(Event(str(data.get("type", "")), self.hub.last_seq, data))

    async def get(self) -> Event:
        """The next event; raises SubscriptionClosed once closed (after the queue is drained unless overflowed)."""
        while not self._queue:
            if self.closed:
                raise SubscriptionClosed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def get_nowait(self, limit: int) -> list[Event]:
        """Up to ``limit`` queued events without waiting (maybe none)."""
        batch: list[Event] = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    def close(self) -> None:
        """Stop receiving; a reader blocked in :meth:`get` is woken up."""
        if self.closed:
            return
        self.closed = True
        self.hub._remove(self)
        self._wake()

    def stall(self) -> None:
        """Cut off a subscriber whose reader stopped reading (its owner tells): counted, its queue dropped."""
        if self.closed:
            return
        self.stalled = True
        self.hub.stalls += 1
        self.hub.undelivered += len(self._queue)
        self._queue.clear()
        self.close()

    def _overflow(self, seq: int) -> None:
        """``queue_size`` events behind: what is queued (and the event ``seq`` that did not fit) gives way to one
        ``resync`` — the reader reloads what it shows, which covers every change up to ``seq`` — and it goes
        on from there. Its memory stays bounded whatever it does; one that stops reading altogether is its
        owner's to cut off (stall)."""
        self.overflows += 1
        self.hub.overflows += 1
        self.hub.undelivered += 1 + sum(e.topic != "resync" for e in self._queue)  # events, not an older resync
        self._queue.clear()
        log.info("a subscriber fell %d events behind: its queue gives way to a resync", self.queue_size)
        self._queue.append(Event("resync", seq, {"type": "resync", "reason": "overflow", "seq": seq}))
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class EventHub:
    """Topics, a sequence number on every event, and one bounded queue per subscriber."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE, history: int = DEFAULT_HISTORY) -> None:
        self.queue_size = queue_size
        self.topics: set[str] = set(TOPICS)
        self.last_seq = 0
        self.published = 0
        self.overflows = 0  # subscribers cut off for being queue_size events behind
        self.stalls = 0  # subscribers cut off by their owner for not reading (Subscription.stall)
        self.undelivered = 0  # events that cut-off subscribers never got
        self._subscribers: list[Subscription] = []
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        self._first_kept_seq = 1  # the oldest seq the history can still replay
        self._demand: dict[str, list[Callable[[bool], None]]] = {}

    # -- publishing ---------------------------------------------------------------------

    def add_topic(self, topic: str) -> None:
        """Declare a topic a module publishes (API.md's are known already)."""
        self.topics.add(topic)

    def publish(self, topic: str, fields: dict[str, Any] | None = None) -> Event:
        """Give ``{"type": topic, **fields}`` the next seq and queue it for every subscriber of the topic."""
        if topic not in self.topics:
            raise ValueError(f"unknown topic {topic!r}: declare it with EventHub.add_topic")
        self.last_seq += 1
        self.published += 1
        data = {"type": topic, **(fields or {}), "seq": self.last_seq}
        event = Event(topic, self.last_seq, data)
        if topic not in EPHEMERAL_TOPICS:
            if len(self._history) == self._history.maxlen:
                self._first_kept_seq = self._history[0].seq + 1
            self._history.append(event)
        for sub in tuple(self._subscribers):
            if sub.wants(topic):
                sub.put(event)
        return event

    # -- subscribing --------------------------------------------------------------------

    def check_topics(self, topics: Iterable[str] | None) -> frozenset[str] | None:
        """Validate a topic list (``"*"`` or None means every topic); ValueError names an unknown one."""
        if topics is None:
            return None
        wanted = frozenset(topics)
        if "*" in wanted:
            return None
        unknown = sorted(wanted - self.topics)
        if unknown:
            raise ValueError(f"unknown topic {unknown[0][:64]!r}; known topics: {', '.join(sorted(self.topics))}")
        return wanted

    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        *,
        after: int | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """A new subscription to ``topics`` (None: all). With ``after``, the kept events after that seq come first.

        When the history no longer reaches back to ``after`` — or ``after`` lies
        beyond the last seq: a seq of an earlier run of the runtime — a
        ``resync`` comes first instead of what was lost; when what is kept
        after it is more than the queue holds, a ``resync`` alone (as an
        overflow would). Raises ValueError for an unknown topic or a negative
        ``after``.
        """
        wanted = self.check_topics(topics)
        if after is not None and after < 0:
            raise ValueError("after must not be negative")
        sub = Subscription(self, wanted, queue_size or self.queue_size)
        if after is not None and after != self.last_seq:
            gap = after + 1 < self._first_kept_seq or after > self.last_seq
            backlog = [e for e in self._history if e.seq > after and sub.wants(e.topic)]
            too_many = len(backlog) + gap > sub.queue_size
            if too_many:
                self.overflows += 1
                self.undelivered += len(backlog)
                backlog = []  # the resync below covers it: the client reloads
            if gap or too_many:
                reason = "history" if gap else "overflow"
                sub.put(Event("resync", self.last_seq, {"type": "resync", "reason": reason, "seq": self.last_seq}))
            for event in backlog:
                sub.put(event)
        self._subscribers.append(sub)
        self._demand_changed(frozenset(), wanted)
        return sub

    def listening(self, topic: str) -> bool:
        """True when some subscriber would receive an event of this topic (worth computing it)."""
        return any(sub.wants(topic) for sub in self._subscribers)

    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def on_demand(self, topic: str, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` when a first subscriber of ``topic`` comes, ``callback(False)`` when none is left."""
        self._demand.setdefault(topic, []).append(callback)
        if self.listening(topic):
            callback(True)

    def close_all(self) -> None:
        for sub in tuple(self._subscribers):
            sub.close()

    def stats(self) -> dict[str, Any]:
        return {
            "subscribers": len(self._subscribers),
            "last_seq": self.last_seq,
            "overflows": self.overflows,
            "stalls": self.stalls,
            "undelivered": self.undelivered,
        }

    # -- internals ----------------------------------------------------------------------

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            self._demand_changed(sub.topics, frozenset())

    def _demand_changed(self, old: frozenset[str] | None, new: frozenset[str] | None) -> None:
        """Tell demand watchers about topics that gained their first or lost their last subscriber."""
        for topic, callbacks in self._demand.items():
            had = old is None or topic in old
            has = new is None or topic in new
            if had == has:
                continue
            # A subscriber that gained the topic is already counted (it is in the list and wants
            # it); one that lost it is not: what remains are the others.
            others = sum(1 for s in self._subscribers if s.wants(topic)) - (1 if has else 0)
            if others > 0:
                continue
            for callback in callbacks:
                try:
                    callback(has)
                except Exception:
                    log.exception("a demand callback for %s failed", topic)
