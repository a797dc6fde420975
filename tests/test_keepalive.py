"""Every answer leaves a keep-alive connection usable — refusals included.

A refusal decided before the handler runs (no token, a foreign Host or
Origin, an unknown path) used to be answered and then the connection closed
without ``Connection: close``; the client's next request on that socket
failed. These tests speak raw HTTP/1.1 over one socket, as a browser or a
``requests.Session`` does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TOKEN, ServerPool, ServerThread

WS = "/api/v1/workspaces/{id}"

# One route of every family: (method, path template, JSON body or None).
ROUTES = [
    ("GET", "/api/v1/files?path=", None),
    ("GET", "/api/v1/files/missing.txt", None),
    ("PUT", "/api/v1/files/new.txt", b"hello"),
    ("POST", "/api/v1/files/mkdir", b'{"path": "d"}'),
    ("GET", "/api/v1/search?q=x", None),
    ("GET", "/api/v1/settings?scope=project", None),
    ("PUT", "/api/v1/settings/hooks?scope=project", b'{"hooks": {}}'),
    ("GET", "/api/v1/agents", None),
    ("GET", "/api/v1/agent-sessions", None),
    ("POST", "/api/v1/agent-sessions", b'{"agent": "claude-code", "prompt": "hi"}'),
    ("GET", WS + "/version-control/status", None),
    ("POST", WS + "/version-control/commit", b'{"message": "m"}'),
    ("GET", "/api/v1/scripts", None),
    ("POST", "/api/v1/scripts/build/run", b"{}"),
    ("GET", WS + "/openspec", None),
    ("POST", WS + "/openspec/actions/explore", b"{}"),
    ("GET", "/api/v1/ws", None),
    ("GET", "/docs", None),
    ("GET", "/no/such/endpoint", None),
    ("POST", "/no/such/endpoint", b'{"a": 1}'),
]


class RawConnection:
    """One HTTP/1.1 keep-alive connection, spoken by hand."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        all_headers = dict(headers or {})
        if body is not None:
            all_headers.setdefault("Content-Length", str(len(body)))
            all_headers.setdefault("Content-Type", "application/json")
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))

    def _read_more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._read_more()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._read_more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        status = int(self._read_line().split()[1])
        headers: dict[str, str] = {}
        while True:
            line = self._read_line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304):
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                body += self._read_exactly(size)
                self._read_line()
                if size == 0:
                    return status, headers, body
        return status, headers, self._read_exactly(int(headers.get("content-length", "0")))

    def exchange(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.send(method, path, headers, body)
        return self.response(method)


@pytest.fixture
def connection() -> Iterator[Any]:
    opened: list[RawConnection] = []

    def open_on(server: ServerThread) -> RawConnection:
        opened.append(RawConnection(server.port))
        return opened[-1]

    yield open_on
    for conn in opened:
        conn.close()


def _path(server: ServerThread, template: str) -> str:
    return template.replace("{id}", server.config.workspace_id)


def _assert_usable(conn: RawConnection, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, body = conn.exchange("GET", "/health", headers)
    assert status == 200, body
    status, _, body = conn.exchange("GET", "/api/v1/files?path=", headers)
    assert status == 200, body


@pytest.fixture(scope="module")
def secured(servers: ServerPool) -> ServerThread:
    return servers.get("--token", TOKEN)


@pytest.fixture(scope="module")
def open_server(servers: ServerPool) -> ServerThread:
    return servers.get()


@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
@pytest.mark.parametrize("supplied", [None, "wrong-token"])
def test_a_401_keeps_the_connection(
    secured: ServerThread, connection: Any, method: str, template: str, body: bytes | None, supplied: str | None
) -> None:
    conn = connection(secured)
    headers = {"Authorization": f"Bearer {supplied}"} if supplied else {}
    status, response_headers, raw = conn.exchange(method, _path(secured, template), headers, body)
    if template in ("/docs",):
        assert status == 200
    elif template.startswith("/no/such"):
        assert status == 404, raw  # an unknown path needs no token to be told so
    else:
        assert status == 401, raw
        assert b'"unauthorized"' in raw
    assert response_headers.get("connection", "").lower() != "close"
    _assert_usable(conn, TOKEN)


@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
def test_an_answer_with_the_token_keeps_the_connection(
    secured: ServerThread, connection: Any, method: str, template: str, body: bytes | None
) -> None:
    """Whatever each route answers to these (often a 4xx of its own), the next request still works."""
    conn = connection(secured)
    status, response_headers, _ = conn.exchange(
        method, _path(secured, template), {"Authorization": f"Bearer {TOKEN}"}, body
    )
    assert status < 500
    assert response_headers.get("connection", "").lower() != "close"
    _assert_usable(conn, TOKEN)


@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
@pytest.mark.parametrize(
    ("header", "value", "code"),
    [("Host", "evil.example", "host_not_allowed"), ("Origin", "http://evil.example", "origin_not_allowed")],
)
def test_a_403_keeps_the_connection(
    open_server: ServerThread,
    connection: Any,
    method: str,
    template: str,
    body: bytes | None,
    header: str,
    value: str,
    code: str,
) -> None:
    conn = connection(open_server)
    path = _path(open_server, template)
    if header == "Host":
        lines = [f"{method} {path} HTTP/1.1", f"Host: {value}"]
        if body is not None:
            lines += [f"Content-Length: {len(body)}", "Content-Type: application/json"]
        conn.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        status, response_headers, raw = conn.response(method)
    else:
        status, response_headers, raw = conn.exchange(method, path, {header: value}, body)
    assert status == 403, raw
    assert code.encode() in raw
    assert response_headers.get("connection", "").lower() != "close"
    _assert_usable(conn)


def test_405_and_404_keep_the_connection(open_server: ServerThread, connection: Any) -> None:
    conn = connection(open_server)
    status, headers, _ = conn.exchange("PATCH", "/api/v1/files/x.txt", body=b"{}")
    assert status == 405
    assert "connection" not in headers
    status, headers, _ = conn.exchange("DELETE", "/health")
    assert status == 405
    status, headers, _ = conn.exchange("HEAD", "/nowhere")
    assert status == 404
    _assert_usable(conn)


def test_a_chunked_body_of_a_refused_request_is_read_and_the_connection_kept(
    secured: ServerThread, connection: Any
) -> None:
    conn = connection(secured)
    path = "/api/v1/files/chunked.txt"
    head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn.sock.sendall(head.encode() + b"5\r\nhello\r\n0\r\n\r\n")
    status, headers, _ = conn.response("PUT")
    assert status == 401
    assert headers.get("connection", "").lower() != "close"
    _assert_usable(conn, TOKEN)
    assert not os.path.exists(os.path.join(secured.config.workspace, "chunked.txt"))


@pytest.mark.parametrize(
    "extra",
    [
        {"Expect": "100-continue", "Content-Length": "10"},  # the client waits to be invited: refused at once
        {"Content-Length": str(8 << 20)},  # too much to read from an unauthenticated client
    ],
)
def test_a_body_not_worth_reading_is_refused_with_connection_close(
    secured: ServerThread, connection: Any, extra: dict[str, str]
) -> None:
    conn = connection(secured)
    conn.send("PUT", "/api/v1/files/big.bin", extra)
    status, headers, raw = conn.response("PUT")
    assert status == 401, raw
    assert headers.get("connection", "").lower() == "close"


def test_an_oversized_json_body_with_expect_says_connection_close(secured: ServerThread, connection: Any) -> None:
    conn = connection(secured)
    headers = {"Authorization": f"Bearer {TOKEN}", "Expect": "100-continue", "Content-Length": str(64 << 20)}
    conn.send("PUT", "/api/v1/settings?scope=project", headers)
    status, response_headers, raw = conn.response("PUT")
    assert status == 413, raw
    assert response_headers.get("connection", "").lower() == "close"


def test_a_stdlib_client_reuses_its_connection_after_refusals(secured: ServerThread) -> None:
    """http.client keeps one socket, as requests.Session and browsers do; a refusal must not break it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", secured.port, timeout=10)
    try:
        answers = []
        for method, path, headers, body in [
            ("GET", "/api/v1/files?path=", {}, None),
            ("POST", "/api/v1/agent-sessions", {"Content-Type": "application/json"}, b'{"agent": "x"}'),
            ("GET", "/nowhere", {}, None),
            ("GET", "/health", {}, None),
            ("GET", "/api/v1/files?path=", {"Authorization": f"Bearer {TOKEN}"}, None),
        ]:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            answers.append(response.status)
            assert conn.sock is not None  # still the same, open socket
        assert answers == [401, 401, 404, 200, 200]
    finally:
        conn.close()
