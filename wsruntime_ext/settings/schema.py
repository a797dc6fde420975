"""Validation of Claude Code settings, hooks and MCP servers, with the JSON path of the first problem.

What the CLI (2.1.197) reads is checked where the runtime knows the key:
permissions, env, hooks, model and a few other scalars; keys it does not know
are kept as they are, since the CLI grows new ones often. Paths start where
the caller says the value sits; the service gives the place in the PUT body
(``$.settings.permissions.allow[1]``, ``$.hooks.PreToolUse[0].hooks[1].timeout``,
``$.mcpServers.echo.args[0]``), so a client finds the problem in what it sent.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from typing import Any

# Every hook event Claude Code 2.1.197 knows (taken from the CLI itself); a name outside it is a typo or
# an event this CLI would never fire.
HOOK_EVENTS = (
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "PostToolBatch",
    "Notification",
    "UserPromptSubmit",
    "UserPromptExpansion",
    "SessionStart",
    "SessionEnd",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "PermissionRequest",
    "PermissionDenied",
    "Setup",
    "TeammateIdle",
    "TaskCreated",
    "TaskCompleted",
    "Elicitation",
    "ElicitationResult",
    "ConfigChange",
    "WorktreeCreate",
    "WorktreeRemove",
    "InstructionsLoaded",
    "CwdChanged",
    "FileChanged",
    "MessageDisplay",
)
MCP_TYPES = ("stdio", "sse", "http")
_MEMBER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An MCP server's url (the OpenAPI schema says the same): http(s), a host or [IPv6 literal], maybe a port.
URL_PATTERN = r"^https?://(\[[0-9A-Fa-f:.]+\]|[^\s/\[\]:]+)(:[0-9]{1,5})?(/|$)"
MAX_DEPTH = 64  # nesting kept from a client; the CLI never needs more


class SettingsInvalid(Exception):
    """A body that is not a valid settings part: ``path`` is the JSON path of the first problem."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def member(path: str, key: str) -> str:
    """``$.a`` + ``b`` → ``$.a.b``; keys that are not identifiers are quoted: ``$.a["b c"]``."""
    return f"{path}.{key}" if _MEMBER.match(key) else f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fail(path: str, expected: str, value: Any) -> SettingsInvalid:
    return SettingsInvalid(path, f"must be {expected}, not {_type_name(value)}")


def check_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "an object", value)
    return value


def visible(value: str) -> bool:
    """Whether a string has a character that is not white space (U+FEFF counts as space, as in JSON Schema)."""
    return bool(value.replace("\ufeff", "").strip())


def check_string(value: Any, path: str, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    if non_empty and not visible(value):
        raise SettingsInvalid(path, "must not be empty")
    return value


def check_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def check_number(value: Any, path: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, "a number", value)
    if positive and value <= 0:
        raise SettingsInvalid(path, "must be greater than 0")
    return value


def check_string_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _fail(path, "an array of strings", value)
    for index, item in enumerate(value):
        check_string(item, f"{path}[{index}]")
    return value


def check_string_map(value: Any, path: str) -> dict[str, str]:
    for key, item in check_object(value, path).items():
        check_string(item, member(path, key))
    return value  # type: ignore[no-any-return]


def check_depth(value: Any, path: str = "$", depth: int = 0) -> None:
    """Refuse absurd nesting (the CLI would choke on it; a settings file never needs it)."""
    if depth > MAX_DEPTH:
        raise SettingsInvalid(path, f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            check_depth(item, member(path, key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_depth(item, f"{path}[{index}]", depth + 1)


# -- hooks ----------------------------------------------------------------------------


def validate_hooks(
    value: Any, path: str = "$.hooks", events: tuple[str, ...] = HOOK_EVENTS, agent: str = "Claude Code"
) -> dict[str, Any]:
    """``{"<Event>": [{"matcher"?: str, "hooks": [{"type": "command", "command": str, "timeout"?: number}]}]}``."""
    for event, groups in check_object(value, path).items():
        event_path = member(path, event)
        if event not in events:
            raise SettingsInvalid(event_path, f"is not a hook event {agent} knows ({', '.join(events)})")
        if not isinstance(groups, list):
            raise _fail(event_path, "an array of matcher groups", groups)
        for g, group in enumerate(groups):
            group_path = f"{event_path}[{g}]"
            check_object(group, group_path)
            if "matcher" in group:
                check_string(group["matcher"], f"{group_path}.matcher")
            if "hooks" not in group:
                raise SettingsInvalid(f"{group_path}.hooks", "is required")
            hooks = group["hooks"]
            if not isinstance(hooks, list):
                raise _fail(f"{group_path}.hooks", "an array of hooks", hooks)
            for h, hook in enumerate(hooks):
                _validate_hook(hook, f"{group_path}.hooks[{h}]")
    return value  # type: ignore[no-any-return]


def _validate_hook(hook: Any, path: str) -> None:
    check_object(hook, path)
    if "type" not in hook:
        raise SettingsInvalid(f"{path}.type", 'is required ("command")')
    kind = check_string(hook["type"], f"{path}.type", non_empty=True)
    if "timeout" in hook:
        check_number(hook["timeout"], f"{path}.timeout", positive=True)
    if kind != "command":
        return  # prompt, agent, … hooks: kept, checked only as objects with a type
    if "command" not in hook:
        raise SettingsInvalid(f"{path}.command", "is required for a command hook")
    check_string(hook["command"], f"{path}.command", non_empty=True)


# -- MCP servers ----------------------------------------------------------------------


def validate_mcp_servers(value: Any, path: str = "$.mcpServers", native: bool = False) -> dict[str, Any]:
    """``{"<name>": stdio {command, args?, env?, cwd?} | sse/http {url, headers?}}``; ``native``: whether a
    server may carry the ``native`` object of another agent's format (Claude Code's servers may not)."""
    for name, server in check_object(value, path).items():
        server_path = member(path, name)
        if not visible(name) or _CONTROL.search(name):
            raise SettingsInvalid(server_path, "a server name must be non-empty, without control characters")
        check_object(server, server_path)
        kind = server.get("type", "stdio")
        if kind not in MCP_TYPES:
            raise SettingsInvalid(f"{server_path}.type", f"must be one of {', '.join(MCP_TYPES)}")
        if kind == "stdio":
            if "command" not in server:
                raise SettingsInvalid(f"{server_path}.command", "is required for a stdio server")
            check_string(server["command"], f"{server_path}.command", non_empty=True)
            if "args" in server:
                check_string_list(server["args"], f"{server_path}.args")
            if "env" in server:
                check_string_map(server["env"], f"{server_path}.env")
            if "cwd" in server:
                check_string(server["cwd"], f"{server_path}.cwd", non_empty=True)
        else:
            if "url" not in server:
                raise SettingsInvalid(f"{server_path}.url", f"is required for an {kind} server")
            url = check_string(server["url"], f"{server_path}.url", non_empty=True)
            if not _is_http_url(url):
                raise SettingsInvalid(f"{server_path}.url", "must be an http:// or https:// URL")
            if "headers" in server:
                check_string_map(server["headers"], f"{server_path}.headers")
        if "native" in server:
            if not native:
                raise SettingsInvalid(
                    f"{server_path}.native", "belongs to one agent's own format: PUT it with ?agent=<that agent>"
                )
            check_object(server["native"], f"{server_path}.native")
    return value  # type: ignore[no-any-return]


def _is_http_url(url: str) -> bool:
    if not re.match(URL_PATTERN, url) or _CONTROL.search(url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:  # "Invalid IPv6 URL", a bad port
        return False
    return bool(parts.hostname)


# -- whole settings -------------------------------------------------------------------

_PERMISSION_LISTS = ("allow", "deny", "ask", "additionalDirectories")
_STRING_KEYS = (
    "model",
    "apiKeyHelper",
    "awsAuthRefresh",
    "awsCredentialExport",
    "forceLoginMethod",
    "forceLoginOrgUUID",
    "outputStyle",
    "otelHeadersHelper",
    "$schema",
)
_BOOL_KEYS = ("includeCoAuthoredBy", "enableAllProjectMcpServers", "disableAllHooks", "alwaysThinkingEnabled")
_STRING_LIST_KEYS = ("enabledMcpjsonServers", "disabledMcpjsonServers", "companyAnnouncements")


def validate_settings(value: Any, path: str = "$") -> dict[str, Any]:
    """A whole settings object: the keys the runtime knows type-checked, the others kept."""
    settings = check_object(value, path)
    for key in _STRING_KEYS:
        if key in settings:
            check_string(settings[key], member(path, key))
    for key in _BOOL_KEYS:
        if key in settings:
            check_bool(settings[key], member(path, key))
    for key in _STRING_LIST_KEYS:
        if key in settings:
            check_string_list(settings[key], member(path, key))
    if "cleanupPeriodDays" in settings:
        days = check_number(settings["cleanupPeriodDays"], f"{path}.cleanupPeriodDays")
        if days < 0 or days != int(days):
            raise SettingsInvalid(f"{path}.cleanupPeriodDays", "must be a whole number of days, 0 or more")
    if "env" in settings:
        check_string_map(settings["env"], f"{path}.env")
    if "permissions" in settings:
        permissions = check_object(settings["permissions"], f"{path}.permissions")
        for key in _PERMISSION_LISTS:
            if key in permissions:
                check_string_list(permissions[key], f"{path}.permissions.{key}")
        for key in ("defaultMode", "disableBypassPermissionsMode"):
            if key in permissions:
                check_string(permissions[key], f"{path}.permissions.{key}")
    if "hooks" in settings:
        validate_hooks(settings["hooks"], f"{path}.hooks")
    if "statusLine" in settings:
        check_object(settings["statusLine"], f"{path}.statusLine")
    return settings
