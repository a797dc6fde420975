"""One error shape on every path: every registered route walked with bad input."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.conftest import TOKEN, Response, ServerPool, ServerThread
from tests.support import EXTRA
from wsruntime_ext.app import make_app
from wsruntime_ext.base import JSON_BODY_LIMIT
from wsruntime_ext.context import Context


def assert_error_shape(r: Response, where: str) -> None:
    assert r.status != 500, where
    assert r.headers["Content-Type"].startswith("application/json"), where
    body = json.loads(r.raw)
    assert set(body) == {"error"}, where
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, where
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), where
    assert isinstance(error["message"], str) and error["message"], where
    assert isinstance(error["details"], dict), where
    assert "Traceback" not in r.raw.decode(), where
    assert b"<html" not in r.raw.lower(), where


def registered_paths(server: ServerThread) -> list[tuple[str, str]]:
    """(template, concrete path) for every route of every module."""
    assert server.runtime is not None
    app = make_app(Context(server.config, server.runtime.ctx.modules))
    paths = []
    for rule in app.default_router.rules[0].target.rules:
        template = rule.name
        if template is None:
            continue
        concrete = re.sub(r"\{[a-z_]+\}", "no-such-thing", template)
        paths.append((template, concrete))
    assert paths
    return paths


BAD_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("empty", b"", {}),
    ("not json", b"{not json", {"Content-Type": "application/json"}),
    ("array", b"[1, 2, 3]", {"Content-Type": "application/json"}),
    ("string", b'"hello"', {"Content-Type": "application/json"}),
    ("wrong types", b'{"path": 5, "content": [], "message": null, "limit": "x"}', {"Content-Type": "application/json"}),
    ("binary", bytes(range(256)), {"Content-Type": "application/octet-stream"}),
    ("bad utf-8", b'{"a": "\xff\xfe"}', {"Content-Type": "application/json"}),
    ("deep", b"[" * 100000 + b"]" * 100000, {"Content-Type": "application/json"}),
    ("form", b"a=1&b=%zz", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("multipart junk", b"--x\r\nnope", {"Content-Type": "multipart/form-data; boundary=x"}),
]


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_every_route_answers_bad_input_in_the_error_shape(servers: ServerPool, token: str | None) -> None:
    server = servers.get("--token", TOKEN)
    for template, path in registered_paths(server):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            for name, raw, headers in BAD_BODIES:
                r = await server.request(method, path, raw=raw, headers=headers, token=token)
                if r.status >= 400:
                    assert_error_shape(r, f"{method} {template} [{name}]")
                else:
                    redirect = template == "/" and r.status == 302  # GET / → /ui, the console
                    assert r.status < 300 or r.status == 304 or redirect, f"{method} {template} [{name}] -> {r.status}"
            for query in ("?limit=-1", "?limit=abc", "?path=%00", "?path=../../etc", "?after=x&recursive=maybe"):
                r = await server.request(method, path + query, token=token)
                if r.status >= 400:
                    assert_error_shape(r, f"{method} {template}{query}")


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/api/v1/does-not-exist",
        "/api/v1/nope/..%2f..%2fetc%2fpasswd",  # under /api/v1/files/ it is a path: 403 (test_files_jail.py)
        "/../../etc/passwd",
        "/%00",
        "/api/v1/%ff%fe",
        "/docs/assets/..%2f..%2fapp.py",
        "/docs/assets/%2e%2e",
        "/health/extra",
        "/" + "a" * 8000,
    ],
)
async def test_unknown_paths_are_json_404(server: ServerThread, path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        r = await server.request(method, path)
        # A path that matches a GET-only route's pattern (docs assets) answers 405 to other methods.
        assert r.status == 404 or (method != "GET" and r.status == 405), (method, path)
        assert_error_shape(r, path)


async def test_method_not_allowed_is_json_405_with_allow(server: ServerThread) -> None:
    r = await server.request("DELETE", "/health")
    assert r.status == 405
    assert_error_shape(r, "DELETE /health")
    assert r.error_code == "method_not_allowed"
    assert r.headers["Allow"] == "GET, OPTIONS"


async def test_unsupported_method_is_json(server: ServerThread) -> None:
    r = await server.request("PROPFIND", "/health")
    assert r.status == 405
    assert_error_shape(r, "PROPFIND")


async def test_internal_errors_are_500_without_details(servers: ServerPool) -> None:
    server = servers.get(extra_handlers=EXTRA)
    r = await server.request("GET", "/test/crash")
    assert r.status == 500
    assert r.body == {"error": {"code": "internal_error", "message": "Internal server error", "details": {}}}
    assert b"secret" not in r.raw and b"shadow" not in r.raw


async def test_malformed_json_and_wrong_types(servers: ServerPool) -> None:
    server = servers.get(extra_handlers=EXTRA)
    cases = [
        (b"{", "invalid_json"),
        (b"[]", "invalid_body"),
        (b"", "invalid_body"),
        (b"\xff", "invalid_json"),
        (b"null", "invalid_body"),
        # What Python's json takes but no other JSON reader does, or what has no UTF-8 form: refused up front.
        (b'{"a": NaN}', "invalid_json"),
        (b'{"a": [Infinity]}', "invalid_json"),
        (b'{"a": -Infinity}', "invalid_json"),
        (b'{"a": 1e400}', "invalid_json"),
        (b'{"a": "\\ud800"}', "invalid_json"),
        (b'{"\\uDFFF": 1}', "invalid_json"),
        (b'{"a": [{"b": "x\\udbff"}]}', "invalid_json"),
    ]
    for raw, code in cases:
        r = await server.request("POST", "/test/echo", raw=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400, raw
        assert r.error_code == code, raw
    # A surrogate pair is one character; an escaped backslash before "ud800" is plain text; big finite numbers pass.
    raw = b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800", "c": 1.5e300, "d": -0.0}'
    r = await server.request("POST", "/test/echo", raw=raw, headers={"Content-Type": "application/json"})
    assert r.status == 200, r.raw
    assert r.body["echo"] == {"a": "\U0001f600", "b": "\\ud800", "c": 1.5e300, "d": -0.0}
    r = await server.request("GET", "/test/echo?limit=abc")
    assert r.status == 400 and r.error_code == "invalid_parameter"
    assert r.body["error"]["details"] == {"parameter": "limit"}
    r = await server.request("GET", "/test/echo?limit=1000")
    assert r.status == 400
    r = await server.request("GET", "/test/echo?flag=maybe")
    assert r.status == 400
    r = await server.request("GET", "/test/echo?limit=5&flag=true&q=%C3%A9")
    assert r.body == {"limit": 5, "flag": True, "q": "é"}


async def test_body_too_large_by_content_length(servers: ServerPool) -> None:
    server = servers.get(extra_handlers=EXTRA)
    r = await server.request("POST", "/test/echo", raw=b"x" * (JSON_BODY_LIMIT + 1))
    assert r.status == 413
    assert_error_shape(r, "413")
    assert r.error_code == "body_too_large"
    # The server is still fine afterwards.
    assert (await server.request("GET", "/health")).status == 200


async def test_body_too_large_chunked(servers: ServerPool) -> None:
    """A chunked body with no Content-Length is cut off at the bound with a JSON 413."""
    server = servers.get(extra_handlers=EXTRA)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 65536
    response = b""
    try:
        for _ in range(JSON_BODY_LIMIT // len(chunk) + 4):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass  # the server may close as soon as it has answered
    try:
        response = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        pass
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "body_too_large"


async def test_bad_content_length(server: ServerThread) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999999\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    # Tornado may refuse it at the HTTP layer (closing), or we answer in JSON; never a 500.
    assert b" 500 " not in data.split(b"\r\n", 1)[0]


async def test_expect_continue_gets_413_before_the_body(servers: ServerPool) -> None:
    server = servers.get(extra_handlers=EXTRA)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head
