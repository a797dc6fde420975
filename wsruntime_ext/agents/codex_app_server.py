"""The ``codex app-server`` client (AGENT-PROTOCOLS.md §4, §5): Codex long-lived, one thread, a turn per message.

Codex's JSON-RPC over stdio (no ``jsonrpc`` field needed): ``initialize`` and
the ``initialized`` notification, ``thread/start`` (or ``thread/resume``),
then ``turn/start`` per user message; ``turn/interrupt`` ends a turn but leaves
the approved command running, so the runtime stops it (``kills_tools_on_interrupt``).
Approvals arrive as the server requests ``item/commandExecution/requestApproval``
and ``item/fileChange/requestApproval`` and are answered ``{"decision"}``.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from wsruntime_ext.agents.adapter import ProtocolDriver, SessionOptions

METHOD_NOT_FOUND = -32601
APPROVALS = ("item/commandExecution/requestApproval", "item/fileChange/requestApproval")


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class CodexAppServerDriver(ProtocolDriver):
    """One Codex thread: the handshake, one turn at a time (follow-ups queue), notifications → messages."""

    kills_tools_on_interrupt = True  # turn/interrupt leaves the approved command running

    def __init__(self, binary: str, options: SessionOptions) -> None:
        super().__init__()
        self.binary = binary
        self.options = options
        self.agent_session_id: str | None = None
        self._ids = 0
        self._pending: dict[int, str] = {}
        self._ready = False
        self._queue: collections.deque[str] = collections.deque()
        self._turn_request: int | None = None  # the turn/start in flight, until its turn completes
        self._turn_id: str | None = None
        self._turn_open = False
        self._cancelled = False
        self._blocks: dict[str, int] = {}  # item id → its block number in this turn
        self._last_text = ""
        self._usage: dict[str, Any] | None = None
        self._error = ""  # the error notification's message, used if turn/completed carries none
        self._items: dict[str, dict[str, Any]] = {}  # tool items shown (tool_use), by item id
        self._approvals: dict[str, Any] = {}  # our request_id → the server request's id

    def command(self) -> list[str]:
        argv = [self.binary, "app-server"]
        if self.options.model:
            argv += ["-c", f"model={json.dumps(self.options.model)}"]
        return argv

    # -- what the session writes -----------------------------------------------------

    def _request(self, method: str, params: dict[str, Any]) -> int:
        self._ids += 1
        self._pending[self._ids] = method
        self.outbox.append(_line({"id": self._ids, "method": method, "params": params}))
        return self._ids

    def start(self) -> None:
        self._request("initialize", {"clientInfo": {"name": "wsruntime", "version": "1"}})

    def _thread_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "cwd": self.options.cwd,
            # Every command that is not known safe asks the host; without prompts nothing asks.
            "approvalPolicy": "untrusted" if self.options.permission_prompts else "never",
        }
        if self.options.permission_mode:
            params["sandbox"] = self.options.permission_mode
        return params

    def user(self, content: str) -> None:
        self._queue.append(content)
        self._send_next()

    def _send_next(self) -> None:
        if not self._ready or self._turn_open or not self._queue:
            return
        content = self._queue.popleft()
        self._turn_open = True
        self._cancelled = False
        self._turn_id = None
        self._blocks = {}
        self._last_text = ""
        self._error = ""
        self._turn_request = self._request(
            "turn/start", {"threadId": self.agent_session_id, "input": [{"type": "text", "text": content}]}
        )

    def interrupt(self) -> bool:
        if not self._turn_open or self.agent_session_id is None:
            return True  # no turn runs: nothing to stop
        if self._cancelled:
            return True
        self._cancelled = True
        for rpc_id in self._approvals.values():
            self.outbox.append(_line({"id": rpc_id, "result": {"decision": "cancel"}}))
        self._approvals.clear()
        if self._turn_id is not None:
            self._request("turn/interrupt", {"threadId": self.agent_session_id, "turnId": self._turn_id})
        return True

    def permission(self, request_id: str, allow: bool) -> bool:
        rpc_id = self._approvals.pop(request_id, None)
        if rpc_id is None:
            return False
        self.outbox.append(_line({"id": rpc_id, "result": {"decision": "accept" if allow else "decline"}}))
        return True

    # -- what the agent says ---------------------------------------------------------

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        method = line.get("method")
        found = line.get("params")
        params: dict[str, Any] = found if isinstance(found, dict) else {}
        if isinstance(method, str):
            if "id" in line:
                return self._server_request(line["id"], method, params)
            return self._notification(method, params)
        rid = line.get("id")
        if type(rid) is int and rid in self._pending:
            return self._response(rid, self._pending.pop(rid), line.get("result"), line.get("error"))
        return []

    def _response(self, rid: int, method: str, result: Any, error: Any) -> list[dict[str, Any]]:
        if method == "initialize":
            if error is not None:
                return self._fail(error, "codex refused to start")
            self.outbox.append(_line({"method": "initialized"}))
            if self.options.resume_agent_session_id:
                self.agent_session_id = self.options.resume_agent_session_id
                self._request("thread/resume", {"threadId": self.agent_session_id, **self._thread_params()})
            else:
                self._request("thread/start", self._thread_params())
            return []
        if method in ("thread/start", "thread/resume"):
            thread = result.get("thread") if isinstance(result, dict) else None
            if error is not None or not isinstance(thread, dict):
                return self._fail(error, "codex could not open the thread")
            if isinstance(thread.get("id"), str):
                self.agent_session_id = thread["id"]
            self._ready = True
            self._send_next()
            return []
        if method == "turn/start":
            if error is not None:
                self._turn_open = False
                out = [{"type": "error", "error": _error_message(error) or "codex refused the turn"}]
                self._send_next()
                return out
            turn = result.get("turn") if isinstance(result, dict) else None
            if isinstance(turn, dict) and isinstance(turn.get("id"), str):
                self._turn_id = turn["id"]
                if self._cancelled:  # interrupted before codex said the turn's id
                    self._request("turn/interrupt", {"threadId": self.agent_session_id, "turnId": self._turn_id})
        return []

    def _fail(self, error: Any, fallback: str) -> list[dict[str, Any]]:
        self._queue.clear()
        self.fatal = True
        return [{"type": "error", "error": _error_message(error) or fallback}]

    def _server_request(self, rpc_id: Any, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if method not in APPROVALS:
            self.outbox.append(
                _line({"id": rpc_id, "error": {"code": METHOD_NOT_FOUND, "message": f"Method not found: {method}"}})
            )
            return []
        item_id = _text(params.get("itemId"))
        request_id = f"codex-{rpc_id}"
        self._approvals[request_id] = rpc_id
        if not self.options.permission_prompts:
            self.permission(request_id, False)
            return []
        item = self._items.get(item_id, {})
        message: dict[str, Any] = {
            "type": "permission_request",
            "request_id": request_id,
            "tool": item.get("tool") or ("shell" if "commandExecution" in method else "apply_patch"),
            "input": item.get("input") or {"command": _text(params.get("command"))},
            "tool_use_id": item_id,
        }
        reason = params.get("reason")
        if isinstance(reason, str) and reason:
            message["description"] = reason
        return [message]

    def _notification(self, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if method == "item/agentMessage/delta":
            return self._delta("text_delta", params)
        if method == "item/reasoning/summaryTextDelta":
            return self._delta("thinking_delta", params)
        if method in ("item/started", "item/completed"):
            item = params.get("item")
            return self._item(item, method == "item/completed") if isinstance(item, dict) else []
        if method == "thread/tokenUsage/updated":
            usage = params.get("tokenUsage")
            if isinstance(usage, dict):
                self._usage = usage
            return []
        if method == "error":
            error = params.get("error")
            self._error = _text(error.get("message")) if isinstance(error, dict) else ""
            return []
        if method == "turn/completed":
            turn = params.get("turn")
            return self._turn_completed(turn if isinstance(turn, dict) else {})
        return []  # warning, thread/status/changed, rate limits, serverRequest/resolved …

    def _delta(self, kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        delta = params.get("delta")
        item_id = _text(params.get("itemId"))
        if not isinstance(delta, str) or not delta:
            return []
        block = self._blocks.setdefault(item_id, len(self._blocks))
        return [{"type": kind, "content": delta, "block": block}]

    def _item(self, item: dict[str, Any], completed: bool) -> list[dict[str, Any]]:
        itype = item.get("type")
        item_id = _text(item.get("id"))
        if itype == "agentMessage" and completed:
            self._last_text = _text(item.get("text"))
            return [{"type": "text", "content": self._last_text}]
        if itype == "reasoning" and completed:
            summary = item.get("summary")
            text = "\n".join(s for s in summary if isinstance(s, str)) if isinstance(summary, list) else ""
            return [{"type": "thinking", "content": text}] if text else []
        if itype not in ("commandExecution", "fileChange"):
            return []
        out: list[dict[str, Any]] = []
        if item_id not in self._items:
            tool_input: dict[str, Any]
            if itype == "commandExecution":
                tool, tool_input = "shell", {"command": _text(item.get("command"))}
            else:
                tool, tool_input = "apply_patch", {"changes": item.get("changes") or []}
            self._items[item_id] = {"tool": tool, "input": tool_input, "done": False}
            out.append({"type": "tool_use", "tool": tool, "input": tool_input, "tool_use_id": item_id})
        shown = self._items[item_id]
        if completed and not shown["done"]:
            shown["done"] = True
            status = item.get("status")
            code = item.get("exitCode")
            failed = status != "completed" or (isinstance(code, int) and code != 0)
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool": shown["tool"],
                "output": _text(item.get("aggregatedOutput")),
                "tool_use_id": item_id,
                "is_error": failed,
            }
            if failed:
                result["error"] = str(status) + (f" (exit code {code})" if isinstance(code, int) else "")
            out.append(result)
        return out

    def _turn_completed(self, turn: dict[str, Any]) -> list[dict[str, Any]]:
        if not self._turn_open:
            return []
        self._turn_open = False
        self._turn_request = None
        self._approvals.clear()
        status = turn.get("status")
        out: list[dict[str, Any]] = []
        if status == "interrupted" or self._cancelled:
            # The killed command's item completes later (exit 137): its result belongs to this turn.
            for item_id, shown in self._items.items():
                if not shown["done"]:
                    shown["done"] = True
                    out.append(
                        {
                            "type": "tool_result",
                            "tool": shown["tool"],
                            "output": "",
                            "tool_use_id": item_id,
                            "is_error": True,
                            "error": "interrupted",
                        }
                    )
            out.append({"type": "error", "error": "interrupted"})
        elif status == "failed":
            error = turn.get("error")
            text = _text(error.get("message")) if isinstance(error, dict) else ""
            out.append({"type": "error", "error": text or self._error or "the turn failed"})
        else:
            done: dict[str, Any] = {"type": "done", "content": self._last_text}
            if self._usage is not None:
                done["usage"] = self._usage
            out.append(done)
        self._send_next()
        return out


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return _text(error.get("message"))
    return ""
