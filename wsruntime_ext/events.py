"""``WS /api/v1/ws``: workspace-wide live events (API.md "WebSocket events").

One JSON object a frame, each with a ``seq``: ``file_changed``, ``resync``
and ``git_changed`` from the watcher (watch/), ``system_stats`` from stats.py,
and whatever other modules publish through the hub (``agent_session``,
``script_run``, ``process``, ``git_progress``). A client narrows what it gets with
``{"type": "subscribe", "topics": [...]}`` (or ``?topics=`` on connect),
resumes after a reconnect with ``?after=<last seq>``, and gets an ``error``
event — never a dropped connection — for a message it got wrong. A client
that falls more than a queue's length behind is closed with 1013, so it can
never slow the others.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.iostream
import tornado.websocket

from wsruntime_ext.base import ApiError, log
from wsruntime_ext.hub import TOPICS, Subscription, SubscriptionClosed
from wsruntime_ext.openapi import query_param, route, websocket_operation
from wsruntime_ext.stats import SystemStats
from wsruntime_ext.watch import Watcher
from wsruntime_ext.websocket import ApiWebSocket

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

WRITE_BATCH = 64  # frames written before waiting for the socket to take them
CLOSE_TRY_AGAIN_LATER = 1013


class LiveEvents:
    """The producers of workspace-wide events: the file watcher and the system stats sampler."""

    def __init__(self, ctx: Context) -> None:
        config = ctx.config
        self.hub = ctx.hub
        self.watcher = Watcher(
            ctx.hub, config.workspace, config.state_dir, config.watch, config.watch_ignore, ctx.run_blocking
        )
        self.stats = SystemStats(ctx.hub, config.workspace, config.stats_interval, ctx.run_blocking)

    async def start(self) -> None:
        await self.watcher.start()
        self.stats.start()

    async def stop(self) -> None:
        self.hub.close_all()
        await self.stats.stop()
        await self.watcher.stop()

    def health(self) -> dict[str, Any]:
        return {"watch": self.watcher.health(), "stats": self.stats.health(), "events": self.hub.stats()}


class EventsSocket(ApiWebSocket):
    """One client's stream of events; its messages narrow the stream or ping."""

    subscription: Subscription | None = None

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
        self.subscription = hub.subscribe(self.topics, after=self.after, on_overflow=self._fell_behind)
        live = self.ctx.live_events
        hello: dict[str, Any] = {"type": "hello", "seq": hub.last_seq, "topics": _topic_list(self.topics)}
        if live is not None:
            hello["watch"] = live.watcher.health()["backend"]
        # The one frame written before the pump starts: it comes first, and it is small.
        self.send_message(hello)
        self._pump_task = asyncio.ensure_future(self._pump(self.subscription))
        return None

    async def _pump(self, subscription: Subscription) -> None:
        """Write queued events, awaiting the socket every batch: at most WRITE_BATCH frames are buffered."""
        try:
            while True:
                first = await subscription.get()
                future = self.write_message(first.text)
                for event in subscription.get_nowait(WRITE_BATCH - 1):
                    future = self.write_message(event.text)
                await future
        except (SubscriptionClosed, tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass
        except Exception:
            log.exception("sending events failed")
            self.close(1011, "internal error")

    def _fell_behind(self, subscription: Subscription) -> None:
        self.close(CLOSE_TRY_AGAIN_LATER, f"too slow: more than {subscription.queue_size} events behind; reconnect")

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
            data = json.loads(message)
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
        if self.subscription is not None:
            self.subscription.close()


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
                "answered with an `error` event. A client that falls more than 4096 events behind is "
                "closed with code 1013; reconnect with `?after=<last seq seen>` to get what it missed "
                "(or a `resync` when that is no longer kept). See the `*Event` schemas.",
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
                        "they are no longer kept (or the seq is from an earlier run)",
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
            "description": "Events were lost: reload what you show. Sent whatever the topics.",
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
