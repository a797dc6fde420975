"""The Files area (API.md "Files"): list, read, write, delete, upload, move, mkdir and search.

``service.py`` holds the logic (``FileService``), ``listing.py`` directory
listings, ``errors.py`` the mapping of OS errors to answers, ``upload.py``
the streamed all-or-nothing multipart upload, ``search.py`` content and name search
(ripgrep or a Python walk), ``group.py`` small writes landed in groups,
``handlers.py`` the thin HTTP layer and ``spec.py`` the OpenAPI
description of the routes below.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from wsruntime_ext.files.group import WriteGroups
from wsruntime_ext.files.handlers import (
    FileHandler,
    ListHandler,
    MkdirHandler,
    MoveHandler,
    SearchHandler,
    UploadHandler,
)
from wsruntime_ext.files.search import SearchService
from wsruntime_ext.files.service import FileService
from wsruntime_ext.files.spec import openapi
from wsruntime_ext.openapi import route

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

# The POST-only routes come first and match POST alone, so that GET /api/v1/files/upload still
# reads a file named "upload".
handlers = [
    route("/api/v1/files", ListHandler),
    route("/api/v1/files/upload", UploadHandler, methods=["POST"]),
    route("/api/v1/files/move", MoveHandler, methods=["POST"]),
    route("/api/v1/files/mkdir", MkdirHandler, methods=["POST"]),
    route("/api/v1/files/{path}", FileHandler, path=".*"),
    route("/api/v1/search", SearchHandler),
]


async def startup(ctx: Context) -> None:
    ctx.files = FileService(ctx.config, ctx.temps)
    ctx.write_groups = WriteGroups(ctx.files)
    ctx.search = SearchService(ctx.config.workspace, ctx.files.state_dir, ctx.files.walk)
    backend: dict[str, Any] = {"search": {"backend": ctx.search.backend}}
    ctx.health_providers.append(lambda: backend)


async def shutdown(ctx: Context) -> None:
    ctx.files.shutdown()
    await asyncio.wrap_future(ctx.write_groups.close())  # what is queued lands before the runtime stops


__all__ = ["FileService", "SearchService", "WriteGroups", "handlers", "openapi", "shutdown", "startup"]
