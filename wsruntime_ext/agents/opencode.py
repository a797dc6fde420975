"""The opencode adapter (OTHER-AGENTS.md §3): ``opencode run --format json --thinking``, one process per turn.

A tool reports only once it has finished, so each ``tool_use`` line becomes a
``tool_use`` and its ``tool_result``. There is no end-of-turn line: a run that
exits 0 without an ``error`` line is ``done`` (with the last text and the
tokens of every step added up); ``--session <id>`` continues a conversation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from wsruntime_ext.agents.acp import AcpDriver, OpencodeAcp
from wsruntime_ext.agents.adapter import AgentAdapter, SessionOptions, StreamParser


class OpencodeParser(StreamParser):
    """``opencode run --format json`` lines → AgentMessages; ``finish`` supplies the ``done``."""

    def __init__(self) -> None:
        self.agent_session_id: str | None = None
        self.last_text = ""
        self.failed = False
        self.usage: dict[str, Any] = {}
        self.cost = 0.0

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        sid = line.get("sessionID")
        if isinstance(sid, str) and sid:
            self.agent_session_id = sid
        kind = line.get("type")
        part = line.get("part")
        part = part if isinstance(part, dict) else {}
        if kind == "text":
            self.last_text = str(part.get("text", ""))
            return [{"type": "text", "content": self.last_text}]
        if kind == "reasoning":
            return [{"type": "thinking", "content": str(part.get("text", ""))}]
        if kind == "tool_use":
            return self._tool(part)
        if kind == "step_finish":
            self._add_usage(part)
            return []
        if kind == "error":
            self.failed = True
            return [{"type": "error", "error": _error_text(line.get("error"))}]
        return []  # step_start and anything newer

    @staticmethod
    def _tool(part: dict[str, Any]) -> list[dict[str, Any]]:
        tool = str(part.get("tool", ""))
        call_id = str(part.get("callID", ""))
        state = part.get("state")
        state = state if isinstance(state, dict) else {}
        tool_input = state.get("input")
        output = state.get("output")
        failed = state.get("status") == "error"
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool": tool,
            "output": output if isinstance(output, str) else "",
            "tool_use_id": call_id,
            "is_error": failed,
        }
        if failed:
            error = state.get("error")
            result["error"] = error if isinstance(error, str) and error else "the tool failed"
        use = {"type": "tool_use", "tool": tool, "input": tool_input if isinstance(tool_input, dict) else {}}
        use["tool_use_id"] = call_id
        return [use, result]

    def _add_usage(self, part: dict[str, Any]) -> None:
        tokens = part.get("tokens")
        if isinstance(tokens, dict):
            for key, value in tokens.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.usage[key] = self.usage.get(key, 0) + value
                elif isinstance(value, dict):
                    inner = self.usage.setdefault(key, {})
                    for k, v in value.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(inner, dict):
                            inner[k] = inner.get(k, 0) + v
        cost = part.get("cost")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self.cost += cost

    def finish(self, code: int) -> list[dict[str, Any]]:
        if code != 0 or self.failed:
            return []  # an error line ended the turn already, or the session reports how the process died
        return [{"type": "done", "content": self.last_text, "usage": self.usage, "cost_usd": self.cost}]


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return "the agent reported an error"
    data = error.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str) and message:
        return message
    return str(error.get("name") or "the agent reported an error")


class OpencodeAdapter(AgentAdapter):
    """Drives ``opencode`` (npm ``opencode-ai``) with ``run --format json``; models are ``provider/model``."""

    name = "opencode"
    binary = "opencode"
    first_run_alone = True
    # interactive, permission_prompts and deltas run it long-lived over ACP (acp.py).
    option_names: ClassVar[list[str]] = ["model", "resume", "interactive", "permission_prompts", "deltas"]
    prompt_in_argv = True

    def command(self, options: SessionOptions) -> list[str]:
        argv = [self.binary, "run", "--format", "json", "--thinking"]
        if options.model:
            argv += ["--model", options.model]
        if options.resume_agent_session_id:
            argv += ["--session", options.resume_agent_session_id]
        return [*argv, "--", options.prompt or ""]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.setdefault("OPENCODE_DISABLE_AUTOUPDATE", "1")
        return env

    def new_parser(self) -> OpencodeParser:
        return OpencodeParser()

    def driver(self, options: SessionOptions) -> AcpDriver | None:
        """The ACP client when the session wants more than one-shot gives: follow-ups, prompts, deltas."""
        if options.interactive or options.permission_prompts or options.deltas:
            return AcpDriver(OpencodeAcp(self.binary), options)
        return None
