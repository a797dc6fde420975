"""A scripted mock model server for driving the real Codex, Gemini, Qwen Code and opencode CLIs offline.

It speaks, as SSE, the three APIs those CLIs use (OTHER-AGENTS.md):
OpenAI Responses (``POST /v1/responses``: codex), OpenAI Chat Completions
(``POST /v1/chat/completions``: qwen, opencode) and Gemini
(``POST /v1beta/models/<m>:streamGenerateContent``: gemini)::

    mock = MockModels().start()
    mock.script("tool", reply("Running it.", command="echo hi"), reply("It said hi."))
    # a prompt containing "scn:tool" now gets those replies

As in tests/mock_anthropic.py, a request's scenario is the last ``scn:<key>``
marker in its user messages; its step is the number of tool results after
that message (a tool round trip advances it); past the last step the last
reply repeats. A request that offers no tools (titles, classifiers) gets a
short text. Scripted ``command=`` lines become a call of whatever shell tool
the CLI offered (``exec_command``, ``run_shell_command``, ``bash`` …), with
arguments shaped after its schema.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import threading
import time
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

_MARKER = re.compile(r"scn:([A-Za-z0-9_-]+)")
SHELL_NAMES = ("exec_command", "run_shell_command", "bash", "shell_command", "shell", "Bash")
USAGE = {"input": 100, "output": 20}


def reply(
    text: str = "",
    thinking: str = "",
    command: str | None = None,
    delay: float = 0.0,
    call: tuple[str, dict[str, Any]] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """One model response: optional thinking, a text, and optionally one tool call: a shell tool running
    ``command``, or ``call`` = (tool name, arguments) as the CLI names it (an MCP tool: ``mcp_ping_ping``);
    ``namespace`` is the Responses API's tool namespace (Codex offers MCP tools as namespace ``mcp__<server>``)."""
    return {
        "text": text,
        "thinking": thinking,
        "command": command,
        "delay": delay,
        "call": call,
        "namespace": namespace,
    }


def api_error(status: int, message: str = "mock failure", retry_after_ms: int | None = None) -> dict[str, Any]:
    """An HTTP error answer with ``message`` in the API's own error shape; ``retry_after_ms`` adds the
    ``retry-after-ms``/``retry-after`` headers real APIs send, which clients' retry loops honour."""
    return {"status": status, "message": message, "retry_after_ms": retry_after_ms}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(c.get("text")) for c in content if isinstance(c, dict))
    return ""


def _shell_args(name: str, schema: Any, command: str) -> dict[str, Any]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    props = props if isinstance(props, dict) else {}
    if name == "exec_command" or "cmd" in props:
        return {"cmd": command}
    kind = props.get("command", {}).get("type") if isinstance(props.get("command"), dict) else None
    args: dict[str, Any] = {"command": ["bash", "-lc", command] if kind == "array" else command}
    if "description" in props:
        args["description"] = "Run the command"
    return args


class MockModels:
    """The mock server, on its own thread and event loop, on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []  # one summary per model request
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="mock-models", daemon=True)
        self._ids = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, key: str, *replies: dict[str, Any]) -> None:
        self.scripts[key] = list(replies)

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids}"

    def start(self) -> MockModels:
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
                (r".*/responses", _ResponsesHandler, {"mock": self}),
                (r".*/chat/completions", _ChatHandler, {"mock": self}),
                (r".*/models/[^/:]+:(?:stream)?[gG]enerateContent", _GeminiHandler, {"mock": self}),
                (r".*/models/[^/:]+:countTokens", _CountHandler),
                (r".*", _AnyHandler),
            ]
        )
        app.settings["log_function"] = lambda handler: None  # the CLIs' retries would flood the test log
        server = tornado.httpserver.HTTPServer(app, decompress_request=True)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.stop()

    def choose(self, api: str, turns: list[tuple[str, str]], tools: list[tuple[Any, Any]]) -> dict[str, Any]:
        """The scripted reply for a request: ``turns`` is its ("user", text) / ("tool", output) history."""
        key, at = None, -1
        for i, (kind, value) in enumerate(turns):
            found = _MARKER.findall(value) if kind == "user" else []
            if found:
                key, at = found[-1], i
        step = sum(1 for kind, _ in turns[at + 1 :] if kind == "tool")
        self.requests.append({"api": api, "key": key, "step": step, "tools": len(tools), "t": time.time()})
        if not tools:
            return reply("Mock title")
        if key is None or key not in self.scripts:
            return reply(f"Hello from the mock ({key or 'no scenario'}).")
        replies = self.scripts[key]
        return replies[min(step, len(replies) - 1)]

    @staticmethod
    def shell_call(chosen: dict[str, Any], tools: list[tuple[Any, Any]]) -> tuple[str, dict[str, Any]] | None:
        if chosen.get("call") is not None:
            name, args = chosen["call"]
            offered = {n for n, _ in tools}
            if chosen.get("namespace"):
                assert chosen["namespace"] in offered, (
                    f"no tool namespace {chosen['namespace']} among {sorted(offered)}"
                )
            else:
                assert name in offered, f"no tool {name} among {sorted(offered)}"
            return name, args
        if chosen.get("command") is None:
            return None
        by_name = dict(tools)
        for name in SHELL_NAMES:
            if name in by_name:
                return name, _shell_args(name, by_name[name], chosen["command"])
        raise AssertionError(f"no shell tool among {sorted(by_name)}")


def _decode_body(request: Any) -> dict[str, Any]:
    raw = request.body
    if request.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class _Base(tornado.web.RequestHandler):
    def initialize(self, mock: MockModels) -> None:
        self.mock = mock

    async def answer(self, chosen: dict[str, Any], error_body: dict[str, Any]) -> bool:
        """Sleep the reply's delay; True when it was an HTTP error (already sent)."""
        if chosen.get("delay"):
            await asyncio.sleep(chosen["delay"])
        if "status" in chosen:
            self.set_status(chosen["status"])
            if chosen.get("retry_after_ms") is not None:
                self.set_header("retry-after-ms", str(chosen["retry_after_ms"]))
                self.set_header("retry-after", str(chosen["retry_after_ms"] // 1000))
            self.finish(error_body)
            return True
        return False

    async def sse(self, events: list[str]) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        try:
            for event in events:
                self.write(event)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return
        self.finish()


def _openai_error(chosen: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"message": chosen.get("message"), "type": "server_error", "param": None, "code": "mock"}}


def _halves(text: str) -> list[str]:
    """A text as the two chunks it streams in (one when it is a single character)."""
    half = len(text) // 2
    return [c for c in (text[:half], text[half:]) if c]


class _ResponsesHandler(_Base):
    """OpenAI Responses API (codex)."""

    async def post(self) -> None:
        body = _decode_body(self.request)
        turns: list[tuple[str, str]] = []
        items = body.get("input")
        for item in items if isinstance(items, list) else [{"role": "user", "content": items}]:
            if not isinstance(item, dict):
                continue
            if item.get("role") == "user":
                turns.append(("user", _text(item.get("content"))))
            elif str(item.get("type", "")).endswith("_call_output"):
                turns.append(("tool", _text(item.get("output"))))
        tools = [(t.get("name"), t.get("parameters")) for t in body.get("tools") or [] if isinstance(t, dict)]
        chosen = self.mock.choose("responses", turns, tools)
        if await self.answer(chosen, _openai_error(chosen)):
            return
        rid = self.mock.next_id("resp")
        events: list[dict[str, Any]] = [{"type": "response.created", "response": {"id": rid, "status": "in_progress"}}]
        output = 0
        if chosen["thinking"]:
            # Streamed as the real API does (added, deltas, done): codex app-server relays the deltas.
            rs, thought = self.mock.next_id("rs"), chosen["thinking"]
            added = {"type": "reasoning", "id": rs, "summary": []}
            events.append({"type": "response.output_item.added", "output_index": output, "item": added})
            at = {"item_id": rs, "output_index": output, "summary_index": 0}
            part = {"type": "summary_text", "text": ""}
            events.append({"type": "response.reasoning_summary_part.added", **at, "part": part})
            for chunk in _halves(thought):
                events.append({"type": "response.reasoning_summary_text.delta", **at, "delta": chunk})
            events.append({"type": "response.reasoning_summary_text.done", **at, "text": thought})
            item = {"type": "reasoning", "id": rs, "summary": [{"type": "summary_text", "text": thought}]}
            events.append({"type": "response.output_item.done", "output_index": output, "item": item})
            output += 1
        if chosen["text"]:
            mid = self.mock.next_id("msg")
            added = {"type": "message", "id": mid, "role": "assistant", "status": "in_progress", "content": []}
            events.append({"type": "response.output_item.added", "output_index": output, "item": added})
            at = {"item_id": mid, "output_index": output, "content_index": 0}
            text_part = {"type": "output_text", "text": "", "annotations": []}
            events.append({"type": "response.content_part.added", **at, "part": text_part})
            for chunk in _halves(chosen["text"]):
                events.append({"type": "response.output_text.delta", **at, "delta": chunk})
            events.append({"type": "response.output_text.done", **at, "text": chosen["text"]})
            message = {
                "type": "message",
                "id": mid,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": chosen["text"], "annotations": []}],
            }
            events.append({"type": "response.output_item.done", "output_index": output, "item": message})
            output += 1
        call = self.mock.shell_call(chosen, tools)
        if call is not None:
            item = {
                "type": "function_call",
                "id": self.mock.next_id("fc"),
                "call_id": self.mock.next_id("call"),
                "name": call[0],
                "arguments": json.dumps(call[1]),
                "status": "completed",
            }
            if chosen.get("namespace"):
                item["namespace"] = chosen["namespace"]
            events.append({"type": "response.output_item.done", "output_index": output, "item": item})
        usage = {
            "input_tokens": USAGE["input"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": USAGE["output"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": USAGE["input"] + USAGE["output"],
        }
        events.append({"type": "response.completed", "response": {"id": rid, "status": "completed", "usage": usage}})
        for n, event in enumerate(events):
            event["sequence_number"] = n
        await self.sse([f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events])


class _ChatHandler(_Base):
    """OpenAI Chat Completions (qwen, opencode)."""

    async def post(self) -> None:
        body = _decode_body(self.request)
        turns: list[tuple[str, str]] = []
        for message in body.get("messages") or []:
            if isinstance(message, dict) and message.get("role") in ("user", "tool"):
                turns.append((message["role"], _text(message.get("content"))))
        tools = [
            ((t.get("function") or {}).get("name"), (t.get("function") or {}).get("parameters"))
            for t in body.get("tools") or []
            if isinstance(t, dict)
        ]
        chosen = self.mock.choose("chat", turns, tools)
        if await self.answer(chosen, _openai_error(chosen)):
            return
        cid = self.mock.next_id("chatcmpl")
        model = body.get("model") or "mock-model"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]}
            return f"data: {json.dumps(data)}\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        if chosen["thinking"]:
            events.append(chunk({"reasoning_content": chosen["thinking"]}))
        if chosen["text"]:
            events.append(chunk({"content": chosen["text"]}))
        call = self.mock.shell_call(chosen, tools)
        if call is not None:
            function = {"name": call[0], "arguments": json.dumps(call[1])}
            events.append(chunk({"tool_calls": [{"index": 0, "id": self.mock.next_id("call"), "function": function}]}))
            events.append(chunk({}, "tool_calls"))
        else:
            events.append(chunk({}, "stop"))
        usage = {"prompt_tokens": USAGE["input"], "completion_tokens": USAGE["output"], "total_tokens": 120}
        done: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model}
        events.append(f"data: {json.dumps({**done, 'choices': [], 'usage': usage})}\n\n")
        events.append("data: [DONE]\n\n")
        await self.sse(events)


class _GeminiHandler(_Base):
    """Gemini generateContent / streamGenerateContent (gemini)."""

    async def post(self) -> None:
        body = _decode_body(self.request)
        turns: list[tuple[str, str]] = []
        for content in body.get("contents") or []:
            for part in content.get("parts") or [] if isinstance(content, dict) else []:
                if not isinstance(part, dict):
                    continue
                if "functionResponse" in part:
                    turns.append(("tool", json.dumps(part["functionResponse"].get("response"))))
                elif content.get("role") == "user" and isinstance(part.get("text"), str):
                    turns.append(("user", part["text"]))
        tools = [
            (f.get("name"), f.get("parametersJsonSchema") or f.get("parameters"))
            for t in body.get("tools") or []
            if isinstance(t, dict)
            for f in t.get("functionDeclarations") or []
            if isinstance(f, dict)
        ]
        config = body.get("generationConfig") or {}
        usage = {"promptTokenCount": USAGE["input"], "candidatesTokenCount": USAGE["output"], "totalTokenCount": 120}
        if config.get("responseMimeType") == "application/json" or config.get("responseJsonSchema"):
            # The CLI's own classifiers (next speaker, routing): a JSON answer that lets the turn end.
            answer = {"reasoning": "mock", "next_speaker": "user", "model_choice": "flash", "complexity_score": 1}
            parts_list: list[list[dict[str, Any]]] = [[{"text": json.dumps(answer)}]]
        else:
            chosen = self.mock.choose("gemini", turns, tools)
            error = {"error": {"code": chosen.get("status"), "message": chosen.get("message"), "status": "INTERNAL"}}
            if await self.answer(chosen, error):
                return
            parts_list = []
            if chosen["thinking"]:
                parts_list.append([{"text": chosen["thinking"], "thought": True}])
            if chosen["text"]:
                parts_list.append([{"text": chosen["text"]}])
            call = self.mock.shell_call(chosen, tools)
            if call is not None:
                parts_list.append([{"functionCall": {"name": call[0], "args": call[1]}}])
        chunks = []
        for n, parts in enumerate(parts_list):
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if n == len(parts_list) - 1:
                candidate["finishReason"] = "STOP"
            chunks.append({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "mock-model"})
        if ":streamGenerateContent" not in self.request.path:
            merged = [p for parts in parts_list for p in parts]
            candidate = {"content": {"role": "model", "parts": merged}, "finishReason": "STOP", "index": 0}
            self.finish({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "mock-model"})
            return
        await self.sse([f"data: {json.dumps(c)}\r\n\r\n" for c in chunks])


class _CountHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.finish({"totalTokens": 42})


class _AnyHandler(tornado.web.RequestHandler):
    def head(self) -> None:
        self.finish()

    def get(self) -> None:
        if self.request.path.endswith("/models"):
            model = {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}
            self.finish({"object": "list", "data": [model], "models": [{"name": "models/mock-model"}]})
            return
        self.finish({})

    def post(self) -> None:
        self.set_status(404)
        self.finish({"error": {"message": f"mock: no route for {self.request.path}"}})


def write_homes(home: str, url: str) -> dict[str, str]:
    """Each CLI's config files (from tests/fixtures/<cli>/_config) in ``home``, pointed at ``url``; its env."""
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    files = {
        "codex/_config/config.toml": ".codex/config.toml",
        "gemini-cli/_config/settings.json": ".gemini/settings.json",
        "qwen-code/_config/settings.json": ".qwen/settings.json",
        "opencode/_config/opencode.json": ".config/opencode/opencode.json",
    }
    port = url.rsplit(":", 1)[1]
    for source, target in files.items():
        with open(os.path.join(fixtures, source), encoding="utf-8") as f:
            text = f.read().replace("<port>", port)
        if source.startswith("gemini-cli/"):
            settings = json.loads(text)
            settings["general"]["maxAttempts"] = 1  # one request per turn: an API error fails at once
            text = json.dumps(settings)
        path = os.path.join(home, target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    os.makedirs(os.path.join(home, "tmp"), exist_ok=True)
    return {
        "HOME": home,
        "TMPDIR": os.path.join(home, "tmp"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_STATE_HOME": os.path.join(home, ".local", "state"),
        "CODEX_HOME": os.path.join(home, ".codex"),
        "MOCK_API_KEY": "sk-mock",
        "GEMINI_API_KEY": "mock-key",
        "GOOGLE_GEMINI_BASE_URL": url,
        "OPENAI_API_KEY": "sk-mock",
        "OPENAI_BASE_URL": url + "/v1",
        "OPENAI_MODEL": "mock-model",
        "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
