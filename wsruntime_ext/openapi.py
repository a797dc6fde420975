"""Routes and their OpenAPI description, declared side by side by every module.

A module lists ``handlers = [route("/api/v1/x/{id}", XHandler), ...]`` and
``openapi = {"paths": {...}, "schemas": {...}}`` next to them; :func:`build_document`
joins every module's part into the OpenAPI 3.1 document served at
``/openapi.json``, and a test checks that routes and document agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import tornado.routing

from wsruntime_ext import __version__

_PARAM = re.compile(r"\{([a-z_]+)\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "snake_case error code"},
                "message": {"type": "string", "description": "a human sentence"},
                "details": {"type": "object"},
            },
        }
    },
}

SOCKET_REPLY_SCHEMA = {
    "type": "object",
    "required": ["type", "ok", "error"],
    "description": "The answer to a client frame that an agent-session or process stream refused (not JSON, an "
    "unknown type, a bad field, a process without stdin…): the error as an HTTP call would give it. No `seq`: "
    "not part of the stream, never replayed; the socket stays open.",
    "properties": {"type": {"const": "reply"}, "ok": {"const": False}, "error": ERROR_SCHEMA["properties"]["error"]},
}

_ERROR_TEXT = {
    400: "Bad input",
    401: "Missing or wrong bearer token",
    403: "Forbidden: host, origin or path not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    412: "Precondition failed",
    413: "Request body too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    422: "Well-formed but unusable",
    426: "Upgrade required: a WebSocket version this server does not speak",
    500: "Internal error",
    502: "A subprocess or remote failed",
    504: "Timed out",
    507: "Insufficient storage: the disk is full",
}


class _MethodPathMatches(tornado.routing.PathMatches):
    """A path that matches only for some methods, so that other methods fall through to later routes."""

    def __init__(self, pattern: str, methods: Iterable[str]) -> None:
        super().__init__(pattern)
        self.methods = frozenset(methods)

    def match(self, request: Any) -> dict[str, Any] | None:
        if request.method not in self.methods:
            return None
        return super().match(request)


def route(
    template: str, handler: type, methods: Iterable[str] | None = None, **patterns: str
) -> tornado.routing.URLSpec:
    """A Tornado route from an OpenAPI path template: ``{name}`` matches one segment
    unless ``patterns`` gives its own regex (``path=".*"``). With ``methods`` the route
    matches only those methods (and CORS preflights); others fall through to the next route,
    so ``POST /api/v1/files/upload`` can coexist with reading a file named ``upload``."""

    def group(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"(?P<{name}>{patterns.get(name, '[^/]+')})"

    regex = _PARAM.sub(group, re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
    spec = tornado.routing.URLSpec(regex + "$", handler, name=template)
    if methods is not None:
        spec.matcher = _MethodPathMatches(regex + "$", [*methods, "OPTIONS"])
    return spec


def ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema)}


def error_response(status: int) -> dict[str, Any]:
    return {"description": _ERROR_TEXT.get(status, "Error"), "content": json_content(ref("Error"))}


def errors(*statuses: int) -> dict[str, Any]:
    """Responses for the given error statuses, all in the one error shape."""
    return {str(s): error_response(s) for s in statuses}


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def query_param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    """A query parameter; by the API's one rule it is never empty but for ``path`` (``""`` is the root)."""
    if schema.get("type") == "string" and name != "path" and "enum" not in schema:
        schema = {**schema, "minLength": max(1, schema.get("minLength", 1))}
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def websocket_operation(
    summary: str, description: str, tags: list[str], parameters: list[Any] | None = None
) -> dict[str, Any]:
    """How a WebSocket endpoint is documented: a GET with the handshake's headers that upgrades (101)."""
    return {
        "summary": summary,
        "description": description + "\n\nA WebSocket: the token may also be passed as `?token=`.",
        "tags": tags,
        "x-websocket": True,
        "parameters": [
            *(parameters or []),
            query_param("token", {"type": "string"}, "The bearer token (browsers cannot set headers on a WebSocket)"),
            *WEBSOCKET_HANDSHAKE,
        ],
        "responses": {
            "101": {"description": "Switching protocols: the stream begins"},
            **errors(400, 404, 426),
        },
    }


def _handshake_header(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": "part of every WebSocket handshake (browsers and WebSocket libraries send it themselves)",
        "schema": {"type": "string", **schema},
    }


# Without them a request is no WebSocket handshake (400); an unsupported version is 426.
WEBSOCKET_HANDSHAKE = [
    _handshake_header("Upgrade", {"const": "websocket"}),
    _handshake_header("Connection", {"const": "Upgrade"}),
    _handshake_header("Sec-WebSocket-Version", {"const": "13"}),
    _handshake_header("Sec-WebSocket-Key", {"pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"}),  # 16 random bytes
]


def build_document(modules: Iterable[Any], open_paths: Iterable[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document: every module's paths and schemas, plus what all operations share."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, "SocketReply": SOCKET_REPLY_SCHEMA}
    tags: list[dict[str, str]] = []
    open_set = set(open_paths)
    for module in modules:
        part = getattr(module, "openapi", None)
        if not part:
            continue
        schemas.update(part.get("schemas", {}))
        tags.extend(part.get("tags", []))
        for template, operations in part.get("paths", {}).items():
            target = paths.setdefault(template, {})
            for method, operation in operations.items():
                operation = dict(operation)
                responses = dict(operation.get("responses", {}))
                # Every request passes the host and origin checks; secured ones the token check.
                responses.setdefault("403", error_response(403))
                if template in open_set:
                    operation["security"] = []
                else:
                    responses.setdefault("401", error_response(401))
                # ... and the query rule (a repeated, empty or non-UTF-8 parameter → 400), whatever it declares.
                responses.setdefault("400", error_response(400))
                if "requestBody" in operation:
                    responses.setdefault("413", error_response(413))
                operation["responses"] = dict(sorted(responses.items()))
                operation.setdefault("operationId", _operation_id(method, template))
                target[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wsruntime — Workspace Runtime API",
            "version": __version__,
            "description": "Drive one developer workspace over HTTP and WebSocket: files, git, "
            "agent sessions, OpenSpec, Claude Code settings, scripts and live events. "
            'Errors always have the shape `{"error": {"code", "message", "details"}}`. '
            "Query parameters are given at most once and never empty (but `path`, where `path=` is the "
            "workspace root): a repeated, empty or non-UTF-8 one → 400 `invalid_parameter`. "
            "JSON bodies and WebSocket text frames are strict JSON: `NaN`, `Infinity`, a number out of a double's "
            "range or a string with a lone surrogate (`\\ud800`) → 400 `invalid_json`.",
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation_id(method: str, template: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", template.replace("api/v1", "")) if w]
    return method + "".join(w[:1].upper() + w[1:] for w in words)
