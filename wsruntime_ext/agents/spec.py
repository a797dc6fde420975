"""The OpenAPI description of the agent session routes (joined into ``/openapi.json`` by app.py)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.agents.adapter import CAPABILITIES, AgentAdapter
from wsruntime_ext.agents.claude_code import ClaudeCodeAdapter
from wsruntime_ext.agents.codex import CodexAdapter
from wsruntime_ext.agents.gemini import GeminiAdapter
from wsruntime_ext.agents.handlers import PERMISSION_MODES
from wsruntime_ext.agents.opencode import OpencodeAdapter
from wsruntime_ext.agents.qwen_code import QwenCodeAdapter
from wsruntime_ext.agents.service import STATUSES
from wsruntime_ext.openapi import errors, json_content, json_response, path_param, query_param, ref, websocket_operation

TAG = "agent-sessions"
_ADAPTERS = (ClaudeCodeAdapter, CodexAdapter, GeminiAdapter, QwenCodeAdapter, OpencodeAdapter)
AGENT_NAMES = [a.name for a in _ADAPTERS]  # every adapter service.default_adapters builds
# Every permission mode some agent takes (opencode takes none: 400 unsupported_option).
_MODES = list(dict.fromkeys(m for a in _ADAPTERS for m in (a.permission_modes or PERMISSION_MODES)))
_ID = path_param("session_id", "The session id (`as_…`)")
_NULLABLE_STR = {"type": ["string", "null"]}
# Mirrors handlers.py: a command-line value never starts with '-' or white space and holds no NUL.
_ARGV_PATTERN = "^[^-\\x00\\t\\n\\x0b\\x0c\\r ][^\\x00]*$"
_ARGV_STR = {"type": ["string", "null"], "pattern": _ARGV_PATTERN}
# A prompt or follow-up: something besides white space, no NUL.
_MESSAGE = {"type": "string", "pattern": "^[^\\x00]*[^\\x00\\t\\n\\x0b\\x0c\\r ][^\\x00]*$", "maxLength": 1 << 20}
_TEXT = {"type": ["string", "null"], "pattern": "^[^\\x00]*$", "maxLength": 1 << 20}

_UNSET = {
    "null": {"type": "null"},
    "false": {"enum": [False, None]},
    "empty": {"type": ["array", "null"], "maxItems": 0},
}
_OPTION_KINDS = {
    "model": "null",
    "permission_mode": "null",
    "allowed_tools": "empty",
    "disallowed_tools": "empty",
    "system_prompt": "null",
    "append_system_prompt": "null",
    "max_turns": "null",
    "resume": "null",
    "interactive": "false",
    "permission_prompts": "false",
    "deltas": "false",
}


def _agent_rules(adapter: type[AgentAdapter]) -> dict[str, Any]:
    """What one agent takes: options it lacks left unset (else 400 unsupported_option), its own permission modes."""
    props: dict[str, Any] = {
        name: _UNSET[kind] for name, kind in _OPTION_KINDS.items() if name not in adapter.option_names
    }
    if "permission_mode" in adapter.option_names:
        props["permission_mode"] = {"enum": [*adapter.permission_modes, None]}
    then: dict[str, Any] = {"properties": props}
    if adapter.prompt_in_argv:
        then["required"] = ["prompt"]
        then["properties"]["prompt"] = {"type": "string"}
    return {"if": {"required": ["agent"], "properties": {"agent": {"const": adapter.name}}}, "then": then}


schemas: dict[str, Any] = {
    "AgentClientFrame": {
        "description": "What a client sends on a session's stream: a follow-up (interactive sessions) or an interrupt",
        "oneOf": [
            {
                "type": "object",
                "required": ["type", "content"],
                "properties": {"type": {"const": "user"}, "content": {"type": "string"}},
            },
            {"type": "object", "required": ["type"], "properties": {"type": {"const": "interrupt"}}},
        ],
    },
    "AgentSession": {
        "type": "object",
        "required": ["id", "agent", "status", "created_at", "updated_at", "message_count"],
        "properties": {
            "id": {"type": "string"},
            "agent": {"type": "string"},
            "status": {"enum": list(STATUSES)},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "ended_at": _NULLABLE_STR,
            "prompt": _NULLABLE_STR,
            "cwd": {"type": "string", "description": "workspace-relative"},
            "model": _NULLABLE_STR,
            "agent_session_id": {**_NULLABLE_STR, "description": "the CLI's own session id (what resume uses)"},
            "pid": {"type": ["integer", "null"]},
            "message_count": {"type": "integer", "minimum": 0},
            "result": {**_NULLABLE_STR, "description": "the last `done` message's text"},
            "usage": {"type": ["object", "null"]},
            "cost_usd": {"type": ["number", "null"]},
            "exit_code": {"type": ["integer", "null"]},
            "error": _NULLABLE_STR,
            "interactive": {"type": "boolean"},
            "permission_prompts": {"type": "boolean"},
            "deltas": {"type": "boolean", "description": "(extension) live `text_delta`/`thinking_delta` frames"},
            "resumed_from": _NULLABLE_STR,
            "mcp_servers": {
                "type": ["array", "null"],
                "description": "(extension) the MCP servers the agent reported when it started, with their status "
                "(`connected`, `failed`, `pending`, …); null until it reports (claude-code and qwen-code do)",
                "items": {
                    "type": "object",
                    "required": ["name", "status"],
                    "properties": {"name": {"type": "string"}, "status": {"type": "string"}},
                },
            },
        },
    },
    "AgentSessionCreate": {
        "type": "object",
        "properties": {
            "prompt": {**_MESSAGE, "type": ["string", "null"]},
            "agent": {"enum": [*AGENT_NAMES, None], "default": "claude-code"},
            "cwd": {
                "type": ["string", "null"],
                "default": "",
                "pattern": "^[^\\x00-\\x1f\\x7f]*$",
                "description": "workspace-relative directory: 403 outside the workspace, 404 when it does not exist",
            },
            "model": _ARGV_STR,
            "permission_mode": {
                "enum": [*_MODES, None],
                "description": "per agent: claude-code "
                + ", ".join(PERMISSION_MODES)
                + "; codex (its sandbox) "
                + ", ".join(CodexAdapter.permission_modes)
                + "; gemini "
                + ", ".join(GeminiAdapter.permission_modes)
                + "; qwen-code "
                + ", ".join(QwenCodeAdapter.permission_modes),
            },
            "allowed_tools": {"type": ["array", "null"], "items": {"type": "string", "pattern": _ARGV_PATTERN}},
            "disallowed_tools": {"type": ["array", "null"], "items": {"type": "string", "pattern": _ARGV_PATTERN}},
            "system_prompt": _TEXT,
            "append_system_prompt": _TEXT,
            "max_turns": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000},
            "resume": {**_ARGV_STR, "description": "an earlier session's id (ours or the agent's own) to continue"},
            "interactive": {
                "type": ["boolean", "null"],
                "default": False,
                "description": "keep the agent process for follow-ups; codex, gemini and opencode then run "
                "long-lived (`codex app-server`, ACP)",
            },
            "permission_prompts": {
                "type": ["boolean", "null"],
                "default": False,
                "description": "route the agent's permission questions to the client as `permission_request`; "
                "the runtime puts the CLI in the mode in which it asks",
            },
            "deltas": {
                "type": ["boolean", "null"],
                "default": False,
                "description": "(extension) live `text_delta` / `thinking_delta` frames (see `AgentLiveFrame`) "
                "before each complete `text` / `thinking`; for the agents with `deltas` in their `capabilities`",
            },
        },
        "anyOf": [
            {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            {"required": ["resume"], "properties": {"resume": {"type": "string"}}},
        ],
        "allOf": [
            {  # no agent is claude-code
                "if": {"properties": {"agent": {"enum": [ClaudeCodeAdapter.name, None]}}},
                "then": {"properties": {"permission_mode": {"enum": [*PERMISSION_MODES, None]}}},
            },
            *(_agent_rules(a) for a in _ADAPTERS if a is not ClaudeCodeAdapter),
            {  # Gemini's long-lived mode cannot resume: a resume runs one-shot
                "if": {
                    "required": ["agent", "resume"],
                    "properties": {"agent": {"const": GeminiAdapter.name}, "resume": {"type": "string"}},
                },
                "then": {"properties": {n: _UNSET["false"] for n in ("interactive", "permission_prompts", "deltas")}},
            },
        ],
        "description": "`prompt` is required unless `resume` is given (always for codex, gemini and opencode). "
        "An option the agent does not take (see `options` and `capabilities` in `GET /api/v1/agents`) is 400 "
        "`unsupported_option` naming it; so is a gemini `resume` with `interactive`, `permission_prompts` or "
        "`deltas` (its long-lived mode cannot resume).",
    },
    "AgentMessage": {
        "type": "object",
        "required": ["type", "seq", "ts", "session_id"],
        "properties": {
            "type": {
                "enum": ["thinking", "tool_use", "tool_result", "text", "done", "error", "permission_request", "status"]
            },
            "content": {"type": "string"},
            "tool": {"type": "string"},
            "input": {"type": "object"},
            "output": {"type": "string"},
            "error": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "ts": {"type": "string"},
            "session_id": {"type": "string"},
            "tool_use_id": {"type": "string"},
            "is_error": {"type": "boolean"},
            "usage": {"type": "object"},
            "cost_usd": {"type": "number"},
            "duration_ms": {"type": "number"},
            "request_id": {"type": "string"},
            "status": {"enum": list(STATUSES)},
        },
    },
    "AgentLiveFrame": {
        "type": "object",
        "description": "(extension) A live-only frame of a session created with `deltas: true`: a chunk of the "
        "text or thinking block `block` (counted from 0 in its message) as the model writes it. Not stored, "
        "not replayed, no `seq`: `after` is the seq of the last stored frame, and the complete `text` / "
        "`thinking` frame of the block follows. A client attached mid-block gets the deltas from then on.",
        "required": ["type", "content", "block", "after", "session_id"],
        "properties": {
            "type": {"enum": ["text_delta", "thinking_delta"]},
            "content": {"type": "string"},
            "block": {"type": "integer", "minimum": 0},
            "after": {"type": "integer", "minimum": 0},
            "session_id": {"type": "string"},
        },
    },
    "AgentInfo": {
        "type": "object",
        "required": ["name", "available", "version", "path", "options", "capabilities"],
        "properties": {
            "name": {"type": "string"},
            "available": {"type": "boolean"},
            "version": _NULLABLE_STR,
            "path": _NULLABLE_STR,
            "options": {"type": "array", "items": {"type": "string"}},
            "capabilities": {
                "type": "array",
                "items": {"enum": list(CAPABILITIES)},
                "description": "(extension) what the agent supports now; asking for another of `deltas`, "
                "`interactive`, `permission_prompts`, `resume` is 400 `unsupported_option` (`interrupt`: 409)",
            },
            "detecting": {
                "type": "boolean",
                "const": True,
                "description": "(extension) the CLI's `--version` is still running after the bounded wait "
                "(5 s); `available` and `version` are not known yet. Absent otherwise",
            },
        },
    },
    "Accepted": {"type": "object", "required": ["accepted"], "properties": {"accepted": {"const": True}}},
    "AgentSessionEvent": {
        "type": "object",
        "required": ["type", "id", "status", "seq"],
        "description": "On `WS /api/v1/ws` when a session's status changes.",
        "properties": {
            "type": {"const": "agent_session"},
            "id": {"type": "string", "description": "the session id (`as_…`)"},
            "session_id": {"type": "string", "description": "the same as `id` (an alias kept for older clients)"},
            "status": {"enum": list(STATUSES)},
            "agent": {"type": "string", "description": "the agent the session runs"},
            "seq": {"type": "integer", "minimum": 0, "description": "the hub's sequence number"},
        },
    },
}

_ACCEPTED = json_response("Accepted", ref("Accepted"))
_SESSION = json_response("The session", ref("AgentSession"))

openapi: dict[str, Any] = {
    "tags": [
        {
            "name": TAG,
            "description": "Agent CLIs (Claude Code, Codex, Gemini CLI, Qwen Code, opencode) run in the workspace, "
            "streamed as AgentMessages",
        }
    ],
    "schemas": schemas,
    "paths": {
        "/api/v1/agent-sessions": {
            "get": {
                "summary": "List agent sessions, newest first",
                "tags": [TAG],
                "parameters": [query_param("status", {"enum": list(STATUSES)}, "only sessions with this status")],
                "responses": {
                    "200": json_response(
                        "The sessions",
                        {
                            "type": "object",
                            "required": ["sessions"],
                            "properties": {"sessions": {"type": "array", "items": ref("AgentSession")}},
                        },
                    )
                },
            },
            "post": {
                "summary": "Start an agent session",
                "description": "400 `unknown_agent`, `unsupported_option`; 404 `cwd_not_found`; "
                "422 `agent_unavailable` when its CLI is not installed; "
                "429 `too_many_sessions` past `--max-sessions`; 409 when `resume` names a running session.",
                "tags": [TAG],
                "requestBody": {"required": True, "content": json_content(ref("AgentSessionCreate"))},
                "responses": {
                    "201": json_response("Started", ref("AgentSession")),
                    **errors(400, 403, 404, 409, 422, 429),
                },
            },
        },
        "/api/v1/agent-sessions/{session_id}": {
            "get": {
                "summary": "One session",
                "tags": [TAG],
                "parameters": [_ID],
                "responses": {"200": _SESSION, **errors(404)},
            },
            "delete": {
                "summary": "Terminate a session and every process it started",
                "description": "Interrupt, SIGINT, then SIGTERM/SIGKILL to the whole tree. An ended session is "
                "returned unchanged.",
                "tags": [TAG],
                "parameters": [_ID],
                "responses": {"200": _SESSION, **errors(404)},
            },
        },
        "/api/v1/agent-sessions/{session_id}/messages": {
            "get": {
                "summary": "The session's messages so far",
                "tags": [TAG],
                "parameters": [
                    _ID,
                    query_param("after", {"type": "integer", "minimum": 0, "maximum": 1 << 31}, "only seq > after"),
                    query_param(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}, "at most"
                    ),
                ],
                "responses": {
                    "200": json_response(
                        "Messages",
                        {
                            "type": "object",
                            "required": ["messages", "has_more"],
                            "properties": {
                                "messages": {"type": "array", "items": ref("AgentMessage")},
                                "has_more": {"type": "boolean"},
                            },
                        },
                    ),
                    **errors(404),
                },
            },
            "post": {
                "summary": "Send a follow-up user message (interactive sessions)",
                "description": "409 `session_ended` or `session_not_interactive`.",
                "tags": [TAG],
                "parameters": [_ID],
                "requestBody": {
                    "required": True,
                    "content": json_content(
                        {
                            "type": "object",
                            "required": ["content"],
                            "properties": {"content": _MESSAGE},
                        }
                    ),
                },
                "responses": {"202": _ACCEPTED, **errors(404, 409)},
            },
        },
        "/api/v1/agent-sessions/{session_id}/interrupt": {
            "post": {
                "summary": "Stop the current turn, keep the session",
                "description": "409 `session_ended`; 409 `interrupt_unsupported` for a session of codex, gemini "
                "or opencode created without `interactive`, `permission_prompts` or `deltas` (one process per "
                "turn): DELETE ends its turn. Their long-lived sessions (ACP, codex app-server) are "
                "interrupted like claude-code's: the turn ends with `error` `interrupted`, the process stays.",
                "tags": [TAG],
                "parameters": [_ID],
                "responses": {"202": _ACCEPTED, **errors(404, 409)},
            }
        },
        "/api/v1/agent-sessions/{session_id}/permissions/{request_id}": {
            "post": {
                "summary": "Answer a permission request",
                "tags": [TAG],
                "parameters": [_ID, path_param("request_id", "The permission_request's request_id")],
                "requestBody": {
                    "required": True,
                    "content": json_content(
                        {
                            "type": "object",
                            "required": ["behavior"],
                            "properties": {
                                "behavior": {"enum": ["allow", "deny"]},
                                "message": {"type": ["string", "null"], "maxLength": 1 << 20},
                            },
                        }
                    ),
                },
                "responses": {"202": _ACCEPTED, **errors(404, 409)},
            }
        },
        "/api/v1/agents": {
            "get": {
                "summary": "Every agent adapter with its CLI's availability and version",
                "description": "An npm-installed CLI's version is read from its package.json at start-up "
                "(no Node started); any other CLI is asked with `--version` in the background. This request "
                "waits for a probe still running, up to 5 s: only past that does an agent say `detecting`.",
                "tags": [TAG],
                "responses": {
                    "200": json_response(
                        "Agents",
                        {
                            "type": "object",
                            "required": ["agents"],
                            "properties": {"agents": {"type": "array", "items": ref("AgentInfo")}},
                        },
                    )
                },
            }
        },
        "/api/v1/ws/agent-sessions/{session_id}": {
            "get": websocket_operation(
                "A session's live AgentMessage stream",
                "Every stored message after `after`, then live ones, in order, none twice; one JSON "
                "`AgentMessage` a frame. When the session ends: one final `status` frame, then close 1000. "
                'Client frames: `{"type": "user", "content"}`, `{"type": "interrupt"}`, '
                '`{"type": "permission", "request_id", "behavior", "message"?}`; a refused one is answered '
                'with a `SocketReply` `{"type": "reply", "ok": false, "error"}` (no seq: not part of the stream). '
                "With `deltas`, "
                "`AgentLiveFrame`s come in their place between the stored frames (live only). A client more "
                "than 100000 live frames behind, or whose socket takes nothing for 15 s, is closed with 1013: "
                "reconnect with `?after=`.",
                [TAG],
                [_ID, query_param("after", {"type": "integer", "minimum": 0}, "replay only seq > after")],
            )
        },
    },
}
