"""The Claude Code adapter (API.md "Agent sessions"; CLAUDE-CODE.md §2-§5 for the CLI's behaviour).

The CLI runs as ``claude -p --input-format stream-json --output-format
stream-json --verbose``: the prompt and follow-ups go to its stdin as
``user`` lines, an ``interrupt`` control request stops a turn without ending
the process, and with ``--permission-prompt-tool stdio`` it asks the host
through ``can_use_tool`` control requests.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from wsruntime_ext.agents.adapter import OPTION_FIELDS, AgentAdapter, SessionOptions, StreamParser

SYNTHETIC_MODEL = "<synthetic>"


def json_line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def tool_result_text(content: Any) -> str:
    """A tool_result's content as text: a string as it is, a list of blocks as its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


class ClaudeCodeParser(StreamParser):
    """Claude Code's stream-json output → AgentMessages (CLAUDE-CODE.md §3)."""

    def __init__(self) -> None:
        self.agent_session_id: str | None = None
        self.tool_names: dict[str, str] = {}  # tool_use id → tool name, to label results
        self.last_result: dict[str, Any] | None = None

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        kind = line.get("type")
        sid = line.get("session_id")
        if isinstance(sid, str) and sid:
            self.agent_session_id = sid
        if kind == "assistant":
            return self._assistant(line)
        if kind == "user":
            return self._user(line)
        if kind == "result":
            return [self._result(line)]
        if kind == "control_request":
            return self._control_request(line)
        if kind == "stream_event":
            return self._stream_event(line.get("event"))
        if kind == "system" and line.get("subtype") == "init":
            self._init(line)
        # system/*, other stream events, control_response and unknown types carry nothing to show.
        return []

    def _stream_event(self, event: Any) -> list[dict[str, Any]]:
        """A text or thinking chunk (``--include-partial-messages``) → a live ``text_delta``/``thinking_delta``.

        The complete block still comes as its ``assistant`` line; the deltas are only a preview of it.
        """
        if not isinstance(event, dict) or event.get("type") != "content_block_delta":
            return []
        delta = event.get("delta")
        index = event.get("index")
        if not isinstance(delta, dict) or type(index) is not int:
            return []
        dtype = delta.get("type")
        if dtype == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            return [{"type": "text_delta", "content": delta["text"], "block": index}]
        if dtype == "thinking_delta" and isinstance(delta.get("thinking"), str) and delta["thinking"]:
            return [{"type": "thinking_delta", "content": delta["thinking"], "block": index}]
        return []

    def _init(self, line: dict[str, Any]) -> None:
        """The init line names the MCP servers and whether each connected (a server set up wrongly is ``failed``)."""
        servers = line.get("mcp_servers")
        if isinstance(servers, list):
            self.mcp_servers = [
                {"name": str(server.get("name")), "status": str(server.get("status"))}
                for server in servers
                if isinstance(server, dict) and isinstance(server.get("name"), str)
            ]

    def _assistant(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        message = line.get("message")
        if not isinstance(message, dict):
            return []
        # The synthetic message repeats the error that the following result carries.
        if message.get("model") == SYNTHETIC_MODEL or line.get("error"):
            return []
        out: list[dict[str, Any]] = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "thinking":
                out.append({"type": "thinking", "content": str(block.get("thinking", ""))})
            elif btype == "text":
                out.append({"type": "text", "content": str(block.get("text", ""))})
            elif btype == "tool_use":
                name = str(block.get("name", ""))
                tool_id = str(block.get("id", ""))
                self.tool_names[tool_id] = name
                tool_input = block.get("input")
                out.append(
                    {
                        "type": "tool_use",
                        "tool": name,
                        "input": tool_input if isinstance(tool_input, dict) else {},
                        "tool_use_id": tool_id,
                    }
                )
        return out

    def _user(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        if line.get("isReplay"):
            return []
        message = line.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return []
        out: list[dict[str, Any]] = []
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue  # "[Request interrupted by user…]" markers show in the result instead
            tool_id = str(block.get("tool_use_id", ""))
            text = tool_result_text(block.get("content"))
            failed = block.get("is_error") is True
            msg: dict[str, Any] = {
                "type": "tool_result",
                "tool": self.tool_names.get(tool_id, ""),
                "output": text,
                "tool_use_id": tool_id,
                "is_error": failed,
            }
            if failed:
                msg["error"] = text
            out.append(msg)
        return out

    def _result(self, line: dict[str, Any]) -> dict[str, Any]:
        self.last_result = line
        extras: dict[str, Any] = {}
        if isinstance(line.get("usage"), dict):
            extras["usage"] = line["usage"]
        if isinstance(line.get("total_cost_usd"), (int, float)):
            extras["cost_usd"] = line["total_cost_usd"]
        if isinstance(line.get("duration_ms"), (int, float)):
            extras["duration_ms"] = line["duration_ms"]
        # is_error decides: API failures arrive as subtype "success" with is_error true.
        if line.get("is_error") is True:
            return {"type": "error", "error": result_error_text(line), **extras}
        result = line.get("result")
        return {"type": "done", "content": result if isinstance(result, str) else "", **extras}

    def _control_request(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        request = line.get("request")
        if not isinstance(request, dict) or request.get("subtype") != "can_use_tool":
            return []
        tool_input = request.get("input")
        msg: dict[str, Any] = {
            "type": "permission_request",
            "request_id": str(line.get("request_id", "")),
            "tool": str(request.get("tool_name", "")),
            "input": tool_input if isinstance(tool_input, dict) else {},
        }
        if isinstance(request.get("tool_use_id"), str):
            msg["tool_use_id"] = request["tool_use_id"]
        if isinstance(request.get("description"), str):
            msg["description"] = request["description"]
        return [msg]


def result_error_text(line: dict[str, Any]) -> str:
    """The text of a failed ``result``: "interrupted" for a user interrupt, else its result or its errors."""
    reason = line.get("terminal_reason")
    if isinstance(reason, str) and reason.startswith("aborted"):
        return "interrupted"
    result = line.get("result")
    if isinstance(result, str) and result:
        return result
    # "[ede_diagnostic] …" entries are the CLI's internal notes, not a message for the user.
    errors = [str(e) for e in line.get("errors") or [] if e and not str(e).startswith("[ede_diagnostic]")]
    if errors:
        return "\n".join(errors)
    if line.get("subtype") == "error_during_execution":
        return "interrupted"
    return str(line.get("subtype") or "error")


class ClaudeCodeAdapter(AgentAdapter):
    """Drives ``claude`` (npm ``@anthropic-ai/claude-code``) in its stream-json input mode."""

    name = "claude-code"
    binary = "claude"
    option_names: ClassVar[list[str]] = list(OPTION_FIELDS)  # every one
    supports_interactive = True
    supports_interrupt = True
    supports_permission_prompts = True

    def command(self, options: SessionOptions) -> list[str]:
        argv = [self.binary, "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
        if options.model:
            argv += ["--model", options.model]
        if options.permission_mode:
            argv += ["--permission-mode", options.permission_mode]
        if options.allowed_tools:
            argv += ["--allowedTools", *options.allowed_tools]
        if options.disallowed_tools:
            argv += ["--disallowedTools", *options.disallowed_tools]
        if options.system_prompt is not None:
            argv += ["--system-prompt", options.system_prompt]
        if options.append_system_prompt is not None:
            argv += ["--append-system-prompt", options.append_system_prompt]
        if options.max_turns is not None:
            argv += ["--max-turns", str(options.max_turns)]
        if options.resume_agent_session_id:
            argv += ["--resume", options.resume_agent_session_id]
        if options.permission_prompts:
            argv += ["--permission-prompt-tool", "stdio"]
        if options.deltas:
            argv += ["--include-partial-messages"]
        return argv

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        env.setdefault("DISABLE_AUTOUPDATER", "1")
        return env

    def new_parser(self) -> ClaudeCodeParser:
        return ClaudeCodeParser()

    def encode_user(self, content: str) -> bytes:
        return json_line({"type": "user", "message": {"role": "user", "content": content}})

    def encode_interrupt(self, request_id: str) -> bytes:
        return json_line({"type": "control_request", "request_id": request_id, "request": {"subtype": "interrupt"}})

    def encode_permission(self, request_id: str, allow: bool, message: str | None, tool_input: dict[str, Any]) -> bytes:
        answer: dict[str, Any] = (
            {"behavior": "allow", "updatedInput": tool_input}
            if allow
            else {"behavior": "deny", "message": message or "Denied by the user"}
        )
        return json_line(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": answer},
            }
        )
