"""One rule for query parameters on every route: given at most once, never empty (but ``path``).

The routes and their parameters come from the served ``/openapi.json``, so a
route added later is held to the rule too.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any

import pytest

from tests.conftest import ServerThread

SAMPLE = {"integer": "1", "boolean": "true"}


def _operations(server: ServerThread) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, template, parameter name, its schema) for every query parameter the document declares."""
    assert server.runtime is not None
    document = server.runtime.ctx.openapi_document
    found = []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter["name"] != "token":
                    found.append((method.upper(), template, parameter["name"], parameter["schema"]))
    return found


def _value(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return str(schema["enum"][0])
    return SAMPLE.get(schema.get("type", ""), "x")


def _url(server: ServerThread, template: str, query: str) -> str:
    path = template.replace("{workspace_id}", server.config.workspace_id)
    path = re.sub(r"\{[^}]+\}", "nothing-here", path)
    return f"{path}?{query}"


async def _refused(server: ServerThread, method: str, url: str, name: str) -> None:
    is_websocket = url.startswith(("/api/v1/ws?", "/api/v1/ws/"))
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"} if is_websocket else {}
    if is_websocket:
        headers.update({"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    body = b"{}" if method in ("POST", "PUT") else None
    r = await server.request(method, url, raw=body, headers=headers)
    assert r.status == 400, (method, url, r.status, r.raw)
    assert r.error_code == "invalid_parameter", (method, url, r.raw)
    assert r.body["error"]["details"]["parameter"] == name, (method, url, r.raw)


async def test_a_repeated_parameter_is_refused_on_every_route(server: ServerThread) -> None:
    operations = _operations(server)
    assert len(operations) > 30  # the walk really covers the API
    for method, template, name, schema in operations:
        value = urllib.parse.quote(_value(schema))
        await _refused(server, method, _url(server, template, f"{name}={value}&{name}={value}"), name)


async def test_an_empty_parameter_is_refused_on_every_route_but_path(server: ServerThread) -> None:
    for method, template, name, _ in _operations(server):
        if name == "path":
            continue
        await _refused(server, method, _url(server, template, f"{name}="), name)
        await _refused(server, method, _url(server, template, name), name)  # "?name" without "=" is empty too


async def test_path_may_be_empty_it_is_the_root(server: ServerThread) -> None:
    r = await server.request("GET", "/api/v1/files?path=")
    assert r.status == 200
    assert r.body["path"] == ""


async def test_a_refused_parameter_changes_nothing(server: ServerThread) -> None:
    target = os.path.join(server.workspace, "keep-me.txt")
    with open(target, "w") as f:
        f.write("kept")
    r = await server.request("DELETE", "/api/v1/files/keep-me.txt?recursive=true&recursive=false")
    assert r.status == 400 and r.error_code == "invalid_parameter"
    r = await server.request("PUT", "/api/v1/files/keep-me.txt?format=", raw=b"changed")
    assert r.status == 400 and r.error_code == "invalid_parameter"
    with open(target) as f:
        assert f.read() == "kept"


async def test_unknown_parameters_with_values_are_ignored(server: ServerThread) -> None:
    r = await server.request("GET", "/api/v1/files?path=&_=12345")
    assert r.status == 200


def test_openapi_says_string_parameters_are_never_empty(server: ServerThread) -> None:
    for _, template, name, schema in _operations(server):
        if schema.get("type") == "string" and "enum" not in schema:
            expected = 0 if name == "path" else 1
            assert schema.get("minLength", 0) == expected, (template, name, schema)


@pytest.mark.parametrize("query", ["?after=1&after=2", "?after=", "?topics=", "?topics=a&topics=b"])
async def test_websocket_handshakes_follow_the_rule(server: ServerThread, query: str) -> None:
    with pytest.raises(Exception) as caught:
        await server.websocket("/api/v1/ws" + query)
    assert "400" in str(caught.value)
