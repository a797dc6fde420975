"""Agent sessions (API.md "Agent sessions"): agent CLIs run in the workspace, streamed as AgentMessages.

``adapter.py`` is the interface every agent CLI implements, ``claude_code.py``
the Claude Code adapter (``qwen_code.py``, ``codex.py``, ``gemini.py`` and
``opencode.py`` the others), ``session.py`` one running session, ``service.py``
the session manager, ``store.py`` persistence in the state directory,
``handlers.py`` the HTTP and WebSocket layer and ``spec.py`` its OpenAPI
description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsruntime_ext.agents.handlers import (
    AgentsHandler,
    AgentStreamSocket,
    InterruptHandler,
    MessagesHandler,
    PermissionHandler,
    SessionHandler,
    SessionsHandler,
)
from wsruntime_ext.agents.service import AgentService, default_adapters
from wsruntime_ext.agents.spec import openapi
from wsruntime_ext.openapi import route

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

handlers = [
    route("/api/v1/agent-sessions", SessionsHandler),
    route("/api/v1/agent-sessions/{session_id}", SessionHandler),
    route("/api/v1/agent-sessions/{session_id}/messages", MessagesHandler),
    route("/api/v1/agent-sessions/{session_id}/interrupt", InterruptHandler),
    route("/api/v1/agent-sessions/{session_id}/permissions/{request_id}", PermissionHandler),
    route("/api/v1/agents", AgentsHandler),
    route("/api/v1/ws/agent-sessions/{session_id}", AgentStreamSocket),
]


async def startup(ctx: Context) -> None:
    ctx.agents = AgentService(ctx, default_adapters(ctx.config))
    await ctx.agents.start()
    ctx.health_providers.append(ctx.agents.health)


async def shutdown(ctx: Context) -> None:
    await ctx.agents.shutdown()


__all__ = ["AgentService", "handlers", "openapi", "shutdown", "startup"]
