"""The Agent Client Protocol client (AGENT-PROTOCOLS.md §2, §5): Gemini CLI, Qwen Code and opencode, long-lived.

One driver per protocol: :class:`AcpDriver` speaks JSON-RPC 2.0 over the
agent's stdio (``initialize``, ``session/new`` or ``session/load``,
``session/prompt`` per turn, ``session/cancel``, ``session/request_permission``)
and maps its ``session/update`` notifications to AgentMessages; each agent's
quirks (its command line, the mode in which it asks, how its tool calls look)
live in its :class:`AcpAgent`. Unknown requests from the agent are answered
with a JSON-RPC error, unknown notifications ignored.
"""

from __future__ import annotations

import collections
import json
from typing import Any, ClassVar

from wsruntime_ext.agents.adapter import ProtocolDriver, SessionOptions

PROTOCOL_VERSION = 1
METHOD_NOT_FOUND = -32601
DENIED = "denied by the user"
THOUGHT_HEADING = "****\n"


def rpc_line(obj: dict[str, Any]) -> bytes:
    return (json.dumps({"jsonrpc": "2.0", **obj}, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class AcpAgent:
    """What differs between the ACP agents: how to start one, and the mode in which it asks the host."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def command(self, options: SessionOptions) -> list[str]:
        raise NotImplementedError

    def environment(self, env: dict[str, str], options: SessionOptions) -> dict[str, str]:
        return env

    def mode(self, options: SessionOptions) -> str | None:
        """The ``session/set_mode`` to send after the session is made, or None."""
        if options.permission_prompts:
            return "default"
        return options.permission_mode

    def can_load(self) -> bool:
        """Whether ``session/load`` resumes a conversation in a new process."""
        return True


class GeminiAcp(AcpAgent):
    MODES: ClassVar[dict[str, str]] = {"auto_edit": "autoEdit"}  # the one-shot --approval-mode names → its ACP modes

    def mode(self, options: SessionOptions) -> str | None:
        mode = super().mode(options)
        return self.MODES.get(mode, mode) if mode is not None else None

    def command(self, options: SessionOptions) -> list[str]:
        argv = [self.binary, "--acp"]
        if options.model:
            argv += ["--model", options.model]
        return argv

    def can_load(self) -> bool:
        return False  # 0.61: session/load fails after a restart ("No previous sessions found")


class QwenAcp(AcpAgent):
    def __init__(self, binary: str, flags: list[str] | None = None) -> None:
        super().__init__(binary)
        self.flags = flags or []  # the options its stream-json mode takes too (model, tools, system prompt …)

    def command(self, options: SessionOptions) -> list[str]:
        return [self.binary, "--acp", *self.flags]


class OpencodeAcp(AcpAgent):
    def command(self, options: SessionOptions) -> list[str]:
        return [self.binary, "acp", "--cwd", options.cwd]

    def environment(self, env: dict[str, str], options: SessionOptions) -> dict[str, str]:
        if options.permission_prompts:
            # opencode asks the host only for what its config says "ask"; this env var is merged into it.
            env = {**env, "OPENCODE_PERMISSION": json.dumps({"bash": "ask", "edit": "ask"})}
        if options.model:
            env = {**env, "OPENCODE_CONFIG_CONTENT": json.dumps({"model": options.model})}
        return env

    def mode(self, options: SessionOptions) -> str | None:
        return None  # its modes are agents (build, plan); permissions come from the config


class AcpDriver(ProtocolDriver):
    """One ACP session: the handshake, one prompt in flight at a time (follow-ups queue), updates → messages."""

    def __init__(self, agent: AcpAgent, options: SessionOptions) -> None:
        super().__init__()
        self.agent = agent
        self.options = options
        self.agent_session_id: str | None = None
        self._ids = 0
        self._pending: dict[int, str] = {}  # our request id → what it was
        self._ready = False
        self._queue: collections.deque[str] = collections.deque()  # prompts waiting for the session or a turn
        self._prompt_id: int | None = None  # the session/prompt in flight
        self._kind: str | None = None  # the block being streamed: "text" or "thinking"
        self._buffer: list[str] = []
        self._block = -1
        self._last_text = ""
        self._tools: dict[str, dict[str, Any]] = {}  # toolCallId → {"name", "input", "shown", "done"}
        self._permissions: dict[str, tuple[Any, list[Any], str]] = {}  # our request_id → (rpc id, options, call)
        self._cancelled = False
        self._loading = False  # session/load replays history as updates: not shown again

    def command(self) -> list[str]:
        return self.agent.command(self.options)

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        return self.agent.environment(env, self.options)

    def can_resume(self) -> bool:
        return self.agent.can_load()

    # -- what the session writes -----------------------------------------------------

    def _request(self, method: str, params: dict[str, Any]) -> None:
        self._ids += 1
        self._pending[self._ids] = method
        self.outbox.append(rpc_line({"id": self._ids, "method": method, "params": params}))

    def start(self) -> None:
        self._request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False},
                "clientInfo": {"name": "wsruntime", "version": "1"},
            },
        )

    def user(self, content: str) -> None:
        """A user message: sent now, or once the session is ready and the running turn has ended."""
        self._queue.append(content)
        self._send_next()

    def _send_next(self) -> None:
        if not self._ready or self._prompt_id is not None or not self._queue:
            return
        content = self._queue.popleft()
        self._cancelled = False
        self._block = -1
        self._last_text = ""
        self._request(
            "session/prompt", {"sessionId": self.agent_session_id, "prompt": [{"type": "text", "text": content}]}
        )
        self._prompt_id = self._ids

    def interrupt(self) -> bool:
        """``session/cancel`` (a notification); pending permission questions are answered ``cancelled``.

        With no turn running there is nothing to stop: it is a no-op (as Claude Code's interrupt is then).
        """
        if self.agent_session_id is None or self._prompt_id is None:
            return True
        self._cancelled = True
        for rpc_id, _, _ in self._permissions.values():
            self.outbox.append(rpc_line({"id": rpc_id, "result": {"outcome": {"outcome": "cancelled"}}}))
        self._permissions.clear()
        self.outbox.append(rpc_line({"method": "session/cancel", "params": {"sessionId": self.agent_session_id}}))
        return True

    def permission(self, request_id: str, allow: bool) -> bool:
        """Answer a ``session/request_permission`` with the option of the right kind (ids differ per agent)."""
        found = self._permissions.pop(request_id, None)
        if found is None:
            return False
        rpc_id, options, call_id = found
        kinds = ("allow_once", "allow_always") if allow else ("reject_once", "reject_always")
        chosen = next(
            (o["optionId"] for k in kinds for o in options if isinstance(o, dict) and o.get("kind") == k),
            None,
        )
        outcome: dict[str, Any] = (
            {"outcome": "selected", "optionId": chosen} if chosen is not None else {"outcome": "cancelled"}
        )
        self.outbox.append(rpc_line({"id": rpc_id, "result": {"outcome": outcome}}))
        if not allow and call_id in self._tools:
            self._tools[call_id]["denied"] = True
        return True

    # -- what the agent says ---------------------------------------------------------

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        method = line.get("method")
        if isinstance(method, str):
            if "id" in line:
                return self._agent_request(line["id"], method, line.get("params"))
            if method == "session/update":
                params = line.get("params")
                update = params.get("update") if isinstance(params, dict) else None
                return self._update(update) if isinstance(update, dict) and not self._loading else []
            return []  # an unknown notification (qwen/notify/…): ignored
        rid = line.get("id")
        if type(rid) is int and rid in self._pending:
            return self._response(rid, self._pending.pop(rid), line)
        return []

    def _response(self, rid: int, method: str, line: dict[str, Any]) -> list[dict[str, Any]]:
        result = line.get("result")
        error = line.get("error")
        if method == "initialize":
            if error is not None:
                return [self._fail(error, "the agent refused to start")]
            params: dict[str, Any] = {"cwd": self.options.cwd, "mcpServers": []}
            if self.options.resume_agent_session_id:
                params["sessionId"] = self.options.resume_agent_session_id
                self.agent_session_id = self.options.resume_agent_session_id
                self._loading = True
                self._request("session/load", params)
            else:
                self._request("session/new", params)
            return []
        if method in ("session/new", "session/load"):
            self._loading = False
            if error is not None:
                return [self._fail(error, "the agent could not open the session")]
            if method == "session/new" and isinstance(result, dict) and isinstance(result.get("sessionId"), str):
                self.agent_session_id = result["sessionId"]
            mode = self.agent.mode(self.options)
            if mode is not None:
                self._request("session/set_mode", {"sessionId": self.agent_session_id, "modeId": mode})
            else:
                self._ready = True
                self._send_next()
            return []
        if method == "session/set_mode":
            if error is not None:
                return [self._fail(error, "the agent refused the mode")]
            self._ready = True
            self._send_next()
            return []
        if method == "session/prompt" and rid == self._prompt_id:
            return self._turn_end(result, error)
        return []

    def _fail(self, error: Any, fallback: str) -> dict[str, Any]:
        """A failed handshake step ends the turn waiting on it (the session cannot go on)."""
        self._queue.clear()
        self.fatal = True  # the session cannot go on: the runtime closes the agent's stdin
        return {"type": "error", "error": error_text(error) or fallback}

    def _turn_end(self, result: Any, error: Any) -> list[dict[str, Any]]:
        out = self._flush()
        out += self._unanswered_tools()
        self._prompt_id = None
        self._permissions.clear()
        if error is not None:
            out.append({"type": "error", "error": error_text(error) or "the agent reported an error"})
        elif self._cancelled or (isinstance(result, dict) and result.get("stopReason") == "cancelled"):
            out.append({"type": "error", "error": "interrupted"})
        else:
            done: dict[str, Any] = {"type": "done", "content": self._last_text}
            usage = result.get("usage") if isinstance(result, dict) else None
            if isinstance(usage, dict):
                done["usage"] = usage
            out.append(done)
        self._send_next()
        return out

    def _unanswered_tools(self) -> list[dict[str, Any]]:
        """A call the agent never reported back (Gemini after a rejection, or a cancel): its result, an error."""
        out = []
        for call_id, tool in self._tools.items():
            if tool["shown"] and not tool["done"]:
                tool["done"] = True
                reason = DENIED if tool.get("denied") else "interrupted"
                out.append(
                    {
                        "type": "tool_result",
                        "tool": tool["name"],
                        "output": "",
                        "tool_use_id": call_id,
                        "is_error": True,
                        "error": reason,
                    }
                )
        return out

    def _agent_request(self, rpc_id: Any, method: str, params: Any) -> list[dict[str, Any]]:
        if method != "session/request_permission" or not isinstance(params, dict):
            # Qwen's craft/drainMidTurnQueue and anything else we do not offer.
            self.outbox.append(
                rpc_line({"id": rpc_id, "error": {"code": METHOD_NOT_FOUND, "message": f"Method not found: {method}"}})
            )
            return []
        found_call = params.get("toolCall")
        call: dict[str, Any] = found_call if isinstance(found_call, dict) else {}
        found_options = params.get("options")
        options: list[Any] = found_options if isinstance(found_options, list) else []
        call_id = str(call.get("toolCallId") or f"call-{rpc_id}")
        out = self._flush()
        out += self._tool_seen(call_id, call, show=True)
        request_id = f"acp-{rpc_id}"
        if not self.options.permission_prompts:
            # Not asked to route questions to the client: the CLI runs in a mode that should not ask; deny.
            self._permissions[request_id] = (rpc_id, options, call_id)
            self.permission(request_id, False)
            return out
        self._permissions[request_id] = (rpc_id, options, call_id)
        tool = self._tools[call_id]
        out.append(
            {
                "type": "permission_request",
                "request_id": request_id,
                "tool": tool["name"],
                "input": tool["input"],
                "tool_use_id": call_id,
                "description": str(call.get("title") or ""),
            }
        )
        return out

    def _update(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        kind = update.get("sessionUpdate")
        if kind in ("agent_message_chunk", "agent_thought_chunk"):
            content = update.get("content")
            text = content.get("text") if isinstance(content, dict) else None
            if not isinstance(text, str) or not text:
                return []  # Qwen ends each response with an empty chunk
            block = "text" if kind == "agent_message_chunk" else "thinking"
            out = self._flush() if self._kind != block else []
            if self._kind is None:
                if block == "thinking" and text.startswith(THOUGHT_HEADING):
                    text = text[len(THOUGHT_HEADING) :]  # Gemini's heading marker before each thought
                    if not text:
                        return out
                self._kind = block
                self._block += 1
            self._buffer.append(text)
            out.append({"type": f"{block}_delta", "content": text, "block": self._block})
            return out
        if kind in ("tool_call", "tool_call_update"):
            call_id = update.get("toolCallId")
            if not isinstance(call_id, str):
                return []
            out = self._flush()
            status = update.get("status")
            out += self._tool_seen(call_id, update, show=status in ("in_progress", "completed", "failed"))
            if status in ("completed", "failed"):
                out += self._tool_done(call_id, update, status == "failed")
            return out
        return []  # available_commands_update, plan, user_message_chunk …

    def _tool_seen(self, call_id: str, call: dict[str, Any], show: bool) -> list[dict[str, Any]]:
        """Merge what is known of a call; show its tool_use once its input is known (the first sight may be empty)."""
        tool = self._tools.setdefault(
            call_id, {"name": "", "input": {}, "title": "", "kind": "", "shown": False, "done": False}
        )
        raw = call.get("rawInput")
        if isinstance(raw, dict) and raw:
            tool["input"] = dict(raw)
        for key in ("title", "kind"):
            if isinstance(call.get(key), str) and call[key]:
                tool[key] = call[key]
        meta = call.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("toolName"), str):
            tool["name"] = meta["toolName"]  # Qwen names its tool (run_shell_command)
        elif not tool["name"] and (tool["kind"] or tool["title"]):
            tool["name"] = tool["kind"] or tool["title"]  # "execute" for a shell call
        if tool["shown"] or not (show or tool["input"].get("command")):
            return []
        tool["shown"] = True
        if not tool["input"] and tool["title"]:
            # Gemini: the title of a shell call is its command, and there is no rawInput.
            tool["input"] = {"command": tool["title"]} if tool["kind"] == "execute" else {"title": tool["title"]}
        return [{"type": "tool_use", "tool": tool["name"] or "tool", "input": tool["input"], "tool_use_id": call_id}]

    def _tool_done(self, call_id: str, update: dict[str, Any], failed: bool) -> list[dict[str, Any]]:
        tool = self._tools[call_id]
        if tool["done"]:
            return []
        tool["done"] = True
        output = tool_output(update)
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool": tool["name"],
            "output": output,
            "tool_use_id": call_id,
            "is_error": failed,
        }
        if failed:
            result["error"] = output or (DENIED if tool.get("denied") else "the tool failed")
        return [result]

    def _flush(self) -> list[dict[str, Any]]:
        """The complete text or thinking block streamed so far, as one frame."""
        if self._kind is None:
            return []
        text = "".join(self._buffer)
        kind = self._kind
        self._kind, self._buffer = None, []
        if kind == "text":
            self._last_text = text
        return [{"type": kind, "content": text}]

    def finish(self, code: int) -> list[dict[str, Any]]:
        return self._flush()


def tool_output(update: dict[str, Any]) -> str:
    """A finished call's output: its text content, else ``rawOutput.output`` (Gemini sends none)."""
    parts = []
    for item in update.get("content") or []:
        if isinstance(item, dict):
            inner = item.get("content")
            if isinstance(inner, dict) and isinstance(inner.get("text"), str):
                parts.append(inner["text"])
    if parts:
        return "\n".join(parts)
    raw = update.get("rawOutput")
    if isinstance(raw, dict) and isinstance(raw.get("output"), str):
        return str(raw["output"])
    return ""


def error_text(error: Any) -> str:
    """A JSON-RPC error's text: ``data.details`` (Qwen), else its message."""
    if not isinstance(error, dict):
        return ""
    data = error.get("data")
    if isinstance(data, dict) and isinstance(data.get("details"), str) and data["details"]:
        return str(data["details"])
    message = error.get("message")
    if not isinstance(message, str):
        return ""
    if message.startswith("{"):
        # Gemini passes the API's error body on as the message: its own message is the readable part.
        try:
            inner = json.loads(message).get("error", {}).get("message")
        except (ValueError, AttributeError):
            inner = None
        if isinstance(inner, str) and inner:
            return inner
    return message
