"""Claude Code settings, hooks and MCP servers (API.md "Claude Code settings").

``GET``/``PUT`` ``/api/v1/settings``, ``/settings/hooks`` and ``/settings/mcp``
with ``?scope=project|local|user`` (and the read-only merged ``effective``
view). ``schema.py`` validates bodies with JSON paths, ``service.py`` knows
where each scope lives and reads, merges and writes files atomically and
conflict-safely, ``handlers.py`` is the thin HTTP layer and ``spec.py`` the
OpenAPI description. The home directory is the one the agent sessions get
(``--home``, default ``$HOME``), so what is written here is what the
``claude`` CLI the runtime launches reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsruntime_ext.settings.handlers import handlers
from wsruntime_ext.settings.service import SettingsService
from wsruntime_ext.settings.spec import openapi

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

__all__ = ["SettingsService", "handlers", "openapi", "startup"]


async def startup(ctx: Context) -> None:
    ctx.settings = SettingsService(ctx.workspace, ctx.config.home_dir, ctx.run_blocking)
