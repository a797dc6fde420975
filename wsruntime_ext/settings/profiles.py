"""What each agent CLI reads, declared: its files per scope, format, MCP translation, hook events and trust.

One :class:`AgentProfile` per agent other than Claude Code (whose settings have
their own service): the observed facts of ``AGENT-SETTINGS.md`` (Codex 0.171.0,
Gemini CLI 0.61.0, Qwen Code 0.24.4, opencode 1.18.33) and nothing else. The
service in ``agent_settings.py`` reads these descriptions; it has no
per-agent branches of its own beyond the kind of trust.

MCP servers travel through the API in Claude Code's shape (``{"type"?: "stdio",
"command", "args"?, "env"?, "cwd"?}`` or ``{"type": "http"|"sse", "url",
"headers"?}``); what only one agent has rides in ``"native"``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Callable

Server = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class AgentProfile:
    """One agent CLI's settings, declared."""

    name: str
    format: str  # "toml" or "jsonc"
    config_dir: Callable[[Mapping[str, str], str], str]  # (environment, home) → the directory of the user file
    # scope → the files the CLI reads, the winning one first; the one written is the first that exists (else
    # the one ``new_file`` names for the scope, else the last). Project names are workspace-relative, user
    # names are in config_dir.
    files: Mapping[str, tuple[str, ...]]
    mcp_key: str  # the key of the servers object in the settings document
    to_native: Callable[[Server], Server]
    from_native: Callable[[Server], Server]
    native_keys: frozenset[str]  # keys of a native entry that the translation covers (the rest is "native")
    hook_events: tuple[str, ...] | None = None  # None: no command hooks
    hooks_file: Mapping[str, str] | None = None  # hooks in their own JSON file (Codex), else in settings
    trust: str | None = None  # "codex-project", "gemini-folder", "qwen-approval"
    project_trusted_only: bool = False  # the project file is ignored until trusted (effective view skips it)
    mcp_cwd: bool = True  # whether a stdio server can have a working directory
    # Hooks that run only once each is trusted by a hash the CLI computes ("codex-hash": hooks.state in the
    # user config.toml, read and written with what `codex app-server`'s hooks/list answers; codex_hooks.py).
    hooks_trust: str | None = None
    # Qwen also reads the project's .mcp.json (Claude Code's file), below its own project settings.
    reads_mcp_json: bool = False
    # scope → the file created when none of ``files`` exists, where that is not the last (a legacy name).
    new_file: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Top-level keys the CLI reads as a string (checked in a whole-settings write; a number there breaks it).
    string_keys: tuple[str, ...] = ()


def _home_dir(name: str, variable: str | None = None) -> Callable[[Mapping[str, str], str], str]:
    def resolve(env: Mapping[str, str], home: str) -> str:
        if variable and env.get(variable):
            return os.path.abspath(env[variable])
        return os.path.join(env.get("HOME") or home, name)

    return resolve


def _gemini_dir(env: Mapping[str, str], home: str) -> str:
    return os.path.join(env.get("GEMINI_CLI_HOME") or env.get("HOME") or home, ".gemini")


def _opencode_dir(env: Mapping[str, str], home: str) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or home, ".config")
    return os.path.join(base, "opencode")


def _split(native: Server, covered: frozenset[str]) -> Server:
    return {k: v for k, v in native.items() if k not in covered}


def _with_native(server: Server, out: Server) -> Server:
    native = server.get("native")
    if isinstance(native, dict):
        out.update(native)
    return out


# -- Codex: [mcp_servers.<name>] ------------------------------------------------------

_CODEX_KEYS = frozenset(("command", "args", "env", "cwd", "url", "http_headers"))


def _codex_to(server: Server) -> Server:
    if server.get("type", "stdio") == "stdio":
        out: Server = {"command": server["command"]}
        for key in ("args", "env", "cwd"):
            if key in server:
                out[key] = server[key]
    else:  # Codex speaks streamable HTTP
        out = {"url": server["url"]}
        if server.get("headers"):
            out["http_headers"] = server["headers"]
    return _with_native(server, out)


def _codex_from(native: Server) -> Server:
    if "url" in native:
        out: Server = {"type": "http", "url": native["url"]}
        if isinstance(native.get("http_headers"), dict):
            out["headers"] = native["http_headers"]
    else:
        out = {"command": native.get("command")}
        for key in ("args", "env", "cwd"):
            if key in native:
                out[key] = native[key]
    rest = _split(native, _CODEX_KEYS)
    return {**out, "native": rest} if rest else out


# -- Gemini CLI and Qwen Code: mcpServers.<name> ---------------------------------------

_GEMINI_KEYS = frozenset(("command", "args", "env", "cwd", "url", "httpUrl", "type", "headers"))


def _gemini_like_to(http_key: str) -> Callable[[Server], Server]:
    def to_native(server: Server) -> Server:
        kind = server.get("type", "stdio")
        if kind == "stdio":
            out: Server = {"command": server["command"]}
            for key in ("args", "env", "cwd"):
                if key in server:
                    out[key] = server[key]
        elif kind == "http":
            # Gemini's own `mcp add -t http` writes {url, type}; Qwen's writes httpUrl. Both read both.
            out = {"url": server["url"], "type": "http"} if http_key == "url" else {"httpUrl": server["url"]}
        else:
            out = {"url": server["url"], "type": "sse"} if http_key == "url" else {"url": server["url"]}
        if kind != "stdio" and server.get("headers"):
            out["headers"] = server["headers"]
        return _with_native(server, out)

    return to_native


def _gemini_like_from(native: Server) -> Server:
    out: Server
    if "httpUrl" in native:
        out = {"type": "http", "url": native["httpUrl"]}
    elif "url" in native:
        out = {"type": "http" if native.get("type") == "http" else "sse", "url": native["url"]}
    else:
        out = {"command": native.get("command")}
        for key in ("args", "env", "cwd"):
            if key in native:
                out[key] = native[key]
    if "command" not in out and isinstance(native.get("headers"), dict):
        out["headers"] = native["headers"]
    rest = _split(native, _GEMINI_KEYS)
    return {**out, "native": rest} if rest else out


def normalize_mcp_json(entry: Server) -> Server:
    """A ``.mcp.json`` entry as Qwen Code reads it: ``type: "stdio"`` dropped, ``http`` + ``url`` → ``httpUrl``."""
    out = dict(entry)
    kind = out.pop("type", None)
    if kind == "http" and "url" in out:
        out["httpUrl"] = out.pop("url")
    elif kind not in (None, "stdio", "sse"):
        out["type"] = kind
    return out


# -- opencode: mcp.<name> with type local|remote --------------------------------------

_OPENCODE_KEYS = frozenset(("type", "command", "environment", "url", "headers"))


def _opencode_to(server: Server) -> Server:
    if server.get("type", "stdio") == "stdio":
        out: Server = {"type": "local", "command": [server["command"], *server.get("args", [])]}
        if server.get("env"):
            out["environment"] = server["env"]
    else:
        out = {"type": "remote", "url": server["url"]}
        if server.get("headers"):
            out["headers"] = server["headers"]
    return _with_native(server, out)


def _opencode_from(native: Server) -> Server:
    out: Server
    if native.get("type") == "remote":
        out = {"type": "http", "url": native.get("url")}
        if isinstance(native.get("headers"), dict):
            out["headers"] = native["headers"]
    else:
        command = native.get("command")
        argv = command if isinstance(command, list) else [command]
        out = {"command": argv[0] if argv else None, "args": list(argv[1:])}
        if isinstance(native.get("environment"), dict):
            out["env"] = native["environment"]
    rest = _split(native, _OPENCODE_KEYS)
    return {**out, "native": rest} if rest else out


# Hook events, from each CLI (AGENT-SETTINGS.md).
CODEX_HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PermissionRequest",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
)
GEMINI_HOOK_EVENTS = (
    "BeforeTool",
    "AfterTool",
    "BeforeAgent",
    "AfterAgent",
    "Notification",
    "SessionStart",
    "SessionEnd",
    "PreCompress",
    "BeforeModel",
    "AfterModel",
    "BeforeToolSelection",
)
QWEN_HOOK_EVENTS = (
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "PostToolBatch",
    "UserPromptSubmit",
    "UserPromptExpansion",
    "SessionStart",
    "SessionEnd",
    "SessionDelete",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "Notification",
    "PermissionRequest",
    "PermissionDenied",
    "InstructionsLoaded",
    "MessageDisplay",
    "TodoCreated",
    "TodoCompleted",
)

PROFILES: dict[str, AgentProfile] = {
    p.name: p
    for p in (
        AgentProfile(
            name="codex",
            format="toml",
            config_dir=_home_dir(".codex", "CODEX_HOME"),
            files={"project": (".codex/config.toml",), "user": ("config.toml",)},
            mcp_key="mcp_servers",
            to_native=_codex_to,
            from_native=_codex_from,
            native_keys=_CODEX_KEYS,
            hook_events=CODEX_HOOK_EVENTS,
            hooks_file={"project": ".codex/hooks.json", "user": "hooks.json"},
            trust="codex-project",
            project_trusted_only=True,
            hooks_trust="codex-hash",
            string_keys=("model", "model_provider", "approval_policy", "sandbox_mode", "model_reasoning_effort"),
        ),
        AgentProfile(
            name="gemini",
            format="jsonc",
            config_dir=_gemini_dir,
            files={"project": (".gemini/settings.json",), "user": ("settings.json",)},
            mcp_key="mcpServers",
            to_native=_gemini_like_to("url"),
            from_native=_gemini_like_from,
            native_keys=_GEMINI_KEYS,
            hook_events=GEMINI_HOOK_EVENTS,
            trust="gemini-folder",
            project_trusted_only=True,
        ),
        AgentProfile(
            name="qwen-code",
            format="jsonc",
            config_dir=_home_dir(".qwen", "QWEN_HOME"),
            files={"project": (".qwen/settings.json",), "user": ("settings.json",)},
            mcp_key="mcpServers",
            to_native=_gemini_like_to("httpUrl"),
            from_native=_gemini_like_from,
            native_keys=_GEMINI_KEYS,
            hook_events=QWEN_HOOK_EVENTS,
            trust="qwen-approval",
            reads_mcp_json=True,
        ),
        AgentProfile(
            name="opencode",
            format="jsonc",
            config_dir=_opencode_dir,
            # opencode reads every one that exists (".json" then ".jsonc" in a folder, the workspace's own
            # files before its .opencode/ folder; the legacy global config.json first of all), a later one
            # winning; the one written is the one that wins, a new one is opencode.json (as the CLI creates).
            files={
                "project": (".opencode/opencode.jsonc", ".opencode/opencode.json", "opencode.jsonc", "opencode.json"),
                "user": ("opencode.jsonc", "opencode.json", "config.json"),
            },
            new_file={"user": "opencode.json"},
            mcp_key="mcp",
            to_native=_opencode_to,
            from_native=_opencode_from,
            native_keys=_OPENCODE_KEYS,
            mcp_cwd=False,
            string_keys=("model", "small_model", "theme"),
        ),
    )
}
