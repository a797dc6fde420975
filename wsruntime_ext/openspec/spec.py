"""The OpenAPI description of the OpenSpec routes (joined into ``/openapi.json`` by app.py)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.openapi import errors, json_content, json_response, path_param, ref
from wsruntime_ext.openspec.actions import ACTIONS
from wsruntime_ext.openspec.handlers import PREFIX
from wsruntime_ext.openspec.profile import ALL_WORKFLOWS, CORE_WORKFLOWS

TAG = "openspec"
_STR = {"type": "string"}
_STR_LIST = {"type": "array", "items": _STR}
_NULLABLE_STR = {"type": ["string", "null"]}

_ACTION = {
    "type": "object",
    "required": ["id", "command", "kind", "installed"],
    "properties": {
        "id": {"enum": list(ACTIONS)},
        "command": {
            "type": "string",
            "description": "the slash command the agent runs (`/opsx:apply add-login`), "
            "or the CLI command line for `init`",
        },
        "kind": {"enum": ["slash", "cli"]},
        "needs": {**_STR_LIST, "description": "what `input` must say (`description`, `name`)"},
        "installed": {
            "type": "boolean",
            "description": "whether `.claude/commands/opsx/<id>.md` (or its skill) exists",
        },
    },
}

_PROFILE = {
    "type": "object",
    "required": ["name", "workflows", "source", "config_path", "warning"],
    "properties": {
        "name": {
            "enum": ["core", "custom"],
            "description": f"`core` (the default: {', '.join(CORE_WORKFLOWS)}) or `custom` (the workflows the "
            "global config lists)",
        },
        "workflows": {
            "type": "array",
            "items": {"enum": list(ALL_WORKFLOWS)},
            "description": "the workflows that exist under this profile, in the CLI's order; no other is offered "
            "and POSTing one is 409 `action_not_available`. A custom profile that lists `archive` or "
            "`bulk-archive` has `sync` too, as the CLI installs it",
        },
        "source": {
            "type": "string",
            "description": "`default`, or the path of the global config file that chose the profile",
        },
        "config_path": {
            "type": "string",
            "description": "where the global config is looked for: `$XDG_CONFIG_HOME/openspec/config.json`, else "
            "`~/.config/openspec/config.json`, in the agent sessions' environment (`~` is `--home`)",
        },
        "warning": {
            "type": ["string", "null"],
            "description": "why the config file is not used (not JSON, not an object, unreadable, an unknown "
            "profile, `workflows` not a list): the core profile is in effect, as with the openspec CLI",
        },
    },
}

schemas: dict[str, Any] = {
    "OpenSpecAction": _ACTION,
    "OpenSpecProfile": _PROFILE,
    "OpenSpecArtifact": {
        "type": "object",
        "required": ["id", "status", "path", "files", "requires", "specs"],
        "properties": {
            "id": _STR,
            "status": {"enum": ["done", "ready", "blocked", "skipped"]},
            "path": {**_STR, "description": "workspace-relative output path (a glob for `specs/**/*.md`)"},
            "files": {**_STR_LIST, "description": "the existing output files, workspace-relative, sorted"},
            "requires": _STR_LIST,
            "missing_deps": _STR_LIST,
            "specs": {"type": "boolean", "description": "whether it generates delta specs (`specs/...`)"},
        },
    },
    "OpenSpecChange": {
        "type": "object",
        "required": ["name", "status", "tasks", "last_modified", "path", "artifacts", "actions", "error"],
        "properties": {
            "name": _STR,
            "status": {"enum": ["no-tasks", "in-progress", "complete"]},
            "tasks": {
                "type": "object",
                "required": ["completed", "total"],
                "properties": {"completed": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "last_modified": {**_STR, "description": "newest mtime of any file in the change, ISO 8601 UTC (ms)"},
            "path": _STR,
            "schema": _NULLABLE_STR,
            "artifacts": {"type": "array", "items": ref("OpenSpecArtifact")},
            "planning_complete": {"type": "boolean"},
            "apply_state": {"enum": ["ready", "blocked", "all_done", None]},
            "missing_artifacts": _STR_LIST,
            "next_steps": _STR_LIST,
            "nested": _STR_LIST,
            "error": {
                "type": ["object", "null"],
                "description": "why the change cannot be loaded (nested folder, bad `.openspec.yaml`, unknown schema)",
            },
            "actions": {"type": "array", "items": ref("OpenSpecAction")},
        },
    },
    "OpenSpecState": {
        "type": "object",
        "required": ["initialized", "root", "changes", "specs", "archived", "actions", "profile", "cli"],
        "properties": {
            "initialized": {"type": "boolean"},
            "root": _NULLABLE_STR,
            "legacy": {"type": "boolean", "description": "`openspec/project.md` of the 0.x layout is present"},
            "schema": {**_STR, "description": "the default workflow schema (config.yaml `schema`)"},
            "schemas": _STR_LIST,
            "changes": {"type": "array", "items": ref("OpenSpecChange")},
            "specs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "requirements", "path"],
                    "properties": {"name": _STR, "requirements": {"type": "integer"}, "path": _STR},
                },
            },
            "archived": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "change", "date"],
                    "properties": {"name": _STR, "change": _STR, "date": _NULLABLE_STR},
                },
            },
            "warnings": {"type": "array", "items": {"type": "object"}},
            "actions": {"type": "array", "items": ref("OpenSpecAction")},
            "profile": ref("OpenSpecProfile"),
            "installed": _STR_LIST,
            "agent": _STR,
            "cli": {
                "type": "object",
                "required": ["available", "version"],
                "properties": {
                    "available": {"type": "boolean"},
                    "version": _NULLABLE_STR,
                    "detecting": {
                        "type": "boolean",
                        "const": True,
                        "description": "(extension) `openspec --version` is still running after the bounded wait "
                        "(5 s): `available` and `version` are not known yet. Absent otherwise — an npm install's "
                        "version comes from its package.json, and the request waits for a probe still running",
                    },
                },
            },
        },
    },
    "OpenSpecActionRequest": {
        "type": "object",
        "properties": {
            "change": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[^/\\x00]+$",
                "description": "the change to act on (continue, apply, update, verify, sync, archive; optional for "
                "explore)",
            },
            "input": {
                "type": ["string", "null"],
                "maxLength": 65536,
                "pattern": "^[^\\x00]*$",
                "description": "free text after the slash command: the description for propose, the name for new/ff, "
                "the requested revision for update (optional), a topic for explore",
            },
        },
    },
    "OpenSpecInitialized": {
        "type": "object",
        "required": ["initialized", "output"],
        "properties": {"initialized": {"type": "boolean"}, "output": _STR},
    },
}

_WORKSPACE = path_param("workspace_id", "The workspace id (see /health)")

openapi: dict[str, Any] = {
    "tags": [{"name": TAG, "description": "OpenSpec: specs, change proposals and workflow actions"}],
    "schemas": schemas,
    "paths": {
        PREFIX: {
            "get": {
                "summary": "The OpenSpec state of the workspace and the workflow actions available now",
                "description": "Read natively (no Node), equal to what `openspec list`, `list --specs`, "
                "`status --all` and `instructions apply` report; cached until a file under `openspec/` or "
                "`.claude/`, or the global `openspec/config.json`, changes. Only the workflows of the OpenSpec "
                "profile in effect (`profile`: core by default, or the global config's custom list) are offered. "
                "Only the workspace itself is a root: no ancestor's `openspec/` is used. "
                "Not initialised → `initialized: false` and the `init` action. `cli`: an npm install's version "
                "comes from its package.json (no Node started); otherwise this request waits for the start-up "
                "`openspec --version`, up to 5 s, and only past that says `detecting: true`.",
                "tags": [TAG],
                "parameters": [_WORKSPACE],
                "responses": {"200": json_response("The state", ref("OpenSpecState")), **errors(404)},
            }
        },
        PREFIX + "/actions/{action}": {
            "post": {
                "summary": "Carry out a workflow action: an agent session running its slash command",
                "description": "Starts an agent session whose prompt is the action's slash command "
                "(`/opsx:apply add-login`, plus `input`) and returns it (201). `init` runs "
                "`openspec init --tools claude` instead (201 `{initialized, output}`; 422 "
                "`openspec_cli_unavailable` without the CLI). 400 `unknown_action` or `invalid_field` (a missing "
                "`change` or `input`); 404 `change_not_found`; 409 `action_not_available` with the reason (it "
                "does not apply now, or it is not in the profile in effect); 422 "
                "`agent_unavailable`; 429 `too_many_sessions`; 502 `openspec_cli_failed`.",
                "tags": [TAG],
                "parameters": [
                    _WORKSPACE,
                    {**path_param("action", "The workflow action"), "schema": {"enum": list(ACTIONS)}},
                ],
                "requestBody": {"required": False, "content": json_content(ref("OpenSpecActionRequest"))},
                "responses": {
                    "201": json_response(
                        "Started (the agent session) or, for init, initialised",
                        {"oneOf": [ref("AgentSession"), ref("OpenSpecInitialized")]},
                    ),
                    **errors(400, 404, 409, 422, 429, 502),
                },
            }
        },
    },
}
