"""A scripted mock of the Anthropic Messages API (SSE streaming) for driving the real ``claude`` CLI offline.

Reusable test infrastructure: start it, script replies per scenario key, point
the CLI at ``mock.url`` (``ANTHROPIC_BASE_URL``)::

    mock = MockAnthropic().start()
    mock.script("hello", reply(text("Hi there.")))
    # a prompt containing "scn:hello" now gets that reply

A request's scenario is the last ``scn:<key>`` marker in its messages; its
step is the number of assistant messages since the user message holding that
marker (so a tool round trip advances it). Past the last step, the last reply
repeats. Unscripted requests get a plain text answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

_MARKER = re.compile(r"scn:([A-Za-z0-9_-]+)")


def text(value: str, chunks: int = 1, chunk_delay: float = 0.0) -> dict[str, Any]:
    """A text block, streamed in ``chunks`` deltas ``chunk_delay`` seconds apart."""
    return {"type": "text", "text": value, "chunks": chunks, "chunk_delay": chunk_delay}


def thinking(value: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": value}


def tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "name": name, "input": tool_input}


def reply(*blocks: dict[str, Any], delay: float = 0.0) -> dict[str, Any]:
    """One API response: its content blocks, after ``delay`` seconds."""
    return {"blocks": list(blocks), "delay": delay}


def api_error(status: int, kind: str = "api_error", message: str = "mock failure") -> dict[str, Any]:
    """An HTTP error answer (401 authentication_error, 500 api_error, 529 overloaded_error …)."""
    return {"status": status, "error": {"type": "error", "error": {"type": kind, "message": message}}}


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class MockAnthropic:
    """The mock server, on its own thread and event loop, on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []  # every POST /v1/messages body summary
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="mock-anthropic", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, home: str) -> dict[str, str]:
        """The environment that points the CLI at this mock, with a fresh ``home``."""
        return {
            "HOME": home,
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }

    def script(self, key: str, *replies: dict[str, Any]) -> None:
        self.scripts[key] = list(replies)

    def start(self) -> MockAnthropic:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("mock did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = tornado.web.Application(
            [
                (r"/v1/messages/count_tokens", _CountHandler),
                (r"/v1/messages", _MessagesHandler, {"mock": self}),
                (r".*", _AnyHandler),
            ]
        )
        server = tornado.httpserver.HTTPServer(app)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.stop()

    def choose(self, body: dict[str, Any]) -> tuple[str | None, int, dict[str, Any] | None]:
        """(scenario key, step, scripted reply) for a request body."""
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        key, at = None, -1
        for i, message in enumerate(messages):
            if message.get("role") == "user":
                found = _MARKER.findall(_text_of(message))
                if found:
                    key, at = found[-1], i
        if key is None or key not in self.scripts:
            return key, 0, None
        step = sum(1 for m in messages[at + 1 :] if m.get("role") == "assistant")
        replies = self.scripts[key]
        return key, step, replies[min(step, len(replies) - 1)]


class _AnyHandler(tornado.web.RequestHandler):
    def head(self) -> None:
        self.finish()

    def get(self) -> None:
        self.finish({})


class _CountHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.finish({"input_tokens": 10})


class _MessagesHandler(tornado.web.RequestHandler):
    def initialize(self, mock: MockAnthropic) -> None:
        self.mock = mock

    async def post(self) -> None:
        try:
            body = json.loads(self.request.body)
        except ValueError:
            body = {}
        key, step, chosen = self.mock.choose(body)
        self.mock.requests.append(
            {
                "key": key,
                "step": step,
                "stream": bool(body.get("stream")),
                "model": body.get("model"),
                "messages": len(body.get("messages") or []),
            }
        )
        if chosen is None:
            chosen = reply(text(f"Hello from the mock ({key or 'no scenario'})."))
        if chosen.get("delay"):
            await asyncio.sleep(chosen["delay"])
        if "status" in chosen:
            self.set_status(chosen["status"])
            self.finish(chosen["error"])
            return
        msg_id = f"msg_mock_{len(self.mock.requests)}"
        blocks = [dict(b) for b in chosen["blocks"]]
        for n, block in enumerate(blocks):
            if block["type"] == "tool_use":
                block.setdefault("id", f"toolu_{key}_{step}_{n}")
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        model = body.get("model") or "claude-mock"
        if not body.get("stream"):
            content = [_final_block(b) for b in blocks]
            self.finish(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 5},
                }
            )
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        usage = {"input_tokens": 5, "output_tokens": 1}
        try:
            await self._event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": usage,
                    },
                },
            )
            for i, block in enumerate(blocks):
                await self._block(i, block)
            await self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 10},
                },
            )
            await self._event("message_stop", {"type": "message_stop"})
        except tornado.iostream.StreamClosedError:
            return
        self.finish()

    async def _event(self, name: str, data: dict[str, Any]) -> None:
        self.write(f"event: {name}\ndata: {json.dumps(data)}\n\n")
        await self.flush()

    async def _block(self, index: int, block: dict[str, Any]) -> None:
        kind = block["type"]
        if kind == "text":
            await self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            value, chunks = block["text"], max(1, block.get("chunks", 1))
            size = -(-len(value) // chunks) or 1
            for start in range(0, max(len(value), 1), size):
                if block.get("chunk_delay") and start:
                    await asyncio.sleep(block["chunk_delay"])
                await self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": value[start : start + size]},
                    },
                )
        elif kind == "thinking":
            await self._event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            await self._event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                },
            )
            await self._event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": "sig"},
                },
            )
        else:
            await self._event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                },
            )
            await self._event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                },
            )
        await self._event("content_block_stop", {"type": "content_block_stop", "index": index})


def _final_block(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": block["thinking"], "signature": "sig"}
    return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block["input"]}
