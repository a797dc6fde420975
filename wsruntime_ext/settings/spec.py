"""The OpenAPI description of the settings routes (joined into ``/openapi.json`` by app.py).

The request schemas say what the validator checks (so that schema-valid bodies are accepted); the
answers describe what is on disk, which may hold anything the CLI wrote, so they are loose objects.
"""

from __future__ import annotations

from typing import Any

from wsruntime_ext.openapi import errors, json_content, query_param, ref
from wsruntime_ext.settings.agent_files import AGENTS
from wsruntime_ext.settings.profiles import CODEX_HOOK_EVENTS, GEMINI_HOOK_EVENTS, QWEN_HOOK_EVENTS
from wsruntime_ext.settings.schema import HOOK_EVENTS, URL_PATTERN
from wsruntime_ext.settings.service import READ_SCOPES, SCOPES

TAG = "settings"
_VISIBLE = "\\S"
_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ALL_HOOK_EVENTS = list(dict.fromkeys((*HOOK_EVENTS, *CODEX_HOOK_EVENTS, *GEMINI_HOOK_EVENTS, *QWEN_HOOK_EVENTS)))
_NATIVE = {
    "type": "object",
    "description": "Other agents only: what only that agent's format has (Gemini's `trust`, `timeout`, tool "
    "filters; Codex's timeouts, `bearer_token_env_var`; opencode's `enabled`), written into its entry as it is. "
    "Not for `agent=all`.",
}
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
        "description": "Hook event → matcher groups. Each agent takes the events it knows: Claude Code 2.1.197's "
        "(the default), Codex's (`SessionStart`, `PreToolUse`, …, in `hooks.json`), Gemini CLI's (`BeforeTool`, "
        "`AfterTool`, `BeforeAgent`, …; `timeout` in ms) or Qwen Code's (Claude Code's names); another agent's "
        "event answers 400 `invalid_settings`.",
        "propertyNames": {"enum": _ALL_HOOK_EVENTS},
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
                    "cwd": {
                        "type": "string",
                        "pattern": _VISIBLE,
                        "description": "the server's working directory (not for opencode, which has none)",
                    },
                    "native": _NATIVE,
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
                    "native": _NATIVE,
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
            "agent": {"type": "string", "enum": list(AGENTS[1:]), "description": "other agents only: which"},
            "trusted": {
                "type": "boolean",
                "description": "other agents only: whether the CLI uses this scope now as far as trust goes — "
                "Codex's project trust (and for hooks, every hook trusted for its current definition), Gemini's "
                "trusted folder (its user scope too), Qwen's approval of every project MCP server for its current "
                "entry; true where the CLI needs no trust",
            },
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
                        "used": {"type": "boolean", "description": "other agents: false for an untrusted project"},
                    },
                },
            },
            "backup": {"type": "string", "description": "PUT with force only: where the unreadable file was kept"},
        },
    }


_OTHER_SETTINGS = {
    "type": "object",
    "title": "another agent's settings",
    "description": "With `?agent=` other than claude-code: that CLI's own settings document (Codex's TOML as "
    "JSON: no nulls). Its hooks (Gemini, Qwen) and MCP servers object are checked; every other key is kept.",
}


def _body_schema(part: str, schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [part],
        "properties": {
            part: {"anyOf": [ref(schema), _OTHER_SETTINGS]} if part == "settings" else ref(schema),
            "scope": {
                "type": ["string", "null"],
                "enum": [*SCOPES, None],
                "description": "optional (a GET answer sent back); must equal `?scope=` (else 400 "
                "`invalid_settings` at `$.scope`)",
            },
        },
    }


_AGENT_TABLE = (
    "\n\n`?agent=` (extension) chooses the agent, `claude-code` by default (the table above). The others have "
    "`project` and `user` (and `effective`); `local` is Claude Code's alone (400 `scope_unsupported`):\n\n"
    "| agent | `project` | `user` | format | trust |\n|---|---|---|---|---|\n"
    "| `codex` | `.codex/config.toml` (hooks: `.codex/hooks.json`) | `$CODEX_HOME/config.toml` (hooks: "
    "`$CODEX_HOME/hooks.json`), `~/.codex` by default | TOML | the project is ignored until "
    '`[projects."<workspace>"] trust_level = "trusted"` is in the user file |\n'
    "| `gemini` | `.gemini/settings.json` | `~/.gemini/settings.json` | JSON with comments | the workspace "
    "must be in `~/.gemini/trustedFolders.json` (else even user-level servers are off) |\n"
    "| `qwen-code` | `.qwen/settings.json` | `~/.qwen/settings.json` | JSON with comments | project MCP "
    "servers need a record in `~/.qwen/mcpApprovals.json` (sha256 of the entry) |\n"
    "| `opencode` | the winning one that exists of `.opencode/opencode.jsonc`, `.opencode/opencode.json`, "
    "`opencode.jsonc`, `opencode.json` (else `opencode.json`); `effective` merges them all, `sources` lists each | "
    "`$XDG_CONFIG_HOME/opencode/` `opencode.jsonc` or `opencode.json` | JSONC | none |\n\n"
    "Files are found as the runtime's agent sessions resolve them (`--home`, `CODEX_HOME`, `XDG_CONFIG_HOME`, "
    "`GEMINI_CLI_HOME`, `QWEN_HOME`). Settings are shown as JSON (Codex's TOML too) and written back in the "
    "file's own format, changing only the keys that changed: comments, key order and untouched keys stay. "
    "MCP servers have Claude Code's shape for every agent, translated to and from each format; what only one "
    "agent has travels in `native`. opencode has no command hooks (422 `hooks_unsupported`). Codex runs a hook "
    'only once it is trusted by a hash its CLI computes (`[hooks.state."<key>"] trusted_hash` in the user '
    "`config.toml`): the runtime asks `codex app-server` (`hooks/list`) for each hook's key, hash and trust, so "
    "GET says whether every hook of the file runs, and `trust=true` records the CLI's own hash of each. Without "
    "a codex CLI to ask, `trust=true` on hooks answers 422 `trust_unsupported`; when the CLI fails, 502 "
    "`trust_failed`; either way nothing is written. An unknown agent answers 400 `unknown_agent`."
)


def _agent_param(with_all: bool) -> dict[str, Any]:
    values = [*AGENTS, "all"] if with_all else list(AGENTS)
    text = "Which agent's settings (extension)." + (
        ' `all`: every agent\'s MCP servers, `{"agents": {…}}`.' if with_all else ""
    )
    return query_param("agent", {"type": "string", "enum": values, "default": "claude-code"}, text)


_TRUST = query_param(
    "trust",
    {"type": "boolean", "default": False},
    "Other agents (extension): also record, in the CLI's own place, the trust or approval that what is written "
    "needs (Codex project trust, Gemini trusted folder, Qwen approvals of the project's MCP servers). Without "
    "it nothing is trusted.",
)

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
            "description": f"Reads {_what}. A missing file reads as `{{}}` with `exists: false`.\n\n{_SCOPE_TABLE}"
            + _AGENT_TABLE
            + "\n\n"
            "A file that is not valid JSON answers 422 `settings_file_invalid` with the parse error's line and column.",
            "tags": [TAG],
            "parameters": [_scope_param(read=True), _agent_param(_part == "mcpServers")],
            "responses": {"200": _ok, **errors(400, 409, 422)},
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
            + f"\n\n{_SCOPE_TABLE}"
            + _AGENT_TABLE,
            "tags": [TAG],
            "parameters": [_scope_param(read=False), _FORCE, _agent_param(False), _TRUST],
            "requestBody": {"required": True, "content": json_content(_body_schema(_part, _schema))},
            "responses": {"200": _ok, **errors(400, 409, 412, 422, *((502,) if _part == "hooks" else ()))},
        },
    }

schemas["McpAllAnswer"] = {
    "type": "object",
    "description": "Every agent's MCP servers in one scope, each translated to Claude Code's shape.",
    "required": ["agent", "scope", "agents"],
    "properties": {
        "agent": {"const": "all"},
        "scope": {"type": "string", "enum": list(READ_SCOPES)},
        "agents": {
            "type": "object",
            "propertyNames": {"enum": list(AGENTS)},
            "additionalProperties": {
                "type": "object",
                "required": ["path", "exists", "mcpServers", "trusted"],
                "properties": {
                    "path": {"type": ["string", "null"]},
                    "exists": {"type": "boolean"},
                    "mcpServers": {"type": "object"},
                    "trusted": {"type": "boolean"},
                },
            },
        },
    },
}
_mcp = paths["/api/v1/settings/mcp"]
_mcp["get"]["responses"]["200"] = {
    "description": "The part and its file; with `agent=all`, every agent's servers (no ETag)",
    "content": json_content({"anyOf": [ref("McpServersAnswer"), ref("McpAllAnswer")]}),
    "headers": {"ETag": _ETAG_HEADER},
}
_mcp["patch"] = {
    "summary": "Add, replace or remove MCP servers for every agent at once",
    "description": "`agent=all` (required; extension): each server of the body is added or replaced (an "
    "object) or removed (`null`) in every agent's file of the scope — Claude Code's, Codex's, Gemini's, Qwen's "
    "and opencode's — each in its own format; the other servers stay. All or nothing: every file is computed "
    "first (a bad server for any agent → 400 `invalid_settings`, a file on disk that cannot be read → 422 "
    "`settings_file_invalid`, 409 when one cannot be written), then committed one by one, and a failure puts "
    "back those already written. `trust=true` also records each CLI's trust or approval. Answers what each "
    "agent now has." + _AGENT_TABLE,
    "tags": [TAG],
    "parameters": [
        query_param("agent", {"type": "string", "enum": ["all"]}, "Must be `all`.", required=True),
        query_param("scope", {"type": "string", "enum": ["project", "user"], "default": "project"}, "Which scope."),
        _TRUST,
    ],
    "requestBody": {
        "required": True,
        "content": json_content(
            {
                "type": "object",
                "required": ["mcpServers"],
                "properties": {
                    "mcpServers": {
                        "type": "object",
                        "description": "Server name → server, or null to remove it. `native` is refused here "
                        "(it belongs to one agent).",
                        "propertyNames": {"pattern": "^[^\\x00-\\x1f\\x7f]*\\S[^\\x00-\\x1f\\x7f]*$"},
                        "additionalProperties": {"anyOf": [ref("McpServer"), {"type": "null"}]},
                    },
                    "scope": {"type": ["string", "null"], "enum": ["project", "user", None]},
                },
            }
        ),
    },
    "responses": {
        "200": {"description": "What each agent now has", "content": json_content(ref("McpAllAnswer"))},
        **errors(400, 409, 422),
    },
}

openapi: dict[str, Any] = {
    "paths": paths,
    "schemas": schemas,
    "tags": [
        {
            "name": TAG,
            "description": "Claude Code settings, hooks and MCP servers in three scopes; Codex's, Gemini CLI's, "
            "Qwen Code's and opencode's in theirs (`?agent=`)",
        }
    ],
}
