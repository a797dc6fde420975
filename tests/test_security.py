"""Token, origin and host checks (API.md "Auth" and "Origins"), over real HTTP and WebSocket."""

from __future__ import annotations

import logging

import pytest
import tornado.httpclient
import tornado.websocket

from tests.conftest import TOKEN, ServerPool, ServerThread
from tests.support import EXTRA


@pytest.fixture(scope="module")
def tokened(servers: ServerPool) -> ServerThread:
    return servers.get("--token", TOKEN, extra_handlers=EXTRA)


@pytest.fixture(scope="module")
def open_server(servers: ServerPool) -> ServerThread:
    return servers.get(extra_handlers=EXTRA)


@pytest.fixture(scope="module")
def cors_server(servers: ServerPool) -> ServerThread:
    return servers.get(
        "--allow-origin", "https://app.example.com", "--allow-origin", "http://localhost:5173", extra_handlers=EXTRA
    )


# -- token -------------------------------------------------------------------------------


async def test_missing_token_is_401(tokened: ServerThread) -> None:
    r = await tokened.request("POST", "/test/echo", body={"a": 1})
    assert r.status == 401
    assert r.error_code == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}", "Bearer tëst"],
)
async def test_wrong_token_is_401(tokened: ServerThread, header: str) -> None:
    r = await tokened.request("GET", "/test/echo", headers={"Authorization": header})
    assert r.status == 401
    assert r.error_code == "unauthorized"


async def test_right_token_passes(tokened: ServerThread) -> None:
    r = await tokened.request("POST", "/test/echo", body={"a": 1}, token=TOKEN)
    assert r.status == 200
    assert r.body == {"echo": {"a": 1}}
    r = await tokened.request("GET", "/test/echo", headers={"Authorization": f"bearer  {TOKEN} "})
    assert r.status == 200


async def test_token_in_query_is_not_accepted_over_http(tokened: ServerThread) -> None:
    r = await tokened.request("GET", f"/test/echo?token={TOKEN}")
    assert r.status == 401


async def test_open_routes_need_no_token(tokened: ServerThread) -> None:
    for path in ("/health", "/openapi.json", "/docs", "/docs/assets/swagger-ui.css"):
        r = await tokened.request("GET", path)
        assert r.status == 200, path


async def test_health_details_only_with_token(tokened: ServerThread) -> None:
    anonymous = (await tokened.request("GET", "/health")).body
    assert set(anonymous) == {"status", "version", "uptime_s", "workspace_id"}
    wrong = (await tokened.request("GET", "/health", token="nope")).body
    assert "runtime" not in wrong
    full = (await tokened.request("GET", "/health", token=TOKEN)).body
    assert full["auth"] is True
    assert "python" in full["runtime"] and "git" in full


async def test_websocket_token_in_header_or_query(tokened: ServerThread) -> None:
    for query in (False, True):
        ws = await tokened.websocket("/test/ws", token=TOKEN, query_token=query)
        await ws.write_message("ping")
        assert await ws.read_message() == "ping"
        ws.close()


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_websocket_without_valid_token_is_refused(tokened: ServerThread, token: str | None) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await tokened.websocket("/test/ws", token=token, query_token=True)
    assert info.value.code == 401


async def test_token_never_logged(tokened: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ws = await tokened.websocket("/test/ws", token=TOKEN, query_token=True)
    ws.close()
    try:
        await tokened.websocket("/test/ws?x=1", token=TOKEN + "bad", query_token=True)
    except tornado.httpclient.HTTPClientError:
        pass
    await tokened.request("GET", "/test/crash", token=TOKEN, headers={"X-Test": "1"})
    await tokened.request("GET", f"/test/crash?token={TOKEN}", token=TOKEN)
    text = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "/test/ws" in text  # the access log did see the requests
    assert TOKEN not in text


# -- origins -----------------------------------------------------------------------------


async def test_same_origin_is_allowed(open_server: ServerThread) -> None:
    origin = f"http://127.0.0.1:{open_server.port}"
    r = await open_server.request("POST", "/test/echo", body={}, headers={"Origin": origin})
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://127.0.0.1:1",
        "null",
        "http://127.0.0.1.evil.example",
        "file://",
        "https://127.0.0.1",
    ],
)
async def test_cross_origin_is_refused(open_server: ServerThread, origin: str) -> None:
    r = await open_server.request("POST", "/test/echo", body={}, headers={"Origin": origin})
    assert r.status == 403
    assert r.error_code == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_cross_origin_websocket_is_refused(open_server: ServerThread) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await open_server.websocket("/test/ws", headers={"Origin": "https://evil.example"})
    assert info.value.code == 403
    ws = await open_server.websocket("/test/ws", headers={"Origin": f"http://127.0.0.1:{open_server.port}"})
    ws.close()


async def test_allowed_origins(cors_server: ServerThread) -> None:
    for origin in ("https://app.example.com", "http://localhost:5173", "HTTPS://APP.EXAMPLE.COM"):
        r = await cors_server.request("GET", "/test/echo", headers={"Origin": origin})
        assert r.status == 200, origin
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in r.headers["Vary"]
    r = await cors_server.request("GET", "/test/echo", headers={"Origin": "https://other.example.com"})
    assert r.status == 403
    ws = await cors_server.websocket("/test/ws", headers={"Origin": "https://app.example.com"})
    ws.close()


async def test_preflight(cors_server: ServerThread) -> None:
    r = await cors_server.request(
        "OPTIONS",
        "/test/echo",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    r = await cors_server.request("OPTIONS", "/test/echo", headers={"Origin": "https://evil.example"})
    assert r.status == 403
    assert r.error_code == "origin_not_allowed"


async def test_wildcard_origin_only_when_given(servers: ServerPool) -> None:
    star = servers.get("--allow-origin", "*", extra_handlers=EXTRA)
    r = await star.request("GET", "/test/echo", headers={"Origin": "https://anything.example"})
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://anything.example"


# -- host (DNS rebinding) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:3002", "attacker.com.", "localhost.evil.example", "10.1.2.3"]
)
async def test_foreign_host_refused_without_token(open_server: ServerThread, host: str) -> None:
    for path in ("/health", "/test/echo", "/nowhere"):
        r = await open_server.request("GET", path, headers={"Host": host})
        assert r.status == 403, (host, path)
        assert r.error_code == "host_not_allowed"


async def test_foreign_host_refused_on_websocket(open_server: ServerThread) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await open_server.websocket("/test/ws", headers={"Host": "rebind.evil.example"})
    assert info.value.code == 403


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "127.9.9.9:80", "[::1]:3002", "app.localhost"]
)
async def test_loopback_hosts_allowed(open_server: ServerThread, host: str) -> None:
    r = await open_server.request("GET", "/health", headers={"Host": host})
    assert r.status == 200


async def test_any_host_allowed_with_token(tokened: ServerThread) -> None:
    r = await tokened.request("GET", "/test/echo", headers={"Host": "workspace.example.com"}, token=TOKEN)
    assert r.status == 200


async def test_configured_host_allowed(servers: ServerPool) -> None:
    named = servers.get("--host", "localhost", extra_handlers=EXTRA)
    r = await named.request("GET", "/health", headers={"Host": "localhost:9"})
    assert r.status == 200
