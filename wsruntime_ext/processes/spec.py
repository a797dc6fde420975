"""The OpenAPI description of the process routes (joined into ``/openapi.json`` by app.py)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.openapi import errors, json_content, json_response, path_param, query_param, ref, websocket_operation
from wsruntime_ext.processes.handlers import MAX_ARGS, MAX_ENV, MAX_NAME, MAX_SIZE, MAX_TIMEOUT_S, MAX_VALUE
from wsruntime_ext.processes.service import SIGNALS, STATUSES, WAIT_TAIL

TAG = "processes"
_ID = path_param("process_id", "The process id (`proc_…`)")
_NULLABLE_STR = {"type": ["string", "null"]}
_NUL_FREE = {"type": "string", "pattern": "^[^\\x00]*$", "maxLength": MAX_VALUE}
_SIZE = {"type": "integer", "minimum": 1, "maximum": MAX_SIZE}
_WINDOW = {"type": "object", "required": ["cols", "rows"], "properties": {"cols": _SIZE, "rows": _SIZE}}

_PROCESS_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "name": _NULLABLE_STR,
    "pid": {"type": ["integer", "null"], "description": "null once it has ended"},
    "command": {"type": "array", "items": {"type": "string"}, "description": "the argv run"},
    "cwd": {"type": "string", "description": "workspace-relative"},
    "pty": {**_WINDOW, "type": ["object", "null"], "description": "the terminal's size (follows resizes), or null"},
    "stdin": {"type": "boolean", "description": "whether it takes input (a terminal always does)"},
    "status": {
        "enum": list(STATUSES),
        "description": "`exited` (with `exit_code`), `killed` (by a signal, also after DELETE), `timed_out`, "
        "`interrupted` (the runtime stopped, crashed or restarted while it ran)",
    },
    "exit_code": {"type": ["integer", "null"], "description": "null while running or when ended by a signal"},
    "signal": {**_NULLABLE_STR, "description": "the signal that ended it or that it was stopped with"},
    "created_at": {"type": "string"},
    "ended_at": _NULLABLE_STR,
    "timeout_s": {"type": ["number", "null"]},
    "output_bytes": {"type": "integer", "minimum": 0, "description": "every byte it wrote (both streams)"},
    "last_seq": {"type": "integer", "minimum": 0, "description": "pipes: the seq of the last output frame"},
    "output_dropped_bytes": {
        "type": "integer",
        "minimum": 0,
        "description": "pipes: stored output deleted past --process-output-limit (oldest first)",
    },
    "error": _NULLABLE_STR,
}
_REQUIRED = ["id", "name", "pid", "command", "cwd", "pty", "status", "exit_code", "signal", "created_at"]
_REQUIRED += ["ended_at", "output_bytes"]

schemas: dict[str, Any] = {
    "ProcessRequest": {
        "type": "object",
        "description": "`command` or `shell` (not both); neither with `pty`: the login shell",
        "anyOf": [
            {"required": ["command"], "properties": {"command": {"type": "array"}}},
            {"required": ["shell"], "properties": {"shell": {"type": "string"}}},
            {"required": ["pty"], "properties": {"pty": {"type": "object"}}},
        ],
        "properties": {
            "command": {
                "type": ["array", "null"],
                "items": _NUL_FREE,
                "minItems": 1,
                "maxItems": MAX_ARGS,
                "description": "an argv list, never given to a shell",
            },
            "shell": {**_NUL_FREE, "type": ["string", "null"], "description": "a line for `/bin/sh -c` instead"},
            "cwd": {"type": ["string", "null"], "description": "workspace-relative, jailed; must exist (404)"},
            "env": {
                "type": ["object", "null"],
                "maxProperties": MAX_ENV,
                "propertyNames": {"pattern": "^[^=\\x00]+$"},
                "additionalProperties": _NUL_FREE,
                "description": "merged over the runtime's environment (without its token)",
            },
            "stdin": {"type": ["boolean", "null"], "description": "pipes: keep a stdin pipe open for input"},
            "timeout_s": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT_S,
                "description": "then the whole tree is stopped: `timed_out`",
            },
            "pty": {**_WINDOW, "type": ["object", "null"], "description": "run under a pseudo-terminal this size"},
            "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
        },
    },
    "Process": {"type": "object", "required": _REQUIRED, "properties": _PROCESS_PROPERTIES},
    "ProcessWithOutput": {
        "type": "object",
        "required": [*_REQUIRED, "stdout", "stderr", "stdout_truncated", "stderr_truncated"],
        "properties": {
            **_PROCESS_PROPERTIES,
            "stdout": {"type": "string", "description": f"the last {WAIT_TAIL} characters at most"},
            "stderr": {"type": "string", "description": f"the last {WAIT_TAIL} characters at most"},
            "stdout_truncated": {"type": "boolean"},
            "stderr_truncated": {"type": "boolean"},
        },
    },
    "ProcessInput": {
        "type": "object",
        "properties": {
            "data": {"type": "string", "description": "text, sent as UTF-8"},
            "data_base64": {"type": "string", "description": "bytes"},
            "eof": {"type": "boolean", "description": "close the stdin pipe (a terminal gets ^D)"},
        },
    },
    "ProcessSignal": {
        "type": "object",
        "required": ["signal"],
        "properties": {"signal": {"enum": list(SIGNALS)}},
    },
    "ProcessResize": _WINDOW,
    "ProcessEvent": {
        "type": "object",
        "description": "On `WS /api/v1/ws` when a process starts or ends",
        "required": ["type", "id", "status", "exit_code"],
        "properties": {
            "type": {"const": "process"},
            "id": {"type": "string"},
            "status": {"enum": list(STATUSES)},
            "exit_code": {"type": ["integer", "null"]},
        },
    },
}

_PROCESS = json_response("The process", ref("Process"))

openapi: dict[str, Any] = {
    "tags": [{"name": TAG, "description": "Processes on pipes (exec) and under pseudo-terminals (terminals)"}],
    "schemas": schemas,
    "paths": {
        "/api/v1/processes": {
            "post": {
                "summary": "Start a process or a terminal",
                "description": "`command` (argv) or `shell` (`/bin/sh -c`); with `pty` and neither, the login shell "
                "(`$SHELL`, else bash, else sh) under a pseudo-terminal (`TERM=xterm-256color`). 201 with the "
                "process; `?wait=true` (pipes only) waits for the end and answers 200 with `stdout` and `stderr`. "
                "404 `not_found` (cwd), 422 `spawn_failed` (not found, not executable), 429 `too_many_processes` "
                "(--max-processes).",
                "tags": [TAG],
                "parameters": [
                    query_param("wait", {"type": "boolean", "default": False}, "wait for the end, answer 200"),
                ],
                "requestBody": {"required": True, "content": json_content(ref("ProcessRequest"))},
                "responses": {
                    "200": json_response("Ended, with its output", ref("ProcessWithOutput")),
                    "201": json_response("Started", ref("Process")),
                    **errors(404, 422, 429),
                },
            },
            "get": {
                "summary": "Processes, newest first",
                "description": "Every running one and the newest 200 ended ones.",
                "tags": [TAG],
                "parameters": [
                    query_param("status", {"enum": list(STATUSES)}, "only processes with this status"),
                    query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}, "at most"),
                ],
                "responses": {
                    "200": json_response(
                        "Processes",
                        {
                            "type": "object",
                            "required": ["processes"],
                            "properties": {"processes": {"type": "array", "items": ref("Process")}},
                        },
                    )
                },
            },
        },
        "/api/v1/processes/{process_id}": {
            "get": {
                "summary": "One process",
                "tags": [TAG],
                "parameters": [_ID],
                "responses": {"200": _PROCESS, **errors(404)},
            },
            "delete": {
                "summary": "Stop it and everything it started",
                "description": "SIGHUP (terminal) or SIGTERM, then SIGKILL after 2 s, to the process and every "
                "descendant (also those that left its session); answers when it has ended: `killed`. An ended "
                "process is returned unchanged.",
                "tags": [TAG],
                "parameters": [_ID],
                "responses": {"200": _PROCESS, **errors(404)},
            },
        },
        "/api/v1/processes/{process_id}/input": {
            "post": {
                "summary": "Write to its stdin or its terminal",
                "description": "409 `stdin_closed` (no stdin pipe, or after eof), 409 `process_ended`.",
                "tags": [TAG],
                "parameters": [_ID],
                "requestBody": {"required": True, "content": json_content(ref("ProcessInput"))},
                "responses": {
                    "200": json_response(
                        "Written",
                        {"type": "object", "required": ["written"], "properties": {"written": {"type": "integer"}}},
                    ),
                    **errors(404, 409),
                },
            }
        },
        "/api/v1/processes/{process_id}/signal": {
            "post": {
                "summary": "Send a signal",
                "description": "A terminal's goes to its foreground process group (as Ctrl-C would); else to the "
                "process. 400 `invalid_signal`, 409 `process_ended`.",
                "tags": [TAG],
                "parameters": [_ID],
                "requestBody": {"required": True, "content": json_content(ref("ProcessSignal"))},
                "responses": {"200": _PROCESS, **errors(404, 409)},
            }
        },
        "/api/v1/processes/{process_id}/resize": {
            "post": {
                "summary": "Resize the terminal",
                "description": "The kernel's window size: the program inside gets SIGWINCH. 409 `not_a_terminal`, "
                "409 `process_ended`.",
                "tags": [TAG],
                "parameters": [_ID],
                "requestBody": {"required": True, "content": json_content(ref("ProcessResize"))},
                "responses": {"200": _PROCESS, **errors(404, 409)},
            }
        },
        "/api/v1/ws/processes/{process_id}": {
            "get": websocket_operation(
                "A process's output, live and replayable; its input too",
                'First a text frame `{"type": "hello", "process", "offset"?, "truncated"}`. A **terminal** sends '
                "its output as binary frames of raw bytes, numbered from 0 over its life: `after` is the number "
                "of bytes the client has; the stream resumes there, or at the oldest byte kept "
                "(--terminal-scrollback) with `truncated: true`; `offset` is the number of the next byte. The "
                'client sends binary frames (keystrokes) or `{"type": "input", "data"}`, `{"type": "resize", '
                '"cols", "rows"}`, `{"type": "signal", "signal"}`. A process on **pipes** sends text frames '
                '`{"type": "output", "stream": "stdout"|"stderr", "data", "seq"}` (as a script run; `after` is '
                'a seq; output older than kept → `{"type": "output_dropped", "frames", "next_seq"}`), and takes '
                '`input`, `{"type": "eof"}` and `signal`. A bad frame is answered `{"type": "reply", "ok": false, '
                '"error"}`. At the end `{"type": "exit", "code", "signal", "status"}` and close 1000. A client '
                "more than 4 MiB behind whose socket takes nothing for 5 s is closed with 1013.",
                [TAG],
                [_ID, query_param("after", {"type": "integer", "minimum": 0}, "bytes (terminal) or seq (pipes) held")],
            )
        },
    },
}
