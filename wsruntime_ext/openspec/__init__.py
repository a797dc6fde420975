"""OpenSpec (API.md "OpenSpec"): the workspace's spec-driven state and its workflow actions, read natively.

``yamlish.py`` reads the YAML subset OpenSpec uses, ``schema.py`` the workflow
schemas and their artifact graph, ``reader.py`` computes what the ``openspec``
CLI's ``list``, ``list --specs``, ``status --all`` and apply state report (no Node
at run time), ``profile.py`` which workflows exist under the profile in effect,
``actions.py`` which workflow actions apply when, ``service.py`` the
cached state and the actions (agent sessions through ``ctx.agents``, ``init``
through the CLI), ``handlers.py`` the HTTP layer and ``spec.py`` its OpenAPI
description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsruntime_ext.openspec.handlers import handlers
from wsruntime_ext.openspec.service import OpenSpecService
from wsruntime_ext.openspec.spec import openapi

if TYPE_CHECKING:
    from wsruntime_ext.context import Context


async def startup(ctx: Context) -> None:
    ctx.openspec = OpenSpecService(ctx, ctx.config.openspec_bin)
    ctx.openspec.start()
    ctx.health_providers.append(ctx.openspec.health)


__all__ = ["OpenSpecService", "handlers", "openapi", "startup"]
