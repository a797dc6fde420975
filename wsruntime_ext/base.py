"""The ground floor every HTTP endpoint stands on: one error shape, the security and query checks.

API.md "Conventions": errors are ``{"error": {"code", "message", "details"}}``;
the Host, Origin and token rules live in ``security.py`` and are applied
here (``JsonErrorsMixin``, shared with ``websocket.ApiWebSocket``); bodies
are bounded, and a refusal never breaks a keep-alive connection.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
from asyncio import Future
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.web
import tornado.websocket

from wsruntime_ext import __version__

if TYPE_CHECKING:
    from wsruntime_ext.context import Context
    from wsruntime_ext.security import Security

log = logging.getLogger("wsruntime")
access_log = logging.getLogger("wsruntime.access")

JSON_BODY_LIMIT = 4 << 20  # 4 MiB for JSON endpoints; file writes raise their own limit
DRAIN_LIMIT = 64 << 20  # an oversized body up to this much more is read and discarded before the 413
REFUSAL_DRAIN_LIMIT = 1 << 20  # the body of a refused request (401, 403, 404) up to this is read and discarded
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, If-Range, If-Modified-Since, Range"
CORS_EXPOSE_HEADERS = "ETag, Last-Modified, Accept-Ranges, Content-Range, Content-Length, Location"

# Query parameters whose empty value means something: ``path=`` is the workspace root (API.md "Paths").
EMPTY_QUERY_ALLOWED = frozenset({"path"})
SERVER_HEADER = f"wsruntime/{__version__}"
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&]*", re.IGNORECASE)

# Default codes for errors raised by Tornado itself rather than by us.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    412: "precondition_failed",
    413: "body_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable",
    426: "upgrade_required",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
    507: "insufficient_storage",
}


class ApiError(tornado.web.HTTPError):
    """An error rendered as API.md's JSON shape; raise it from any handler."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.code = code
        self.message = message
        self.details = details


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the start of a JSON escape of a UTF-16 surrogate
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_a_json_value(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):  # a literal like 1e400: it would be written back as Infinity
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def loads_client_json(data: str | bytes | bytearray) -> Any:
    """``json.loads`` for what a client sends (bodies, WebSocket frames); ValueError saying what is wrong.

    Stricter than Python's: NaN, Infinity and numbers out of a double's range are refused (they are not
    JSON, and what the runtime stores — settings, MCP servers — must stay readable by every JSON
    reader), and so are strings with a lone surrogate (a ``\\ud800`` escape without its pair), which
    cannot be written as UTF-8; nesting too deep for the parser is a ValueError too. The common body has no
    surrogate escape at all: only then is the value walked.
    """
    try:
        value = json.loads(data, parse_constant=_not_a_json_value, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    pattern = _SURROGATE_ESCAPE if isinstance(data, str) else _SURROGATE_ESCAPE_BYTES
    if pattern.search(data):  # type: ignore[arg-type]
        _check_unicode(value)
    return value


def _check_unicode(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            texts: Any = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        elif isinstance(item, str):
            texts = (item,)
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff without its pair)") from None


def redact(uri: str) -> str:
    """The URI with any ``token=`` query value masked, for logs."""
    return _TOKEN_IN_QUERY.sub(r"\1***", uri)


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: one line per request, tokens masked."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if status < 400 and handler.request.path == "/health":
        level = logging.DEBUG  # liveness probes every few seconds would drown everything else
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%d %s %s %.2fms",
            status,
            request.method,
            redact(request.uri or ""),
            1000.0 * request.request_time(),
            extra={"remote_ip": request.remote_ip},
        )


def implemented_methods(handler_class: type) -> list[str]:
    """The HTTP methods a handler class really implements (Tornado's defaults answer 405)."""
    unimplemented = tornado.web.RequestHandler._unimplemented_method
    return [m for m in HTTP_METHODS if getattr(handler_class, m.lower(), unimplemented) is not unimplemented]


class JsonErrorsMixin:
    """One ``write_error`` and the security checks, shared by HTTP and WebSocket handlers."""

    request: Any
    application: Any
    auth_required = True  # False for /health, /openapi.json and /docs
    token_in_query = False  # True for WebSockets: browsers cannot set their headers

    @property
    def ctx(self) -> Context:
        return self.application.settings["ctx"]  # type: ignore[no-any-return]

    def check_security(self) -> None:
        """Host, then origin, then token; raises ApiError on the first that fails."""
        security: Security = self.ctx.security
        host = self.request.headers.get("Host", "")
        if not security.host_ok(host):
            raise ApiError(
                403,
                "host_not_allowed",
                f"Host {host!r} is not allowed; use a loopback address, or configure a token",
            )
        origin = self.request.headers.get("Origin")
        if origin is not None and not security.origin_ok(origin, host, self.request.protocol):
            raise ApiError(403, "origin_not_allowed", f"Origin {origin!r} is not allowed (see --allow-origin)")
        if self.auth_required and not security.token_ok(self.supplied_token()):
            raise ApiError(401, "unauthorized", "A valid bearer token is required (Authorization: Bearer <token>)")

    def check_query(self) -> None:
        """The API's one rule for query parameters, checked on every request before its handler runs."""
        for name in self.request.query_arguments:
            self.query(name)

    def query(self, name: str, default: str | None = None) -> str | None:
        """A query parameter, by the one rule of the whole API (README "Query parameters").

        Each parameter is given at most once and, but for ``path`` (where
        ``""`` is the workspace root), never empty: a repeated, empty or
        non-UTF-8 parameter → 400 ``invalid_parameter`` naming it.
        """
        values = self.request.query_arguments.get(name)
        if not values:
            return default
        if len(values) > 1:
            raise ApiError(
                400,
                "invalid_parameter",
                f"Query parameter {name!r} is given {len(values)} times: give it once",
                parameter=name,
            )
        if not values[0] and name not in EMPTY_QUERY_ALLOWED:
            raise ApiError(
                400,
                "invalid_parameter",
                f"Query parameter {name!r} is empty: give a value or leave it out",
                parameter=name,
            )
        try:
            text: str = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(
                400, "invalid_parameter", f"Query parameter {name!r} is not valid UTF-8", parameter=name
            ) from None
        return text

    def supplied_token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()  # type: ignore[no-any-return]
        if self.token_in_query:
            values = self.request.query_arguments.get("token")
            if values and len(values) == 1:  # two tokens are no token
                return values[0].decode("utf-8", "surrogateescape")  # type: ignore[no-any-return]
        return None

    def cors_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is None:
            return
        if self.ctx.security.origin_ok(origin, self.request.headers.get("Host", ""), self.request.protocol):
            self.set_header("Access-Control-Allow-Origin", origin)  # type: ignore[attr-defined]
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)  # type: ignore[attr-defined]
            self.add_header("Vary", "Origin")  # type: ignore[attr-defined]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message, details = exc.code, exc.message, exc.details
        elif isinstance(exc, tornado.web.HTTPError) or exc is None:
            code = _STATUS_CODES.get(status_code, "error")
            message = http.client.responses.get(status_code, "Error")
            details = {}
            if status_code == 405:
                message = f"Method {self.request.method} is not allowed here"
        else:
            # Logged with its traceback by Tornado's log_exception; never sent.
            status_code = 500
            code, message, details = "internal_error", "Internal server error", {}
        if status_code == 405:
            allowed = ", ".join([*implemented_methods(type(self)), "OPTIONS"])
            self.set_header("Allow", allowed)  # type: ignore[attr-defined]
            details = {**details, "allowed": allowed.split(", ")}
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="wsruntime"')  # type: ignore[attr-defined]
        self.set_status(status_code)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json; charset=utf-8")  # type: ignore[attr-defined]
        self.set_header("Cache-Control", "no-store")  # type: ignore[attr-defined]
        self.finish(json.dumps({"error": {"code": code, "message": message, "details": details}}))  # type: ignore[attr-defined]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            if value.status_code >= 500:
                log.warning("%d %s %s: %s", value.status_code, self.request.method, redact(self.request.uri), value)
            return
        log.error(
            "Uncaught exception in %s %s", self.request.method, redact(self.request.uri), exc_info=(typ, value, tb)
        )

    def _request_summary(self) -> str:
        return f"{self.request.method} {redact(self.request.uri or '')} ({self.request.remote_ip})"


@tornado.web.stream_request_body
class ApiHandler(JsonErrorsMixin, tornado.web.RequestHandler):
    """Base of every HTTP handler: security in ``prepare``, bounded JSON bodies, JSON output.

    Bodies are streamed so that a too-large one is refused from its
    ``Content-Length`` before it is read; ``max_body_bytes`` sets the bound.
    """

    max_body_bytes = JSON_BODY_LIMIT

    def initialize(self) -> None:
        self._body = bytearray()
        self._rejection: ApiError | None = None
        self._drained = 0
        self._drain_limit = DRAIN_LIMIT

    def set_default_headers(self) -> None:
        self.set_header("Server", SERVER_HEADER)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.cors_headers()

    def prepare(self) -> Awaitable[None] | None:
        if self.request.method == "OPTIONS":
            return None  # a preflight: answered by options() below, without a token
        try:
            self.check_security()
            self.check_query()
        except ApiError as error:
            self.refuse(error, REFUSAL_DRAIN_LIMIT)  # an unauthenticated client's body is read only so far
            return None
        length = self.request.headers.get("Content-Length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body_bytes:
                expects_continue = self.request.headers.get("Expect", "").lower() == "100-continue"
                if expects_continue or int(length) > self.max_body_bytes + DRAIN_LIMIT:
                    raise self.body_too_large()  # answered before the body is sent (or worth sending)
                self.reject_body(self.body_too_large())
        return None

    def body_too_large(self) -> ApiError:
        return ApiError(
            413, "body_too_large", f"Request body exceeds {self.max_body_bytes} bytes", limit=self.max_body_bytes
        )

    def refuse(self, error: ApiError, drain_limit: int = REFUSAL_DRAIN_LIMIT) -> None:
        """Refuse a request from ``prepare`` and keep its keep-alive connection usable.

        Tornado runs ``prepare`` of a streaming handler before the request
        body is read, and closes the connection after any answer sent that
        early. So the answer waits until the body (up to ``drain_limit``)
        has been read and thrown away; a larger body, or one the client waits
        to be invited to send (``Expect: 100-continue``), is not worth
        reading: it is answered at once, with ``Connection: close``.
        """
        length = self.request.headers.get("Content-Length", "")
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        expects_continue = self.request.headers.get("Expect", "").lower() == "100-continue"
        small = chunked or not length or (length.isdigit() and int(length) <= drain_limit)
        if (expects_continue and length != "0") or not small:
            raise error
        self._drain_limit = drain_limit
        self.reject_body(error)

    def reject_body(self, error: ApiError) -> None:
        """Refuse the request once its body has arrived.

        Answering while a client is still sending makes most clients see a
        connection reset instead of the answer, so a moderately oversized
        body is read and thrown away first (up to ``DRAIN_LIMIT``).
        """
        if self._rejection is not None:
            return  # the first refusal stands
        self._rejection = error
        self._body.clear()

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise error

        setattr(self, self.request.method.lower(), refuse)  # runs instead of the handler's method

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._finished:
            return None
        if self._rejection is not None:
            self._drained += len(chunk)
            if self._drained > self._drain_limit:
                # Not worth reading further: answer now; the connection is closed after.
                self.send_error(self._rejection.status_code, exc_info=(ApiError, self._rejection, None))
            return None
        if len(self._body) + len(chunk) > self.max_body_bytes:
            self.reject_body(self.body_too_large())
            return None
        self._body += chunk
        return None

    def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight (and plain OPTIONS): 204 with the methods this path takes."""
        methods = ", ".join([*implemented_methods(type(self)), "OPTIONS"])
        origin = self.request.headers.get("Origin")
        if origin is not None:
            if not self.ctx.security.origin_ok(origin, self.request.headers.get("Host", ""), self.request.protocol):
                raise ApiError(403, "origin_not_allowed", f"Origin {origin!r} is not allowed (see --allow-origin)")
            self.set_header("Access-Control-Allow-Methods", methods)
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_header("Allow", methods)
        self.set_status(204)

    def compute_etag(self) -> str | None:
        return None  # API answers are no-store; handlers that need an ETag set their own

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        if not self._headers_written and not self._body_received():
            # Tornado closes a connection whose request body was not read; say so, so clients do not reuse it.
            self.set_header("Connection", "close")
        return super().finish(chunk)

    def _body_received(self) -> bool:
        body_future = getattr(self.request, "_body_future", None)  # set by Tornado for streaming handlers
        return body_future is None or body_future.done()

    # -- input -----------------------------------------------------------------

    @property
    def body_bytes(self) -> bytes:
        return bytes(self._body)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or 400 ``invalid_json`` / ``invalid_body``."""
        if not self._body.strip():
            raise ApiError(400, "invalid_body", "A JSON object body is required")
        try:
            value = loads_client_json(self._body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"Body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "invalid_body", "The JSON body must be an object")
        return value

    def query_int(self, name: str, default: int, minimum: int = 0, maximum: int = 1 << 31) -> int:
        text = self.query(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(
                400, "invalid_parameter", f"Query parameter {name!r} must be an integer", parameter=name
            ) from None
        if not minimum <= value <= maximum:
            raise ApiError(
                400,
                "invalid_parameter",
                f"Query parameter {name!r} must be between {minimum} and {maximum}",
                parameter=name,
            )
        return value

    def query_bool(self, name: str, default: bool = False) -> bool:
        text = self.query(name)
        if text is None:
            return default
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ApiError(400, "invalid_parameter", f"Query parameter {name!r} must be true or false", parameter=name)

    # JSON body fields: absent or null → the default; a wrong type → 400 invalid_field naming the field.

    @staticmethod
    def field_str(body: dict[str, Any], name: str, default: str | None = None, required: bool = False) -> str | None:
        """A string field of a JSON body (``required``: absent or null → 400 too)."""
        value = body.get(name)
        if value is None:
            if required:
                raise ApiError(400, "invalid_field", f"Field {name!r} is required", field=name)
            return default
        if not isinstance(value, str):
            raise ApiError(400, "invalid_field", f"Field {name!r} must be a string", field=name)
        return value

    @staticmethod
    def field_bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
        """A boolean field of a JSON body."""
        value = body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ApiError(400, "invalid_field", f"Field {name!r} must be true or false", field=name)
        return value

    @staticmethod
    def field_str_list(body: dict[str, Any], name: str, required: bool = False) -> list[str] | None:
        """A list-of-strings field of a JSON body."""
        value = body.get(name)
        if value is None:
            if required:
                raise ApiError(400, "invalid_field", f"Field {name!r} is required", field=name)
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ApiError(400, "invalid_field", f"Field {name!r} must be a list of strings", field=name)
        return value

    # -- output ----------------------------------------------------------------

    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))

    def check_workspace(self, workspace_id: str) -> None:
        if workspace_id != self.ctx.config.workspace_id:
            raise ApiError(404, "workspace_not_found", f"No workspace {workspace_id!r} here", workspace_id=workspace_id)


class OpenHandler(ApiHandler):
    """A handler that needs no token (``/health``, ``/openapi.json``, ``/docs``)."""

    auth_required = False


class NotFoundHandler(ApiHandler):
    """The JSON catch-all for paths no module serves."""

    auth_required = False

    def prepare(self) -> None:
        try:
            self.check_security()
        except ApiError as error:
            self.refuse(error)
            return
        self.refuse(ApiError(404, "not_found", f"No such endpoint: {self.request.method} {self.request.path}"))
