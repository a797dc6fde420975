"""The Codex CLI adapter (OTHER-AGENTS.md §1): ``codex exec --json``, one process per turn.

The prompt is the last argument, stdin is closed (else the CLI waits for more
input), a follow-up conversation is ``codex exec … resume <thread_id>``. Its
``error`` lines are retry notices and its ``item`` errors are warnings: only
``turn.failed`` ends a turn with an error. SIGINT (as the runtime's stop sends
it) exits 1 with no end line, and the session's finaliser reports it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from wsruntime_ext.agents.adapter import AgentAdapter, SessionOptions, StreamParser
from wsruntime_ext.agents.codex_app_server import CodexAppServerDriver

log = logging.getLogger("wsruntime.agents")

SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class CodexParser(StreamParser):
    """``codex exec --json`` lines → AgentMessages."""

    def __init__(self) -> None:
        self.agent_session_id: str | None = None
        self.last_text = ""
        self.warnings: list[str] = []  # non-fatal notices (unknown model metadata, "Reconnecting… n/m")

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        kind = line.get("type")
        if kind == "thread.started":
            if isinstance(line.get("thread_id"), str) and line["thread_id"]:
                self.agent_session_id = line["thread_id"]
            return []
        if kind in ("item.started", "item.completed"):
            item = line.get("item")
            return self._item(item, kind == "item.completed") if isinstance(item, dict) else []
        if kind == "turn.completed":
            done: dict[str, Any] = {"type": "done", "content": self.last_text}
            if isinstance(line.get("usage"), dict):
                done["usage"] = line["usage"]
            return [done]
        if kind == "turn.failed":
            error = line.get("error")
            message = _text(error.get("message")) if isinstance(error, dict) else ""
            return [{"type": "error", "error": message or "the turn failed"}]
        if kind == "error":
            # Not final: a retry notice ("Reconnecting... 1/2 (…)"); the failure itself comes as turn.failed.
            self._warn(_text(line.get("message")))
        return []

    def _warn(self, text: str) -> None:
        if text and len(self.warnings) < 20:
            self.warnings.append(text[:500])
        log.debug("codex: %s", text[:500])

    def _item(self, item: dict[str, Any], completed: bool) -> list[dict[str, Any]]:
        itype = item.get("type")
        item_id = _text(item.get("id"))
        if itype == "command_execution":
            use = {"type": "tool_use", "tool": "shell", "input": {"command": _text(item.get("command"))}}
            use["tool_use_id"] = item_id
            if not completed:
                return [use]
            status = item.get("status")
            failed = status != "completed" or item.get("exit_code") not in (0, None)
            output = _text(item.get("aggregated_output"))
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool": "shell",
                "output": output,
                "tool_use_id": item_id,
                "is_error": failed,
            }
            if failed:
                code = item.get("exit_code")
                result["error"] = f"{status}" + (f" (exit code {code})" if isinstance(code, int) else "")
            return [result]
        if not completed:
            return []
        if itype == "agent_message":
            self.last_text = _text(item.get("text"))
            return [{"type": "text", "content": self.last_text}]
        if itype == "reasoning":
            return [{"type": "thinking", "content": _text(item.get("text"))}]
        if itype == "error":
            self._warn(_text(item.get("message")))  # a warning, not a failure
            return []
        if itype in ("file_change", "web_search", "mcp_tool_call"):
            return self._other_tool(itype, item_id, item)
        return []  # todo_list, plan, collab_tool_call …: nothing to show as a message

    @staticmethod
    def _other_tool(itype: str, item_id: str, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Tools that report only when done: their tool_use and tool_result together."""
        error = item.get("error")
        error_text = _text(error.get("message")) if isinstance(error, dict) else ""
        if itype == "file_change":
            tool, tool_input, output = "apply_patch", {"changes": item.get("changes") or []}, ""
        elif itype == "web_search":
            tool, tool_input, output = "web_search", {"query": _text(item.get("query"))}, ""
        else:
            tool = f"mcp__{_text(item.get('server'))}__{_text(item.get('tool'))}"
            arguments = item.get("arguments")
            tool_input = arguments if isinstance(arguments, dict) else {}
            result = item.get("result")
            content = result.get("content") if isinstance(result, dict) else None
            output = "\n".join(
                c["text"] for c in content or [] if isinstance(c, dict) and isinstance(c.get("text"), str)
            )
        failed = bool(error_text) or item.get("status") in ("failed", "declined")
        tool_result: dict[str, Any] = {
            "type": "tool_result",
            "tool": tool,
            "output": output,
            "tool_use_id": item_id,
            "is_error": failed,
        }
        if failed:
            tool_result["error"] = error_text or str(item.get("status"))
        return [{"type": "tool_use", "tool": tool, "input": tool_input, "tool_use_id": item_id}, tool_result]


class CodexAdapter(AgentAdapter):
    """Drives ``codex`` (npm ``@openai/codex``): ``codex exec --json``; ``permission_mode`` is its sandbox."""

    name = "codex"
    binary = "codex"
    # interactive, permission_prompts and deltas run it long-lived as `codex app-server`.
    option_names: ClassVar[list[str]] = [
        "model",
        "permission_mode",
        "resume",
        "interactive",
        "permission_prompts",
        "deltas",
    ]
    permission_modes: ClassVar[tuple[str, ...]] = SANDBOX_MODES
    prompt_in_argv = True

    def command(self, options: SessionOptions) -> list[str]:
        argv = [self.binary, "exec", "--json", "--skip-git-repo-check", "-C", options.cwd]
        if options.model:
            argv += ["-m", options.model]
        if options.permission_mode:
            argv += ["-s", options.permission_mode]
        if options.resume_agent_session_id:
            argv += ["resume", options.resume_agent_session_id]
        # "--" ends the options: a prompt is never read as a flag.
        return [*argv, "--", options.prompt or ""]

    def new_parser(self) -> CodexParser:
        return CodexParser()

    def driver(self, options: SessionOptions) -> CodexAppServerDriver | None:
        """``codex app-server`` when the session wants more than one-shot gives: follow-ups, prompts, deltas."""
        if options.interactive or options.permission_prompts or options.deltas:
            return CodexAppServerDriver(self.binary, options)
        return None
