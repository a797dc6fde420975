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
        "description": "`command` or `shell` (not both); neither with `pty`: the login shell. A `command` whose "
        "program cannot be started answers 422 `spawn_failed`; a `cwd` that does not exist 404.",
        "anyOf": [
            {"required": ["command"], "properties": {"command": {"type": "array"}}},
            {"required": ["shell"], "properties": {"shell": {"type": "string"}}},
            {"required": ["pty"], "properties": {"pty": {"type": "object"}}},
        ],
        "not": {
            "required": ["command", "shell"],
            "properties": {"command": {"type": "array"}, "shell": {"type": "string"}},
        },
        "properties": {
            "command": {
                "type": ["array", "null"],
                "prefixItems": [{"minLength": 1}],
                "items": _NUL_FREE,
                "minItems": 1,
                "maxItems": MAX_ARGS,
                "description": "an argv list, never given to a shell; the program is looked up on `PATH`",
                "example": ["echo", "hello"],
            },
            "shell": {
                **_NUL_FREE,
                "type": ["string", "null"],
                "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$",
                "description": "a line for `/bin/sh -c` instead (not blank)",
            },
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
        "description": "`data` or `data_base64` (not both), and/or `eof: true`",
        "anyOf": [
            {"required": ["data"], "properties": {"data": {"type": "string"}}},
            {"required": ["data_base64"], "properties": {"data_base64": {"type": "string"}}},
            {"required": ["eof"], "properties": {"eof": {"const": True}}},
        ],
        "not": {
            "required": ["data", "data_base64"],
            "properties": {"data": {"type": "string"}, "data_base64": {"type": "string"}},
        },
        "properties": {
            "data": {"type": ["string", "null"], "description": "text, sent as UTF-8"},
            "data_base64": {
                "type": ["string", "null"],
                "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                "description": "bytes",
            },
            "eof": {"type": "boolean", "default": False, "description": "close the stdin pipe (a terminal gets ^D)"},
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

# The frames of `WS /api/v1/ws/processes/{id}` and `WS /api/v1/ws/scripts/runs/{id}` (one stream engine).
_SEQ = {"type": "integer", "minimum": 1, "description": "numbers the output frames of one process or run"}
schemas.update(
    {
        "StreamHelloFrame": {
            "type": "object",
            "required": ["type", "process"],
            "description": "A process stream's first frame. `offset` (terminals): the number of the next byte",
            "properties": {
                "type": {"const": "hello"},
                "process": ref("Process"),
                "offset": {"type": "integer", "minimum": 0},
                "truncated": {"type": "boolean", "description": "bytes before `offset` were asked for but not kept"},
            },
        },
        "StreamOutputFrame": {
            "type": "object",
            "required": ["type", "stream", "data", "seq"],
            "description": "Output of a process on pipes or a script run (a terminal's comes as binary frames)",
            "properties": {
                "type": {"const": "output"},
                "stream": {"enum": ["stdout", "stderr"]},
                "data": {"type": "string", "description": "UTF-8 decoded incrementally; undecodable bytes are U+FFFD"},
                "seq": _SEQ,
            },
        },
        "StreamOutputDroppedFrame": {
            "type": "object",
            "required": ["type", "frames", "next_seq"],
            "description": "Output frames asked for that are no longer kept",
            "properties": {
                "type": {"const": "output_dropped"},
                "frames": {"type": "integer", "minimum": 1},
                "next_seq": _SEQ,
            },
        },
        "StreamExitFrame": {
            "type": "object",
            "required": ["type", "code", "status", "signal"],
            "description": "The last frame; the socket then closes with 1000",
            "properties": {
                "type": {"const": "exit"},
                "code": {"type": ["integer", "null"]},
                "status": {"type": "string", "description": "the process's or run's final status"},
                "signal": {"type": ["string", "null"]},
            },
        },
        "StreamFrame": {
            "description": "Any text frame a process or script-run stream sends",
            "oneOf": [
                ref("StreamHelloFrame"),
                ref("StreamOutputFrame"),
                ref("StreamOutputDroppedFrame"),
                ref("StreamExitFrame"),
                ref("SocketReply"),
            ],
        },
        "ProcessClientFrame": {
            "description": "What a client sends on a process stream (a terminal also takes binary frames: keystrokes)",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "data"],
                    "properties": {"type": {"const": "input"}, "data": {"type": "string"}},
                },
                {"type": "object", "required": ["type"], "properties": {"type": {"const": "eof"}}},
                {
                    "type": "object",
                    "required": ["type", "cols", "rows"],
                    "properties": {"type": {"const": "resize"}, "cols": _SIZE, "rows": _SIZE},
                },
                {
                    "type": "object",
                    "required": ["type", "signal"],
                    "properties": {"type": {"const": "signal"}, "signal": {"enum": list(SIGNALS)}},
                },
            ],
        },
    }
)

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
                '`input`, `{"type": "eof"}` and `signal`. A bad frame is answered with a `SocketReply` '
                '`{"type": "reply", "ok": false, "error"}`. At the end `{"type": "exit", "code", "signal", '
                '"status"}` and close 1000. A client more than 4 MiB behind whose socket takes nothing for 5 s is '
                "closed with 1013.",
                [TAG],
                [_ID, query_param("after", {"type": "integer", "minimum": 0}, "bytes (terminal) or seq (pipes) held")],
            )
        },
    },
}
