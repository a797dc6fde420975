"""Claude Code settings, hooks and MCP servers (API.md "Claude Code settings").

``GET``/``PUT`` ``/api/v1/settings``, ``/settings/hooks`` and ``/settings/mcp``
with ``?scope=project|local|user`` (and the read-only merged ``effective``
view); ``?agent=codex|gemini|qwen-code|opencode`` for the other agents
(``agent_settings.py``, declared per agent in ``profiles.py``), and
``PATCH …/mcp?agent=all`` for all five at once. ``schema.py`` validates bodies with JSON paths, ``service.py`` knows
where each scope lives and reads, merges and writes files atomically and
conflict-safely, ``handlers.py`` is the thin HTTP layer and ``spec.py`` the
OpenAPI description. The home directory is the one the agent sessions get
(``--home``, default ``$HOME``), so what is written here is what the
``claude`` CLI the runtime launches reads.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from wsruntime_ext.settings import codex_hooks
from wsruntime_ext.settings.agent_settings import AgentSettingsService
from wsruntime_ext.settings.handlers import handlers
from wsruntime_ext.settings.service import SettingsService
from wsruntime_ext.settings.spec import openapi

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

__all__ = ["AgentSettingsService", "SettingsService", "handlers", "openapi", "startup"]


async def startup(ctx: Context) -> None:
    ctx.settings = SettingsService(ctx.workspace, ctx.config.home_dir, ctx.run_blocking, temps=ctx.temps)

    def environment() -> dict[str, str]:
        # The environment agent sessions get (--home, a test's overrides): where each CLI looks for its files.
        agents = getattr(ctx, "agents", None)
        return agents.session_environment() if agents is not None else {**os.environ, "HOME": ctx.config.home_dir}

    async def list_codex_hooks() -> list[dict[str, Any]]:
        # Codex's hooks as the CLI the sessions run sees them, with the sessions' environment (codex_hooks.py).
        agents = getattr(ctx, "agents", None)
        adapter = agents.adapter("codex") if agents is not None else None
        binary = adapter.binary if adapter is not None else (ctx.config.codex_bin or "codex")
        path = binary if os.sep in binary else shutil.which(binary)
        if path is None or not os.access(path, os.X_OK):
            raise codex_hooks.CodexMissing(f"the codex CLI ({binary}) is not installed")
        env = adapter.environment(environment()) if adapter is not None else environment()
        return await codex_hooks.list_hooks(ctx.procs, path, env, ctx.workspace)

    ctx.agent_settings = AgentSettingsService(
        ctx.workspace,
        ctx.config.home_dir,
        ctx.run_blocking,
        ctx.settings,
        environment,
        temps=ctx.temps,
        list_codex_hooks=list_codex_hooks,
    )
    await ctx.run_blocking(ctx.agent_settings.refresh_files)
