"""Processes and terminals (API.md "Processes and terminals (extension)"), on the one engine under script runs.

``engine.py`` spawns, supervises, stores, replays and stops runs of any kind
(script runs are runs of it too); ``runs.py`` keeps pipe output as numbered
frames on disk and ``pty.py`` a terminal's bytes; ``service.py`` is what a
process adds (exec and terminals: input, signals, resize); ``handlers.py`` is
the HTTP and WebSocket layer and ``spec.py`` its OpenAPI description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsruntime_ext.openapi import route
from wsruntime_ext.processes.handlers import (
    InputHandler,
    ProcessesHandler,
    ProcessHandler,
    ProcessStreamSocket,
    ResizeHandler,
    SignalHandler,
)
from wsruntime_ext.processes.service import ProcessService
from wsruntime_ext.processes.spec import openapi

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

handlers = [
    route("/api/v1/processes", ProcessesHandler),
    route("/api/v1/processes/{process_id}", ProcessHandler),
    route("/api/v1/processes/{process_id}/input", InputHandler),
    route("/api/v1/processes/{process_id}/signal", SignalHandler),
    route("/api/v1/processes/{process_id}/resize", ResizeHandler),
    route("/api/v1/ws/processes/{process_id}", ProcessStreamSocket),
]


async def startup(ctx: Context) -> None:
    ctx.processes = ProcessService(ctx)
    await ctx.processes.start()
    ctx.health_providers.append(ctx.processes.health)


async def shutdown(ctx: Context) -> None:
    await ctx.processes.shutdown()


__all__ = ["ProcessService", "handlers", "openapi", "shutdown", "startup"]
