"""The Qwen Code adapter (OTHER-AGENTS.md §4): Claude Code's stream-json, driven the same way.

``qwen --input-format stream-json --output-format stream-json`` takes user
turns and ``interrupt`` control requests on stdin exactly like ``claude``, so
the adapter and its parser are Claude Code's with three differences: the
flags, the ``[API Error: …]`` text Qwen prints before a failed ``result``
(held back, dropped when the result is an error), and the error text, which
is in ``result.error.message``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from wsruntime_ext.agents.acp import AcpDriver, QwenAcp
from wsruntime_ext.agents.adapter import OPTION_FIELDS, SessionOptions
from wsruntime_ext.agents.claude_code import ClaudeCodeAdapter, ClaudeCodeParser, json_line

APPROVAL_MODES = ("plan", "default", "auto-edit", "auto", "yolo")
API_ERROR_PREFIX = "[API Error"


class QwenCodeParser(ClaudeCodeParser):
    """Claude Code's parser, plus Qwen's quirks."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[dict[str, Any]] = []  # "[API Error: …]" texts, shown only if no error result follows

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        out = [m for m in super().parse(line) if not self._hold(m)]
        if line.get("type") == "result":
            if out and out[-1]["type"] == "done":
                out[:0] = self.held  # not an API failure after all: the text was the model's
            self.held = []
        elif out and self.held:
            out[:0] = self.held
            self.held = []
        return out

    def _hold(self, message: dict[str, Any]) -> bool:
        if message["type"] == "text" and str(message.get("content", "")).startswith(API_ERROR_PREFIX):
            self.held.append(message)
            return True
        return False

    def _result(self, line: dict[str, Any]) -> dict[str, Any]:
        message = super()._result(line)
        error = line.get("error")
        if message["type"] == "error" and isinstance(error, dict) and isinstance(error.get("message"), str):
            reason = error["message"]
            message["error"] = "interrupted" if reason == "Operation cancelled." else reason
        return message


class QwenCodeAdapter(ClaudeCodeAdapter):
    """Drives ``qwen`` (npm ``@qwen-code/qwen-code``) in its Claude-compatible stream-json input mode."""

    name = "qwen-code"
    binary = "qwen"
    first_run_alone = True
    option_names: ClassVar[list[str]] = list(OPTION_FIELDS)  # permission_prompts: over ACP (acp.py)
    permission_modes: ClassVar[tuple[str, ...]] = APPROVAL_MODES

    def command(self, options: SessionOptions) -> list[str]:
        argv = [self.binary, "--input-format", "stream-json", "--output-format", "stream-json"]
        if options.permission_mode:
            argv += ["--approval-mode", options.permission_mode]
        argv += self._flags(options)
        if options.resume_agent_session_id:
            argv += ["--resume", options.resume_agent_session_id]
        if options.deltas:
            argv += ["--include-partial-messages"]
        return argv

    @staticmethod
    def _flags(options: SessionOptions) -> list[str]:
        """The flags both of its modes take (stream-json and ACP)."""
        argv: list[str] = []
        if options.model:
            argv += ["--model", options.model]
        if options.allowed_tools:
            argv += ["--allowed-tools", *options.allowed_tools]
        if options.disallowed_tools:
            argv += ["--exclude-tools", *options.disallowed_tools]
        if options.system_prompt is not None:
            argv += [f"--system-prompt={options.system_prompt}"]
        if options.append_system_prompt is not None:
            argv += [f"--append-system-prompt={options.append_system_prompt}"]
        if options.max_turns is not None:
            argv += ["--max-session-turns", str(options.max_turns)]
        return argv

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        # Without it the launcher re-spawns node with other flags, and the pid we hold is not the agent.
        env.setdefault("QWEN_CODE_NO_RELAUNCH", "true")
        return env

    def encode_startup(self) -> bytes:
        # Qwen acts on control requests (interrupt) only after the initialize handshake.
        request = {"subtype": "initialize"}
        return json_line({"type": "control_request", "request_id": "wsruntime-init", "request": request})

    def new_parser(self) -> QwenCodeParser:
        return QwenCodeParser()

    def driver(self, options: SessionOptions) -> AcpDriver | None:
        """Its stream-json mode cannot ask the host: a session with permission_prompts runs over ACP."""
        return AcpDriver(QwenAcp(self.binary, self._flags(options)), options) if options.permission_prompts else None
