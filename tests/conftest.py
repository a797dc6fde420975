"""The test harness: the real runtime on a free port, and HTTP/WebSocket helpers to talk to it.

``async def`` tests run on a fresh event loop each (the hook below), so no
pytest plugin is needed. Servers run in a background thread with their own
loop and are shared per configuration for the whole session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.websocket

from wsruntime_ext.app import Runtime, start
from wsruntime_ext.config import Config, parse_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = os.path.join(ROOT, "wsruntime.py")
TOKEN = "test-token-7f3a"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests to completion on a fresh event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    marker = pyfuncitem.get_closest_marker("async_timeout")  # @pytest.mark.async_timeout(seconds) for slow tests
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=marker.args[0] if marker else 120))
    return True


@dataclasses.dataclass
class Response:
    status: int
    headers: Any
    raw: bytes

    @property
    def body(self) -> Any:
        """The body as JSON (None when empty)."""
        return json.loads(self.raw) if self.raw else None

    @property
    def error_code(self) -> str:
        return str(self.body["error"]["code"])


class ServerThread:
    """The real application, started in a thread with its own IOLoop, on a free port."""

    def __init__(self, config: Config, extra_handlers: Sequence[Any] = ()) -> None:
        self.config = config
        self.extra_handlers = extra_handlers
        self.runtime: Runtime | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wsruntime-test-server", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self.runtime = await start(self.config, self.extra_handlers)
            self.loop = asyncio.get_running_loop()
        except BaseException as exc:  # report to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self.runtime.stopped.wait()

    @property
    def port(self) -> int:
        assert self.runtime is not None
        return self.runtime.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def workspace(self) -> str:
        return self.config.workspace

    def call(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run a coroutine on the server's loop (white-box tests)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.runtime is not None and self.loop is not None and self._thread.is_alive():
            self.call(self.runtime.stop)
        self._thread.join(10)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        raw: bytes | None = None,
        timeout: float = 30,
    ) -> Response:
        """One HTTP request; ``body`` is sent as JSON, ``raw`` as it is."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        try:
            response = await client.fetch(
                self.url + path,
                method=method,
                headers=all_headers,
                body=data,
                raise_error=False,
                allow_nonstandard_methods=True,
                follow_redirects=False,
                request_timeout=timeout,
                decompress_response=False,
            )
        finally:
            client.close()
        if response.code == 599:
            raise ConnectionError(f"{method} {path}: {response.error}")
        return Response(response.code, response.headers, response.body or b"")

    async def websocket(
        self, path: str, token: str | None = None, headers: dict[str, str] | None = None, query_token: bool = False
    ) -> tornado.websocket.WebSocketClientConnection:
        """Open a WebSocket; the token goes in the Authorization header or, with ``query_token``, in ``?token=``."""
        url = self.ws_url + path
        all_headers = dict(headers or {})
        if token is not None:
            if query_token:
                url += ("&" if "?" in url else "?") + "token=" + token
            else:
                all_headers["Authorization"] = f"Bearer {token}"
        request = tornado.httpclient.HTTPRequest(url, headers=all_headers, request_timeout=10)
        return await tornado.websocket.websocket_connect(request)


def make_config(workspace: str, *args: str) -> Config:
    return parse_config(["--workspace", workspace, "--port", "0", "--host", "127.0.0.1", *args], environ={})


class ServerPool:
    """Servers shared by configuration for the whole session."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.servers: dict[tuple[Any, ...], ServerThread] = {}

    def get(self, *args: str, extra_handlers: Sequence[Any] = ()) -> ServerThread:
        key = (args, tuple(id(h) for h in extra_handlers))
        if key not in self.servers:
            workspace = tempfile.mkdtemp(prefix="ws-", dir=self.base)
            self.servers[key] = ServerThread(make_config(workspace, *args), extra_handlers).start()
        return self.servers[key]

    def fresh(self, *args: str, extra_handlers: Sequence[Any] = (), workspace: str | None = None) -> ServerThread:
        """A server of its own (stop it yourself)."""
        workspace = workspace or tempfile.mkdtemp(prefix="ws-", dir=self.base)
        return ServerThread(make_config(workspace, *args), extra_handlers).start()

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerPool]:
    base = tempfile.mkdtemp(prefix="wsruntime-tests-")
    pool = ServerPool(base)
    yield pool
    pool.stop_all()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def server(servers: ServerPool) -> ServerThread:
    """The default server: no token, same-origin only."""
    return servers.get()


@pytest.fixture(scope="session")
def secured(servers: ServerPool) -> ServerThread:
    """A server that requires ``TOKEN``."""
    return servers.get("--token", TOKEN)


@pytest.fixture
def api(server: ServerThread) -> Callable[..., Awaitable[Response]]:
    return server.request


class RuntimeProcess:
    """``python wsruntime.py`` as a separate process, for start-up, banner and signal tests."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, ENTRY, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            text=True,
        )
        self.banner: list[str] = []
        self.url = ""

    def wait_ready(self, timeout: float = 20) -> str:
        """Read the banner up to its URL line; returns the URL."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"runtime exited: {self.proc.wait()} {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            self.banner.append(line.rstrip("\n"))
            if "Auth:" in line:
                break
        for line in self.banner:
            if "URL:" in line:
                self.url = line.split("URL:", 1)[1].split()[0]
        # The warning block, if any, follows the Auth line.
        return self.url

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
