"""``WS /api/v1/ws``: workspace-wide live events (API.md "WebSocket events").

One JSON object a frame, each with a ``seq``: ``file_changed``, ``resync``
and ``git_changed`` from the watcher (watch/), ``system_stats`` from stats.py,
and whatever other modules publish through the hub (``agent_session``,
``script_run``, ``process``, ``git_progress``). A client narrows what it gets with
``{"type": "subscribe", "topics": [...]}`` (or ``?topics=`` on connect),
resumes after a reconnect with ``?after=<last seq>``, and gets an ``error``
event — never a dropped connection — for a message it got wrong.

Slow clients never slow the others. One that falls behind is told to reload
(``resync``) and goes on; one that stops reading is closed with 1013
(reconnect with ``?after=``); both counted in ``/health``. The
socket knows what a client has read, not just what the kernel took: every
few hundred events (and every second while events flow, every 20 s on a
quiet stream) it sends a WebSocket ping, and the client's pong confirms
every event written before it (every WebSocket client answers pings as it
reads). At most ``WINDOW`` events (``WINDOW_BYTES``) are out unconfirmed —
enough for a checkout-sized burst to a client that reads — so the kernel's
buffers never hide an unbounded backlog and a ping is never stuck behind
more than a megabyte; beyond that events wait in the client's queue. A
client whose queue fills (4,096 events) has what is queued replaced by one
``resync`` (``overflows``; hub.py) — it reloads what it shows and reads on;
one that answers no ping for ``PROBE_TIMEOUT_S`` — it stopped reading, or
its network is gone — is closed with 1013 (``stalls``); the events neither
was sent are counted (``undelivered``). Tornado's own ping timeout,
which closed such clients without a code, is not used here; and a client cut
off is given time to read up to its close frame as long as it answers the
pings sent before it.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.ioloop
import tornado.iostream
import tornado.websocket

from wsruntime_ext.base import ApiError, loads_client_json, log
from wsruntime_ext.hub import TOPICS, Subscription, SubscriptionClosed
from wsruntime_ext.openapi import query_param, route, websocket_operation
from wsruntime_ext.stats import SystemStats
from wsruntime_ext.watch import Watcher
from wsruntime_ext.websocket import ApiWebSocket

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

WRITE_BATCH = 64  # frames written before waiting for the socket to take them
CLOSE_TRY_AGAIN_LATER = 1013
WINDOW = 4096  # events written but not yet confirmed read by a pong, at most
WINDOW_BYTES = 1 << 20  # and their size: a client reading 50 KB/s still reaches each ping within the timeout
PROBE_TIMEOUT_S = 20.0  # a client that answers no ping for this long is closed with 1013
KEEPALIVE_S = 20.0  # a ping at least this often, also when nothing is sent
TICK_S = 1.0  # how often every client's pings are looked at
MAX_PROBES = 64  # pings awaiting their pong, at most (the oldest decides)
CLOSE_WAIT_S = 20.0  # a client cut off has this long from its last pong to read up to its close frame


class LiveEvents:
    """The producers of workspace-wide events: the file watcher and the system stats sampler."""

    def __init__(self, ctx: Context) -> None:
        config = ctx.config
        self.hub = ctx.hub
        self.watcher = Watcher(
            ctx.hub, config.workspace, config.state_dir, config.watch, config.watch_ignore, ctx.run_blocking
        )
        self.stats = SystemStats(ctx.hub, config.workspace, config.stats_interval, ctx.run_blocking)
        self.clients: set[EventsSocket] = set()
        self._ticker = tornado.ioloop.PeriodicCallback(self._tick, TICK_S * 1000)

    async def start(self) -> None:
        await self.watcher.start()
        self.stats.start()
        self._ticker.start()

    def _tick(self) -> None:
        now = time.monotonic()
        for client in tuple(self.clients):
            try:
                client.tick(now)
            except Exception:
                log.exception("checking an event client failed")

    async def stop(self) -> None:
        self._ticker.stop()
        self.hub.close_all()
        await self.stats.stop()
        await self.watcher.stop()

    def health(self) -> dict[str, Any]:
        return {"watch": self.watcher.health(), "stats": self.stats.health(), "events": self.hub.stats()}


class EventsSocket(ApiWebSocket):
    """One client's stream of events; its messages narrow the stream or ping."""

    subscription: Subscription | None = None
    written = 0  # events written to the socket
    written_chars = 0  # their size (characters of JSON)
    confirmed = 0  # of those, how many the client has read (its pongs say)
    confirmed_chars = 0

    @property
    def ping_interval(self) -> float:
        return 0  # Tornado's pings are off: this socket sends its own, which also confirm what was read

    def prepare(self) -> Awaitable[None] | None:
        super().prepare()
        hub = self.ctx.hub
        topics_text = self.query("topics")
        try:
            self.topics = hub.check_topics(None if topics_text is None else _split_topics(topics_text))
        except ValueError as exc:
            raise ApiError(400, "unknown_topic", str(exc), parameter="topics") from None
        after_text = self.query("after")
        self.after: int | None = None
        if after_text is not None:
            if not re.fullmatch(r"[0-9]{1,20}", after_text):
                raise ApiError(
                    400, "invalid_parameter", "Query parameter 'after' must be a seq (0 or more)", parameter="after"
                )
            self.after = int(after_text)
        return None

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        super().open(*args, **kwargs)
        hub = self.ctx.hub
        self.subscription = hub.subscribe(self.topics, after=self.after)
        self.probe_every = WINDOW // 4
        self._closing: Any = None  # the connection, once cut off with 1013 (see _cut_off)
        # Pings awaiting their pong: (number, events written and their size before it, when it went out).
        self.probes: collections.deque[tuple[int, int, int, float]] = collections.deque()
        self.probe_count = 0
        self.probed_mark = 0  # ``written`` when the last ping went out
        self.last_probe_at = time.monotonic()
        self._confirmation: asyncio.Future[None] | None = None
        live = self.ctx.live_events
        hello: dict[str, Any] = {"type": "hello", "seq": hub.last_seq, "topics": _topic_list(self.topics)}
        if live is not None:
            hello["watch"] = live.watcher.health()["backend"]
            live.clients.add(self)
        # The one frame written before the pump starts: it comes first, and it is small.
        self.send_message(hello)
        self._pump_task = asyncio.ensure_future(self._pump(self.subscription))
        return None

    async def _pump(self, subscription: Subscription) -> None:
        """Write queued events a batch at a time, awaiting the socket every batch; at most ``WINDOW`` events
        (``WINDOW_BYTES``) are out unconfirmed (then it waits for a pong)."""
        try:
            while True:
                first = await subscription.get()
                future = self.write_message(first.text)
                rest = subscription.get_nowait(WRITE_BATCH - 1)
                for event in rest:
                    future = self.write_message(event.text)
                self.written += 1 + len(rest)
                self.written_chars += len(first.text) + sum(len(event.text) for event in rest)
                if self.written - self.probed_mark >= self.probe_every:
                    self._probe()
                await future
                while self._window_full() and not subscription.closed:
                    self._confirmation = asyncio.get_running_loop().create_future()
                    await self._confirmation
                if subscription.closed:
                    return
        except (SubscriptionClosed, tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass
        except Exception:
            log.exception("sending events failed")
            self.close(1011, "internal error")

    # -- what the client has read: pings out, pongs back ------------------------------------------

    def _window_full(self) -> bool:
        return self.written - self.confirmed >= WINDOW or self.written_chars - self.confirmed_chars >= WINDOW_BYTES

    def _probe(self) -> None:
        """A ping whose pong confirms every event written before it."""
        if len(self.probes) >= MAX_PROBES:
            return
        self.probe_count += 1
        now = time.monotonic()
        try:
            self.ping(b"%d" % self.probe_count)
        except tornado.websocket.WebSocketClosedError:
            return
        self.probes.append((self.probe_count, self.written, self.written_chars, now))
        self.probed_mark = self.written
        self.last_probe_at = now

    def on_pong(self, data: bytes) -> None:
        if not data.isdigit() or len(data) > 18:
            return  # not one of our pings
        number = int(data)
        answered = None
        while self.probes and self.probes[0][0] <= number:
            answered = self.probes.popleft()
        if self._closing is not None:
            self._hold_open()  # cut off, but still reading its way to the close frame
        if answered is not None and answered[1] > self.confirmed:
            self.confirmed, self.confirmed_chars = answered[1], answered[2]
            self._wake_pump()

    def _wake_pump(self) -> None:
        if self._confirmation is not None and not self._confirmation.done():
            self._confirmation.set_result(None)

    def tick(self, now: float) -> None:
        """Every ``TICK_S``: cut off a client that answers no ping; ping where events went out unconfirmed."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        if self.probes and now - self.probes[0][3] > PROBE_TIMEOUT_S:
            self._stalled()
        elif self.written > self.probed_mark or now - self.last_probe_at >= KEEPALIVE_S:
            self._probe()

    def _stalled(self) -> None:
        if self.subscription is not None:
            self.subscription.stall()
        self._cut_off(f"not reading: no answer to a ping for {PROBE_TIMEOUT_S:.0f} s; reconnect")

    def _cut_off(self, reason: str) -> None:
        """Close with 1013 and keep the connection while the client reads its way to the close frame.

        Tornado drops a connection 5 s after its close frame; a slow client may still have up to ``WINDOW``
        events to read before it, and a connection dropped under it refuses its pongs and loses the code.
        So the drop waits ``CLOSE_WAIT_S`` from the last pong instead (the pings sent before the close
        frame are answered as the client reads).
        """
        self._closing = self.ws_connection  # the handler forgets it on close
        self.close(CLOSE_TRY_AGAIN_LATER, reason)
        self._hold_open()

    def _hold_open(self) -> None:
        conn = self._closing
        waiting = getattr(conn, "_waiting", None)  # Tornado's timer that drops the connection
        stream = getattr(conn, "stream", None)
        abort = getattr(conn, "_abort", None)
        if waiting is None or stream is None or abort is None:
            return
        stream.io_loop.remove_timeout(waiting)
        setattr(conn, "_waiting", stream.io_loop.add_timeout(stream.io_loop.time() + CLOSE_WAIT_S, abort))  # noqa: B010

    def on_message(self, message: str | bytes) -> None:
        subscription = self.subscription
        if subscription is None:
            return
        reply = self._answer(message, subscription)
        if reply is not None:
            subscription.put_direct(reply)

    def _answer(self, message: str | bytes, subscription: Subscription) -> dict[str, Any] | None:
        if isinstance(message, bytes):
            return _error("invalid_message", "Messages are JSON text frames, not binary")
        try:
            data = loads_client_json(message)
        except ValueError as exc:
            return _error("invalid_json", f"The message is not valid JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return _error("invalid_message", 'A message is a JSON object with a "type"')
        kind = data["type"]
        if kind == "subscribe":
            topics = data.get("topics")
            if topics == "*":
                topics = ["*"]
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                return _error("invalid_message", '"topics" must be a list of topic names (or "*")', received=kind)
            try:
                subscription.set_topics(topics)
            except ValueError as exc:
                return _error("unknown_topic", str(exc), received=kind)
            return {"type": "subscribed", "topics": _topic_list(subscription.topics)}
        if kind == "ping":
            reply: dict[str, Any] = {"type": "pong"}
            if "id" in data:
                reply["id"] = data["id"]
            return reply
        return _error(
            "unknown_message_type",
            f"Unknown message type {kind[:64]!r}; this socket understands 'subscribe' and 'ping'",
            received=kind[:64],
        )

    def on_close(self) -> None:
        super().on_close()
        live = self.ctx.live_events
        if live is not None:
            live.clients.discard(self)
        if self.subscription is not None:
            self.subscription.close()
            self._wake_pump()


def _split_topics(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _topic_list(topics: frozenset[str] | None) -> list[str]:
    return ["*"] if topics is None else sorted(topics)


def _error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "details": details}


async def startup(ctx: Context) -> None:
    ctx.live_events = LiveEvents(ctx)
    await ctx.live_events.start()
    ctx.health_providers.append(ctx.live_events.health)


async def shutdown(ctx: Context) -> None:
    if ctx.live_events is not None:
        await ctx.live_events.stop()


handlers = [route("/api/v1/ws", EventsSocket)]

_TOPIC = "(?:" + "|".join([*TOPICS, r"\*"]) + ")"
_TOPICS_PATTERN = f"^(?:{_TOPIC}(?:,{_TOPIC})*)?$"
_EVENT_SEQ = {"type": "integer", "minimum": 0, "description": "the hub's sequence number"}

openapi = {
    "tags": [{"name": "events", "description": "Live events of the workspace over a WebSocket"}],
    "paths": {
        "/api/v1/ws": {
            "get": websocket_operation(
                "Workspace-wide live events",
                "One JSON object a frame, each with a `seq`: first `hello`, then `file_changed`, "
                "`system_stats`, `resync`, `git_changed`, `agent_session` (`id`, `status`), `script_run`, "
                "`process` events. "
                'Send `{"type": "subscribe", "topics": ["file_changed", ...]}` to narrow the stream '
                '(answered with `subscribed`), `{"type": "ping"}` for a `pong`; anything else is '
                "answered with an `error` event. The server pings every 1024 events and every 20 s, and sends at "
                "most 4096 events (1 MiB) that no pong confirmed. A client whose queue of 4096 events fills "
                'gets `{"type": "resync", "reason": "overflow"}` in place of what was queued (reload what you '
                "show) and goes on; one that answers no ping for 20 s is closed with code 1013 (both counted in "
                "`/health` `events`): reconnect with `?after=<last seq seen>` to get what it missed "
                "(or a `resync` when that is no longer kept, or is more than the queue holds). "
                "See the `*Event` schemas.",
                ["events"],
                [
                    query_param(
                        "topics",
                        {"type": "string", "pattern": _TOPICS_PATTERN, "examples": ["file_changed,git_changed"]},
                        f"comma-separated topics to receive from the start (default: all): {', '.join(TOPICS)}",
                    ),
                    query_param(
                        "after",
                        {"type": "integer", "minimum": 0},
                        "resume after this seq: the kept events since then come first, or a `resync` when "
                        "they are no longer kept (or the seq is from an earlier run), or instead of them when "
                        "they are more than the client's queue of 4096 holds",
                    ),
                ],
            )
        }
    },
    "schemas": {
        "FileChangedEvent": {
            "type": "object",
            "required": ["type", "path", "event_type", "seq"],
            "properties": {
                "type": {"const": "file_changed"},
                "path": {"type": "string", "description": "workspace-relative POSIX path"},
                "event_type": {"enum": ["created", "modified", "deleted"]},
                "is_dir": {"type": "boolean"},
                "seq": _EVENT_SEQ,
            },
        },
        "SystemStatsEvent": {
            "type": "object",
            "required": ["type", "stats", "seq"],
            "properties": {
                "type": {"const": "system_stats"},
                "stats": {
                    "type": "object",
                    "required": ["cpu_percent", "memory_percent", "disk_percent"],
                    "properties": {
                        "cpu_percent": {"type": "number", "minimum": 0, "maximum": 100},
                        "memory_percent": {"type": "number", "minimum": 0, "maximum": 100},
                        "disk_percent": {"type": "number", "minimum": 0, "maximum": 100},
                    },
                },
                "seq": _EVENT_SEQ,
            },
        },
        "ResyncEvent": {
            "type": "object",
            "required": ["type", "seq"],
            "description": "Events were lost: reload what you show. Sent whatever the topics. `overflow`: "
            "this client fell 4096 events behind (or asked to replay more than that); `history`: what it asked "
            "to replay is no longer kept; the others come from the file watcher.",
            "properties": {
                "type": {"const": "resync"},
                "reason": {"enum": ["overflow", "watch_limit", "too_many_changes", "workspace_gone", "history"]},
                "seq": _EVENT_SEQ,
            },
        },
        "GitChangedEvent": {
            "type": "object",
            "required": ["type", "seq"],
            "description": "HEAD, the index or a ref changed.",
            "properties": {"type": {"const": "git_changed"}, "seq": _EVENT_SEQ},
        },
        "HelloEvent": {
            "type": "object",
            "required": ["type", "seq", "topics"],
            "description": "The first frame: the last seq published so far and the topics in effect.",
            "properties": {
                "type": {"const": "hello"},
                "seq": _EVENT_SEQ,
                "topics": {"type": "array", "items": {"type": "string"}},
                "watch": {"enum": ["inotify", "poll", "inotify+poll", "off"]},
            },
        },
        "EventErrorEvent": {
            "type": "object",
            "required": ["type", "code", "message", "seq"],
            "description": "The answer to a client message that was malformed or unknown; the socket stays open.",
            "properties": {
                "type": {"const": "error"},
                "code": {"enum": ["invalid_json", "invalid_message", "unknown_topic", "unknown_message_type"]},
                "message": {"type": "string"},
                "details": {"type": "object"},
                "seq": _EVENT_SEQ,
            },
        },
        "SubscribedEvent": {
            "type": "object",
            "required": ["type", "topics"],
            "description": "The answer to a `subscribe` message: the topics in effect now.",
            "properties": {"type": {"const": "subscribed"}, "topics": {"type": "array", "items": {"type": "string"}}},
        },
        "PongEvent": {
            "type": "object",
            "required": ["type"],
            "description": 'The answer to `{"type": "ping"}`.',
            "properties": {"type": {"const": "pong"}},
        },
        "EventFrame": {
            "description": "Any frame of `WS /api/v1/ws`, told apart by `type`",
            "oneOf": [
                {"$ref": f"#/components/schemas/{name}"}
                for name in (
                    "HelloEvent",
                    "FileChangedEvent",
                    "SystemStatsEvent",
                    "ResyncEvent",
                    "GitChangedEvent",
                    "GitProgressEvent",
                    "AgentSessionEvent",
                    "ScriptRunEvent",
                    "ProcessEvent",
                    "SubscribedEvent",
                    "PongEvent",
                    "EventErrorEvent",
                )
            ],
        },
        "SubscribeMessage": {
            "type": "object",
            "required": ["type", "topics"],
            "description": 'Sent by a client; answered with `{"type": "subscribed", "topics": [...]}`.',
            "properties": {
                "type": {"const": "subscribe"},
                "topics": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}
