"""The OpenAPI description of the script routes (joined into ``/openapi.json`` by app.py)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.openapi import errors, json_content, json_response, path_param, query_param, ref, websocket_operation
from wsruntime_ext.scripts.handlers import MAX_ARGS, MAX_ENV, MAX_VALUE
from wsruntime_ext.scripts.service import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, OUTPUT_TAIL, STATUSES

TAG = "scripts"
_RUN_ID = path_param("run_id", "The run id (`sr_…`)")
_NAME = path_param(
    "name",
    "`npm:build`, `make:test`, `scripts:deploy.sh`, `custom:x` — or the part after the prefix when exactly one "
    "script has it (percent-encode a `/` in a make target)",
)
_NULLABLE_STR = {"type": ["string", "null"]}
_NUL_FREE = {"type": "string", "pattern": "^[^\\x00]*$", "maxLength": MAX_VALUE}

_RUN_PROPERTIES: dict[str, Any] = {
    "run_id": {"type": "string"},
    "name": {"type": "string", "description": "the script's prefixed name"},
    "source": {"enum": ["package.json", "Makefile", "scripts/", "scripts.json"]},
    "status": {
        "enum": list(STATUSES),
        "description": "`interrupted`: the runtime stopped (or died) while the script ran; its tree was killed "
        "at a graceful stop",
    },
    "command": {"type": "array", "items": {"type": "string"}, "description": "the argv run, `args` included"},
    "cwd": {"type": "string", "description": "workspace-relative"},
    "started_at": {"type": "string"},
    "ended_at": _NULLABLE_STR,
    "exit_code": {"type": ["integer", "null"], "description": "null while running or when ended by a signal"},
    "signal": {**_NULLABLE_STR, "description": "the signal that ended it (`SIGTERM`, `SIGKILL`), if one did"},
    "timeout_s": {"type": "number"},
    "pid": {"type": ["integer", "null"]},
    "output_bytes": {"type": "integer", "minimum": 0, "description": "bytes the script wrote to stdout and stderr"},
    "output_dropped_bytes": {
        "type": "integer",
        "minimum": 0,
        "description": "stored output deleted because the run's output passed --script-output-limit (oldest first)",
    },
    "last_seq": {"type": "integer", "minimum": 0, "description": "the seq of the last output frame"},
    "error": _NULLABLE_STR,
}
_RUN_REQUIRED = ["run_id", "name", "status", "command", "started_at", "exit_code", "last_seq"]

schemas: dict[str, Any] = {
    "ScriptRunEvent": {
        "type": "object",
        "required": ["type", "run_id", "name", "status", "exit_code", "seq"],
        "description": "On `WS /api/v1/ws` when a script run starts or ends",
        "properties": {
            "type": {"const": "script_run"},
            "run_id": {"type": "string"},
            "name": {"type": "string"},
            "status": {"enum": list(STATUSES)},
            "exit_code": {"type": ["integer", "null"]},
            "seq": {"type": "integer", "minimum": 0, "description": "the hub's sequence number"},
        },
    },
    "Script": {
        "type": "object",
        "required": ["name", "source", "command"],
        "properties": {
            "name": {"type": "string"},
            "source": {"enum": ["package.json", "Makefile", "scripts/", "scripts.json"]},
            "command": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "manager": {"enum": ["npm", "pnpm", "yarn", "bun"], "description": "package.json scripts: who runs them"},
            "cwd": {"type": "string", "description": "scripts.json entries: workspace-relative"},
        },
    },
    "ScriptProblem": {
        "type": "object",
        "required": ["source", "message"],
        "properties": {"source": {"type": "string"}, "message": {"type": "string"}},
    },
    "ScriptRunRequest": {
        "type": "object",
        "properties": {
            "args": {
                "type": ["array", "null"],
                "items": _NUL_FREE,
                "maxItems": MAX_ARGS,
                "description": "appended to the command as separate argv entries (never through a shell; npm "
                "gets a `--` before them)",
            },
            "env": {
                "type": ["object", "null"],
                "maxProperties": MAX_ENV,
                "propertyNames": {"pattern": "^[^=\\x00]+$"},
                "additionalProperties": _NUL_FREE,
                "description": "merged over the runtime's environment (and a scripts.json entry's `env`)",
            },
            "timeout_s": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT_S,
                "default": DEFAULT_TIMEOUT_S,
                "description": "then the whole process tree is killed (SIGTERM, SIGKILL 2 s later): `timed_out`",
            },
        },
    },
    "ScriptRun": {"type": "object", "required": _RUN_REQUIRED, "properties": _RUN_PROPERTIES},
    "ScriptRunWithOutput": {
        "type": "object",
        "required": [*_RUN_REQUIRED, "output", "output_truncated"],
        "properties": {
            **_RUN_PROPERTIES,
            "output": {
                "type": "string",
                "description": f"stdout and stderr as they came, at most the last {OUTPUT_TAIL} characters",
            },
            "output_truncated": {
                "type": "boolean",
                "description": "true when `output` is not all the script wrote (the tail is kept)",
            },
        },
    },
}

_RUN = json_response("The run", ref("ScriptRun"))
_RUN_WITH_OUTPUT = json_response("The run and its output so far", ref("ScriptRunWithOutput"))

openapi: dict[str, Any] = {
    "tags": [{"name": TAG, "description": "What the workspace offers to run, and runs of it"}],
    "schemas": schemas,
    "paths": {
        "/api/v1/scripts": {
            "get": {
                "summary": "The scripts this workspace offers",
                "description": "`package.json` scripts (`npm:`, run with the manager its lock file names), "
                '`Makefile` targets (`make:`, `command` `["make", "<target>"]`, run so in the workspace '
                "root: the targets of the file make picks there, `GNUmakefile`, else `makefile`, else `Makefile`), "
                "executable files in `scripts/` (`scripts:`), and "
                "`.wsruntime/scripts.json` entries (`custom:`). A source that cannot be read (malformed JSON, "
                "make missing) is reported in `problems`.",
                "tags": [TAG],
                "responses": {
                    "200": json_response(
                        "Scripts",
                        {
                            "type": "object",
                            "required": ["scripts", "problems"],
                            "properties": {
                                "scripts": {"type": "array", "items": ref("Script")},
                                "problems": {"type": "array", "items": ref("ScriptProblem")},
                            },
                        },
                    )
                },
            }
        },
        "/api/v1/scripts/{name}/run": {
            "post": {
                "summary": "Run a script",
                "description": "202 with the run at once; with `?wait=true` 200 when it has ended (at most "
                "`timeout_s`), with its output. A client that disconnects while waiting does not stop the run. "
                "404 `script_not_found`, 409 `ambiguous_script` (with `candidates`), 422 `command_unavailable` "
                "(e.g. the lock file names pnpm and pnpm is not installed) or `cwd_not_found`, 429 "
                "`too_many_runs` (--max-runs).",
                "tags": [TAG],
                "parameters": [
                    _NAME,
                    query_param("wait", {"type": "boolean", "default": False}, "wait for the end, answer 200"),
                ],
                "requestBody": {"required": False, "content": json_content(ref("ScriptRunRequest"))},
                "responses": {
                    "200": _RUN_WITH_OUTPUT,
                    "202": json_response("Started", ref("ScriptRun")),
                    **errors(404, 409, 422, 429),
                },
            }
        },
        "/api/v1/scripts/runs": {
            "get": {
                "summary": "Recent runs, newest first",
                "description": "The last 200 ended runs are kept (with their output, on disk), and every running one.",
                "tags": [TAG],
                "parameters": [
                    query_param("status", {"enum": list(STATUSES)}, "only runs with this status"),
                    query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "at most"),
                ],
                "responses": {
                    "200": json_response(
                        "Runs",
                        {
                            "type": "object",
                            "required": ["runs"],
                            "properties": {"runs": {"type": "array", "items": ref("ScriptRun")}},
                        },
                    )
                },
            }
        },
        "/api/v1/scripts/runs/{run_id}": {
            "get": {
                "summary": "One run: status, exit code, the output so far",
                "tags": [TAG],
                "parameters": [_RUN_ID],
                "responses": {"200": _RUN_WITH_OUTPUT, **errors(404)},
            },
            "delete": {
                "summary": "Cancel a run",
                "description": "SIGTERM, then SIGKILL after 2 s, to the script and every process it started "
                "(also those that left its process group or session): `cancelled`. An ended run is returned "
                "unchanged.",
                "tags": [TAG],
                "parameters": [_RUN_ID],
                "responses": {"200": _RUN, **errors(404)},
            },
        },
        "/api/v1/ws/scripts/runs/{run_id}": {
            "get": websocket_operation(
                "A run's output stream",
                'Every stored output frame after `after`, then live ones, in order: `{"type": "output", "seq", '
                '"stream": "stdout"|"stderr", "data"}`; when the run has ended, one `{"type": "exit", "code", '
                '"status", "signal"}` frame, then close 1000. Output older than the run keeps '
                '(--script-output-limit) is replaced by one `{"type": "output_dropped", "frames", "next_seq"}` '
                "frame. A client more than 4 MiB behind whose socket takes nothing for 5 s is closed with 1013: "
                "reconnect with `?after=` (the same stream as a process's, `WS /api/v1/ws/processes/{id}`).",
                [TAG],
                [_RUN_ID, query_param("after", {"type": "integer", "minimum": 0}, "replay only seq > after")],
            )
        },
    },
}
