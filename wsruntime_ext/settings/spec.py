"""The OpenAPI description of the settings routes (joined into ``/openapi.json`` by app.py).

The request schemas say what the validator checks (so that schema-valid bodies are accepted); the
answers describe what is on disk, which may hold anything the CLI wrote, so they are loose objects.
"""

from __future__ import annotations

from typing import Any

from wsruntime_ext.openapi import errors, json_content, query_param, ref
from wsruntime_ext.settings.schema import HOOK_EVENTS, URL_PATTERN
from wsruntime_ext.settings.service import READ_SCOPES, SCOPES

TAG = "settings"
_VISIBLE = "\\S"
_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ETAG_HEADER = {
    "description": "The version of the file (effective view: of all three, weak)",
    "schema": {"type": "string"},
}

_SCOPE_TABLE = (
    "| scope | settings, hooks | MCP servers |\n|---|---|---|\n"
    "| `project` | `.claude/settings.json` | `.mcp.json` → `mcpServers` |\n"
    "| `local` | `.claude/settings.local.json` | `~/.claude.json` → `projects[<workspace>].mcpServers` |\n"
    "| `user` | `~/.claude/settings.json` | `~/.claude.json` → `mcpServers` |\n\n"
    "`~` is the runtime's home directory (`--home`, default `$HOME`), the one its agent sessions get; "
    "`CLAUDE_CONFIG_DIR` in the runtime's environment moves `~/.claude/` and `~/.claude.json` there, as it does "
    "for the CLI."
)
_CONDITIONAL = (
    " Conditional headers (not listed as parameters, so that fuzzers do not trip them): `If-Match: <etag>` "
    "answers 412 `precondition_failed` unless the file is still that version (a missing file's ETag is "
    '`"absent"`; `*`: it exists); `If-None-Match: *` answers 412 if the file exists. Without them, a file '
    "changed by another writer (the CLI) between the runtime's read and its rename is re-read and the change "
    "is made on top of it: nothing the other writer wrote is lost."
)


def _scope_param(read: bool) -> dict[str, Any]:
    scopes = list(READ_SCOPES if read else SCOPES)
    text = "Which scope (table above)." + (
        " `effective` is the read-only merged view user < project < local." if read else ""
    )
    return query_param("scope", {"type": "string", "enum": scopes, "default": "project"}, text)


_FORCE = query_param(
    "force",
    {"type": "boolean", "default": False},
    "Replace a file that is not valid JSON (or whose part is not an object); the old file is kept as "
    "`<file>.bak-<UTC stamp>` and the answer's `backup` says where. Without it such a file is refused (422).",
)

schemas: dict[str, Any] = {
    "Hook": {
        "type": "object",
        "description": "One hook. `command` hooks run a shell command; other types the CLI knows are kept, "
        "checked only for a string `type`. Other keys are kept.",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "pattern": _VISIBLE, "examples": ["command"]},
            "command": {"type": "string", "pattern": _VISIBLE},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
        },
        "if": {"properties": {"type": {"const": "command"}}},
        "then": {"required": ["type", "command"]},
    },
    "HookMatcher": {
        "type": "object",
        "required": ["hooks"],
        "properties": {
            "matcher": {"type": "string", "description": "tool name pattern (`Bash`, `Edit|Write`, `mcp__.*`)"},
            "hooks": {"type": "array", "items": ref("Hook")},
        },
    },
    "Hooks": {
        "type": "object",
        "description": "Hook event → matcher groups. The events are those Claude Code 2.1.197 knows.",
        "propertyNames": {"enum": list(HOOK_EVENTS)},
        "additionalProperties": {"type": "array", "items": ref("HookMatcher")},
    },
    "McpServer": {
        "anyOf": [
            {
                "type": "object",
                "title": "stdio",
                "required": ["command"],
                "properties": {
                    "type": {"const": "stdio"},
                    "command": {"type": "string", "pattern": _VISIBLE},
                    "args": _STRING_LIST,
                    "env": _STRING_MAP,
                },
            },
            {
                "type": "object",
                "title": "sse or http",
                "required": ["type", "url"],
                "properties": {
                    "type": {"enum": ["sse", "http"]},
                    "url": {"type": "string", "pattern": URL_PATTERN},
                    "headers": _STRING_MAP,
                },
            },
        ]
    },
    "McpServers": {
        "type": "object",
        "description": "Server name → server.",
        "propertyNames": {"pattern": "^[^\\x00-\\x1f\\x7f]*\\S[^\\x00-\\x1f\\x7f]*$"},
        "additionalProperties": ref("McpServer"),
    },
    "Settings": {
        "type": "object",
        "description": "A Claude Code settings object. The keys listed are type-checked; any other key is kept "
        "as it is (the CLI adds new ones often).",
        "properties": {
            "permissions": {
                "type": "object",
                "properties": {
                    "allow": _STRING_LIST,
                    "deny": _STRING_LIST,
                    "ask": _STRING_LIST,
                    "additionalDirectories": _STRING_LIST,
                    "defaultMode": {"type": "string"},
                    "disableBypassPermissionsMode": {"type": "string"},
                },
            },
            "env": _STRING_MAP,
            "hooks": ref("Hooks"),
            "model": {"type": "string"},
            "apiKeyHelper": {"type": "string"},
            "outputStyle": {"type": "string"},
            "forceLoginMethod": {"type": "string"},
            "includeCoAuthoredBy": {"type": "boolean"},
            "enableAllProjectMcpServers": {"type": "boolean"},
            "disableAllHooks": {"type": "boolean"},
            "alwaysThinkingEnabled": {"type": "boolean"},
            "enabledMcpjsonServers": _STRING_LIST,
            "disabledMcpjsonServers": _STRING_LIST,
            "cleanupPeriodDays": {"type": "integer", "minimum": 0},
            "statusLine": {"type": "object"},
        },
    },
}


def _answer_schema(part: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["scope", "path", "exists", part],
        "properties": {
            "scope": {"type": "string", "enum": list(READ_SCOPES)},
            "path": {
                "type": ["string", "null"],
                "description": "workspace-relative, or `~/…` in the home directory (null for `effective`)",
            },
            "exists": {"type": "boolean", "description": "whether the file exists (effective: any of them)"},
            part: {"type": "object", "description": description},
            "sources": {
                "type": "array",
                "description": "effective only: the files merged, lowest precedence first",
                "items": {
                    "type": "object",
                    "required": ["scope", "path", "exists"],
                    "properties": {
                        "scope": {"type": "string"},
                        "path": {"type": "string"},
                        "exists": {"type": "boolean"},
                    },
                },
            },
            "backup": {"type": "string", "description": "PUT with force only: where the unreadable file was kept"},
        },
    }


def _body_schema(part: str, schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [part],
        "properties": {
            part: ref(schema),
            "scope": {
                "type": ["string", "null"],
                "enum": [*SCOPES, None],
                "description": "optional (a GET answer sent back); must equal `?scope=` (else 400 "
                "`invalid_settings` at `$.scope`)",
            },
        },
    }


_PARTS = [
    ("/api/v1/settings", "settings", "Settings", "SettingsAnswer", "the whole settings object", "Settings"),
    ("/api/v1/settings/hooks", "hooks", "Hooks", "HooksAnswer", "only its `hooks` key", "Hooks"),
    ("/api/v1/settings/mcp", "mcpServers", "McpServers", "McpServersAnswer", "the scope's MCP servers", "MCP servers"),
]
paths: dict[str, Any] = {}
for _path, _part, _schema, _answer, _what, _title in _PARTS:
    schemas[_answer] = _answer_schema(_part, _what)
    _ok = {
        "description": "The part and its file",
        "content": json_content(ref(_answer)),
        "headers": {"ETag": _ETAG_HEADER},
    }
    paths[_path] = {
        "get": {
            "summary": f"{_title} of a scope",
            "description": f"Reads {_what}. A missing file reads as `{{}}` with `exists: false`.\n\n{_SCOPE_TABLE}\n\n"
            "A file that is not valid JSON answers 422 `settings_file_invalid` with the parse error's line and column.",
            "tags": [TAG],
            "parameters": [_scope_param(read=True)],
            "responses": {"200": _ok, **errors(409, 422)},
        },
        "put": {
            "summary": f"Replace {_title.lower() if _title != 'MCP servers' else _title} of a scope",
            "description": f"Replaces {_what} in the scope's file; every other key of the file keeps its value "
            "and its place. The body is validated first and nothing is written when it fails: every bad body "
            "(empty, not an object, the part missing, a `scope` other than `?scope=`, a bad value in the part) "
            "answers 400 `invalid_settings` with `details.path`, the JSON path of the first problem in the body "
            "(e.g. `$.hooks.PreToolUse[0].hooks[1].timeout`, `$.settings.env.A`, `$.mcpServers.echo.command`); "
            "only a body that is not JSON is 400 `invalid_json`. The write is atomic and keeps the file's mode "
            "(`~/.claude.json` is created 0600); missing directories (`.claude/`) are created. `scope=effective` "
            "is refused with 400 "
            "`scope_read_only`. A file on disk that is not valid JSON is refused with 422 `settings_file_invalid` "
            "unless `force=true`. Answers what a GET would now answer, with the new ETag."
            + _CONDITIONAL
            + f"\n\n{_SCOPE_TABLE}",
            "tags": [TAG],
            "parameters": [_scope_param(read=False), _FORCE],
            "requestBody": {"required": True, "content": json_content(_body_schema(_part, _schema))},
            "responses": {"200": _ok, **errors(400, 409, 412, 422)},
        },
    }

openapi: dict[str, Any] = {
    "paths": paths,
    "schemas": schemas,
    "tags": [{"name": TAG, "description": "Claude Code settings, hooks and MCP servers in three scopes"}],
}
