"""The Gemini CLI adapter (OTHER-AGENTS.md §2): ``gemini --prompt=… --output-format stream-json``.

One process per turn, resumed with ``--resume <session_id>`` from the same
directory. Its exit code says little: 0 when SIGINT/SIGTERM cut it short and
``HTTP status & 0xFF`` (244) on an API error, so the turn is judged from the
stream: only a ``result`` line ends it, and a process that ends without one
failed. ``error`` lines are warnings (loop detection, turn limits), not the end.
Assistant text comes in ``delta`` chunks, gathered into one ``text`` per block.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from wsruntime_ext.agents.acp import AcpDriver, GeminiAcp
from wsruntime_ext.agents.adapter import AgentAdapter, SessionOptions, StreamParser

log = logging.getLogger("wsruntime.agents")

APPROVAL_MODES = ("default", "auto_edit", "yolo", "plan")


class GeminiParser(StreamParser):
    """``--output-format stream-json`` lines → AgentMessages."""

    def __init__(self) -> None:
        self.agent_session_id: str | None = None
        self.tool_names: dict[str, str] = {}
        self.chunks: list[str] = []  # the assistant text block being streamed
        self.last_text = ""
        self.warnings: list[str] = []

    def _flush(self) -> list[dict[str, Any]]:
        if not self.chunks:
            return []
        text = "".join(self.chunks)
        self.chunks = []
        self.last_text = text
        return [{"type": "text", "content": text}]

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        kind = line.get("type")
        if kind == "message":
            if line.get("role") == "assistant" and isinstance(line.get("content"), str):
                self.chunks.append(line["content"])
                if line.get("delta") is not True:
                    return self._flush()  # a whole message: a block of its own
            return []  # the echo of the user's prompt
        out = self._flush()
        if kind == "init":
            if isinstance(line.get("session_id"), str) and line["session_id"]:
                self.agent_session_id = line["session_id"]
        elif kind == "tool_use":
            name = str(line.get("tool_name", ""))
            tool_id = str(line.get("tool_id", ""))
            self.tool_names[tool_id] = name
            params = line.get("parameters")
            out.append(
                {
                    "type": "tool_use",
                    "tool": name,
                    "input": params if isinstance(params, dict) else {},
                    "tool_use_id": tool_id,
                }
            )
        elif kind == "tool_result":
            tool_id = str(line.get("tool_id", ""))
            output = line.get("output")
            failed = line.get("status") == "error"
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool": self.tool_names.get(tool_id, ""),
                "output": output if isinstance(output, str) else "",
                "tool_use_id": tool_id,
                "is_error": failed,
            }
            if failed:
                result["error"] = _error_text(line.get("error")) or result["output"] or "the tool failed"
            out.append(result)
        elif kind == "error":
            # A warning (loop detected, turn limit…): the turn's outcome comes in `result`.
            message = str(line.get("message", ""))
            if len(self.warnings) < 20:
                self.warnings.append(f"{line.get('severity', 'error')}: {message[:500]}")
            log.debug("gemini: %s", message[:500])
        elif kind == "result":
            out.append(self._result(line))
        return out

    def _result(self, line: dict[str, Any]) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        stats = line.get("stats")
        if isinstance(stats, dict):
            extras["usage"] = {k: v for k, v in stats.items() if k != "duration_ms"}
            if isinstance(stats.get("duration_ms"), (int, float)):
                extras["duration_ms"] = stats["duration_ms"]
        if line.get("status") == "success":
            return {"type": "done", "content": self.last_text, **extras}
        return {"type": "error", "error": _error_text(line.get("error")) or "the agent reported an error", **extras}

    def finish(self, code: int) -> list[dict[str, Any]]:
        return self._flush()  # text streamed before the process died still shows


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) else ""
    return error if isinstance(error, str) else ""


class GeminiAdapter(AgentAdapter):
    """Drives ``gemini`` (npm ``@google/gemini-cli``) headless, one process per turn."""

    name = "gemini"
    binary = "gemini"
    first_run_alone = True
    # interactive, permission_prompts and deltas run it long-lived over ACP (acp.py); a resume cannot (0.61).
    option_names: ClassVar[list[str]] = [
        "model",
        "permission_mode",
        "resume",
        "interactive",
        "permission_prompts",
        "deltas",
    ]
    permission_modes: ClassVar[tuple[str, ...]] = APPROVAL_MODES
    prompt_in_argv = True

    def command(self, options: SessionOptions) -> list[str]:
        # "--prompt=…" keeps a prompt that starts with "-" a value, not a flag.
        argv = [self.binary, f"--prompt={options.prompt or ''}", "--output-format", "stream-json"]
        if options.model:
            argv += ["--model", options.model]
        if options.permission_mode:
            argv += ["--approval-mode", options.permission_mode]
        if options.resume_agent_session_id:
            argv += ["--resume", options.resume_agent_session_id]
        return argv

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        # Without it the launcher re-spawns node with a bigger heap, and the pid we hold is not the agent.
        env.setdefault("GEMINI_CLI_NO_RELAUNCH", "true")
        return env

    def new_parser(self) -> GeminiParser:
        return GeminiParser()

    def driver(self, options: SessionOptions) -> AcpDriver | None:
        """The ACP client when the session wants more than one-shot gives: follow-ups, prompts, deltas."""
        if options.interactive or options.permission_prompts or options.deltas:
            return AcpDriver(GeminiAcp(self.binary), options)
        return None
