"""Scripts (API.md "Scripts"): what the workspace offers to run, and streamed, re-attachable, cancellable runs.

``discovery.py`` reads package.json, the Makefile, ``scripts/`` and
``.wsruntime/scripts.json``; ``service.py`` names a script and starts it as
a run of the process engine (``wsruntime_ext.processes.engine``), which
supervises, stores, cancels and recovers it;
``handlers.py`` is the HTTP and WebSocket layer and ``spec.py`` its OpenAPI
description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsruntime_ext.openapi import route
from wsruntime_ext.scripts.handlers import (
    RunHandler,
    RunScriptHandler,
    RunsHandler,
    RunStreamSocket,
    ScriptsHandler,
)
from wsruntime_ext.scripts.service import ScriptService
from wsruntime_ext.scripts.spec import openapi

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

handlers = [
    route("/api/v1/scripts", ScriptsHandler),
    route("/api/v1/scripts/runs", RunsHandler),
    # GET/DELETE only, so that POST /api/v1/scripts/runs/run still runs a script called "runs".
    route("/api/v1/scripts/runs/{run_id}", RunHandler, methods=["GET", "DELETE"]),
    route("/api/v1/scripts/{name}/run", RunScriptHandler),
    route("/api/v1/ws/scripts/runs/{run_id}", RunStreamSocket),
]


async def startup(ctx: Context) -> None:
    ctx.scripts = ScriptService(ctx)
    await ctx.scripts.start()
    ctx.health_providers.append(ctx.scripts.health)


async def shutdown(ctx: Context) -> None:
    await ctx.scripts.shutdown()


__all__ = ["ScriptService", "handlers", "openapi", "shutdown", "startup"]
