"""Assembly: the Context every module shares, the Tornado application, start-up and shutdown.

``app.py`` alone knows every module. Each module exports ``handlers`` (routes),
``openapi`` (their description), optionally ``open_paths`` (routes that need
no token) and ``async def startup(ctx)`` / ``shutdown(ctx)``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from wsruntime_ext import (
    __version__,
    agents,
    docs,
    events,
    files,
    git,
    health,
    openspec,
    processes,
    scripts,
    settings,
    ui,
)
from wsruntime_ext.base import NotFoundHandler, log, log_request
from wsruntime_ext.config import Config, exit_with_error, parse_config
from wsruntime_ext.context import Context

# The feature modules, in start-up order (shutdown runs in reverse).
MODULES: list[ModuleType] = [health, events, files, git, settings, agents, openspec, scripts, processes, docs, ui]

SHUTDOWN_GRACE_S = 4.0


def make_app(ctx: Context, extra_handlers: Sequence[Any] = ()) -> tornado.web.Application:
    """The Tornado application: every module's routes, then the JSON catch-all."""
    routes: list[Any] = [h for m in ctx.modules for h in getattr(m, "handlers", [])]
    routes.extend(extra_handlers)
    routes.append((r".*", NotFoundHandler))
    return tornado.web.Application(
        routes,
        ctx=ctx,
        log_function=log_request,
        websocket_ping_interval=20,
        websocket_ping_timeout=20,  # Tornado caps it at the interval (and warns on every connection otherwise)
        websocket_max_message_size=4 << 20,
        serve_traceback=False,
    )


def prepare_state_dir(config: Config) -> None:
    """Create the state directory with a ``.gitignore`` of ``*`` so git never sees it."""
    os.makedirs(config.state_dir, exist_ok=True)
    ignore = os.path.join(config.state_dir, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w", encoding="utf-8") as f:
            f.write("*\n")


class Runtime:
    """A started runtime: its server, its sockets and its Context."""

    def __init__(self, ctx: Context, server: tornado.httpserver.HTTPServer, sockets: list[socket.socket]) -> None:
        self.ctx = ctx
        self.server = server
        self.sockets = sockets
        self.port: int = sockets[0].getsockname()[1]
        self.stopped = asyncio.Event()

    @property
    def url(self) -> str:
        host = self.ctx.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, close WebSockets with 1001, run every module's shutdown hook."""
        ctx = self.ctx
        if ctx.shutting_down:
            await self.stopped.wait()
            return
        ctx.shutting_down = True
        self.server.stop()
        for ws in list(ctx.websockets):
            try:
                ws.close(1001, "server shutting down")
            except Exception:
                log.debug("closing a WebSocket failed", exc_info=True)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for module in reversed(ctx.modules):
            hook = getattr(module, "shutdown", None)
            if hook is None:
                continue
            try:
                await asyncio.wait_for(hook(ctx), max(0.1, deadline - time.monotonic()))
            except Exception:
                log.exception("shutdown of %s failed", module.__name__)
        await self.ctx.procs.shutdown(grace=max(0.1, min(2.0, deadline - time.monotonic() - 0.5)))
        try:
            await asyncio.wait_for(self.server.close_all_connections(), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            log.warning("some connections were still open at shutdown")
        ctx.executor.shutdown(wait=False)
        self.stopped.set()


async def start(config: Config, extra_handlers: Sequence[Any] = (), modules: Sequence[ModuleType] = MODULES) -> Runtime:
    """Prepare the state directory, start every module, bind and serve."""
    prepare_state_dir(config)
    ctx = Context(config, modules)
    # Before any module starts and before the port is bound: what a crash left is gone before the first answer.
    ctx.temps.clean()
    for module in ctx.modules:
        hook = getattr(module, "startup", None)
        if hook is not None:
            await hook(ctx)
    app = make_app(ctx, extra_handlers)
    server = tornado.httpserver.HTTPServer(
        app,
        max_body_size=config.max_upload_size + (1 << 20),  # handlers enforce their own, tighter bounds
        decompress_request=False,
        idle_connection_timeout=300,
    )
    sockets = tornado.netutil.bind_sockets(config.port, config.host, reuse_port=False)
    server.add_sockets(sockets)
    return Runtime(ctx, server, sockets)


# -- logging and the banner ---------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if hasattr(record, "remote_ip"):
            entry["remote_ip"] = record.remote_ip
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())
    # Tornado's own access log is replaced by ours (which masks tokens).
    logging.getLogger("tornado.access").disabled = True


def banner(runtime: Runtime) -> str:
    config = runtime.ctx.config
    lines = [
        f"wsruntime {__version__} — workspace {config.workspace_id!r} at {config.workspace}",
        f"  URL:   {runtime.url}" + ("   (listening on all interfaces)" if config.host in ("0.0.0.0", "::") else ""),
        f"  Docs:  {runtime.url}/docs",
        "  Auth:  " + ("bearer token required" if config.auth_enabled else "OFF (no --token)"),
    ]
    if not config.auth_enabled and not _is_loopback_bind(config.host):
        lines += [
            "",
            "  " + "!" * 72,
            f"  WARNING: bound to {config.host} WITHOUT A TOKEN. Anyone who can reach this port",
            "  can read and write the workspace and run commands. Set --token or WSRUNTIME_TOKEN.",
            "  " + "!" * 72,
        ]
    return "\n".join(lines)


def _is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the process ----------------------------------------------------------------------


async def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    loop = asyncio.get_running_loop()
    runtime: Runtime | None = None
    stop_requested = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop_requested.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop_requested.set()

    # Installed before anything is announced, so a signal right after the banner is graceful too.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        runtime = await start(config)
    except OSError as exc:
        print(f"wsruntime: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(banner(runtime), flush=True)
    await stop_requested.wait()
    await runtime.stop()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    setup_logging(config)
    try:
        prepare_state_dir(config)
    except OSError as exc:
        exit_with_error(f"cannot create the state directory {config.state_dir}: {exc.strerror} (see --state-dir)")
    return asyncio.run(serve(config))
