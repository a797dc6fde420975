"""``/openapi.json`` describes exactly the routes the server has, and ``/health`` its shape."""

from __future__ import annotations

import re

from tests.conftest import ServerThread
from wsruntime_ext.app import MODULES, make_app
from wsruntime_ext.base import implemented_methods
from wsruntime_ext.context import Context


def served_operations(server: ServerThread) -> set[tuple[str, str]]:
    """(template, method) for every route of every module, from the application's router."""
    app = make_app(Context(server.config, MODULES))
    operations: set[tuple[str, str]] = set()
    for rule in app.default_router.rules[0].target.rules:
        if rule.name is None:
            continue  # the JSON catch-all
        methods = implemented_methods(rule.target)
        assert methods, f"{rule.name} implements no method"
        operations.update((rule.name, m.lower()) for m in methods)
    return operations


async def test_every_route_documented_and_every_documented_route_served(server: ServerThread) -> None:
    r = await server.request("GET", "/openapi.json")
    assert r.status == 200
    document = r.body
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == served_operations(server)


async def test_document_basics(server: ServerThread) -> None:
    document = (await server.request("GET", "/openapi.json")).body
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    operation_ids = []
    for path, ops in document["paths"].items():
        params = set(re.findall(r"\{([a-z_]+)\}", path))
        for method, op in ops.items():
            operation_ids.append(op["operationId"])
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params, (path, method)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert len(operation_ids) == len(set(operation_ids))
    # Open routes say so; the rest inherit the bearer requirement.
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["security"] == [{"bearer": []}]


async def test_the_query_rule_is_documented_on_every_operation(server: ServerThread) -> None:
    """A repeated (or empty) query parameter is 400 on every route, declared parameter or not: every operation
    lists the 400 it really gives."""
    document = (await server.request("GET", "/openapi.json")).body
    missing = [(path, method) for path, ops in document["paths"].items() for method, op in ops.items()
               if "400" not in op["responses"]]  # fmt: skip
    assert missing == []
    for path in ("/health", "/api/v1/scripts", "/api/v1/agents", "/openapi.json"):
        r = await server.request("GET", path + "?a=1&a=2")
        assert r.status == 400 and r.error_code == "invalid_parameter", (path, r.raw)


async def test_openapi_etag(server: ServerThread) -> None:
    r = await server.request("GET", "/openapi.json")
    again = await server.request("GET", "/openapi.json", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status == 304


async def test_health_shape(server: ServerThread) -> None:
    r = await server.request("GET", "/health")
    assert r.status == 200
    body = r.body
    assert body["status"] == "ok"
    assert body["version"] and isinstance(body["uptime_s"], float)
    assert body["workspace_id"] == server.config.workspace_id
    assert body["git"]["available"] in (True, False)
    later = (await server.request("GET", "/health")).body
    assert later["uptime_s"] >= body["uptime_s"]
