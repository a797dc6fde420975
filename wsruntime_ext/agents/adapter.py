"""The agent adapter interface (API.md "Agent sessions"): what every agent CLI must tell the session manager.

An adapter turns a session's options into an argv and environment, reads the
CLI's output one line at a time into zero or more ``AgentMessage`` dicts (the
six seed types plus ``permission_request``), and encodes what the runtime
writes to the CLI's stdin: a user message, an interrupt, a permission answer.
Claude Code is the first (``claude_code.py``); Qwen Code speaks the same
stream-json (``qwen_code.py``), while Codex, Gemini CLI and opencode
(``codex.py``, ``gemini.py``, ``opencode.py``) run one process per turn with
the prompt on their command line, are stopped by signals, and have parsers
whose ``finish`` judges the end of the turn from the stream, not the exit code.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from typing import Any, ClassVar

from wsruntime_ext.procs import version_output
from wsruntime_ext.versions import npm_package_version

_VERSION = re.compile(r"\d+\.\d+[0-9A-Za-z.+-]*")


@dataclasses.dataclass
class SessionOptions:
    """What a client asked for in ``POST /api/v1/agent-sessions``, validated."""

    prompt: str | None
    cwd: str  # absolute, inside the workspace
    model: str | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] = dataclasses.field(default_factory=list)
    disallowed_tools: list[str] = dataclasses.field(default_factory=list)
    system_prompt: str | None = None
    append_system_prompt: str | None = None
    max_turns: int | None = None
    resume_agent_session_id: str | None = None  # the CLI's own id to continue
    interactive: bool = False
    permission_prompts: bool = False
    deltas: bool = False  # live text_delta / thinking_delta frames


@dataclasses.dataclass
class AgentInfo:
    """An adapter's CLI as found at start-up."""

    name: str
    available: bool
    version: str | None
    path: str | None
    binary: str
    options: list[str]
    capabilities: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": self.available,
            "version": self.version,
            "path": self.path,
            "options": self.options,
            "capabilities": self.capabilities,
        }


class StreamParser:
    """Reads one agent process's output, line by line, into AgentMessages (without seq, ts, session_id)."""

    agent_session_id: str | None = None  # the CLI's own session id, once it said it
    mcp_servers: list[dict[str, str]] | None = None  # the MCP servers the CLI reported, with their status

    def parse(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        """Zero or more AgentMessages for one decoded output line; a ``done``/``error`` ends the turn."""
        raise NotImplementedError

    def finish(self, code: int) -> list[dict[str, Any]]:
        """Messages owed once the process has exited with ``code`` (e.g. the ``done`` of a CLI with no end line)."""
        return []


class ProtocolDriver(StreamParser):
    """A long-lived protocol client (ACP, Codex app-server): it parses the output and writes the requests.

    What it owes the agent's stdin (requests, answers to the agent's requests) waits in ``outbox`` and
    the session writes it after each call; ``fatal`` says the session cannot go on (stdin is closed).
    """

    kills_tools_on_interrupt = False  # the runtime stops the running tool's processes on interrupt

    def __init__(self) -> None:
        self.outbox: list[bytes] = []
        self.fatal = False

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        return env

    def can_resume(self) -> bool:
        """Whether a new process of this mode can continue a conversation (``resume``)."""
        return True

    def start(self) -> None:
        """Queue the handshake."""

    def user(self, content: str) -> None:
        """Queue a user message: sent once the agent is ready and the running turn has ended."""
        raise NotImplementedError

    def interrupt(self) -> bool:
        """Ask the agent to end the running turn (nothing to do when none runs); False when it cannot be told."""
        raise NotImplementedError

    def permission(self, request_id: str, allow: bool) -> bool:
        """Answer a pending permission request; False when it is not pending."""
        raise NotImplementedError


# The create fields that are options of an agent (prompt, agent and cwd every agent takes); each adapter
# names the ones it honours in ``option_names``, and setting another is 400 ``unsupported_option``.
OPTION_FIELDS = (
    "model",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "system_prompt",
    "append_system_prompt",
    "max_turns",
    "resume",
    "interactive",
    "permission_prompts",
    "deltas",
)
# What ``GET /api/v1/agents`` lists per agent as its ``capabilities`` (API.md "Live text as it is generated").
CAPABILITIES = ("deltas", "interactive", "interrupt", "permission_prompts", "resume")
# Live-only frames: relayed to the clients attached now, never stored, numbered or replayed.
LIVE_TYPES = frozenset({"text_delta", "thinking_delta"})


class AgentAdapter:
    """One agent CLI: how to start it, read it and talk to it."""

    name = ""
    binary = ""
    option_names: ClassVar[list[str]] = []  # the create options this adapter honours
    permission_modes: ClassVar[tuple[str, ...]] = ()  # the values its permission_mode takes
    prompt_in_argv = False  # the prompt is on the command line and stdin is closed at once (one turn)
    # The CLI sets up its state in HOME on its first run without a lock (a database, a project registry):
    # concurrent first runs break each other, so the runtime lets its first session start alone.
    first_run_alone = False
    supports_interactive = False
    supports_interrupt = False
    supports_permission_prompts = False

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or self.binary

    @classmethod
    def capabilities(cls) -> list[str]:
        """Which of :data:`CAPABILITIES` this agent supports now."""
        have = set(cls.option_names)
        if cls.supports_interrupt or "interactive" in have:
            have.add("interrupt")
        return [c for c in CAPABILITIES if c in have]

    def info(self, available: bool, version: str | None, path: str | None) -> AgentInfo:
        return AgentInfo(self.name, available, version, path, self.binary, self.option_names, self.capabilities())

    def command(self, options: SessionOptions) -> list[str]:
        """The argv that starts a session (the prompt goes over stdin where the CLI allows it)."""
        raise NotImplementedError

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """The environment of the agent process, from the runtime's own."""
        return base

    def new_parser(self) -> StreamParser:
        raise NotImplementedError

    def driver(self, options: SessionOptions) -> ProtocolDriver | None:
        """A long-lived protocol client for a session that needs one (follow-ups, prompts, deltas), or None.

        With a driver, the session runs the driver's command and environment instead of :meth:`command`.
        """
        return None

    def encode_startup(self) -> bytes | None:
        """What the runtime writes to stdin first, before any user message (a handshake), or None."""
        return None

    def encode_user(self, content: str) -> bytes | None:
        """The stdin line that sends a user message, or None when the CLI takes none."""
        return None

    def encode_interrupt(self, request_id: str) -> bytes | None:
        """The stdin line that interrupts the running turn without ending the process, or None."""
        return None

    def encode_permission(
        self, request_id: str, allow: bool, message: str | None, tool_input: dict[str, Any]
    ) -> bytes | None:
        """The stdin line that answers a permission request, or None."""
        return None

    def version_argv(self, path: str) -> list[str]:
        return [path, "--version"]

    def detect(self) -> AgentInfo:
        """Find the CLI and its version: its npm package.json, else ``--version`` (blocking: off the IOLoop)."""
        path = shutil.which(self.binary) if os.sep not in self.binary else self.binary
        if path is None or not os.access(path, os.X_OK):
            return self.info(False, None, None)
        version = npm_package_version(path)  # an npm install says it without starting Node
        if version is not None:
            return self.info(True, version, path)
        try:
            code, text = version_output(self.version_argv(path))
            if code == 0 and text:
                found = _VERSION.search(text)  # "2.1.197 (Claude Code)", "codex-cli 0.171.0"
                version = found.group(0) if found else text.split()[0]
        except (OSError, subprocess.SubprocessError):
            return self.info(False, None, path)
        return self.info(version is not None, version, path)
