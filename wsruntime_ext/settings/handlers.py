"""The HTTP side of the settings: one thin handler per part (whole settings, hooks, MCP servers)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.base import ApiError, ApiHandler
from wsruntime_ext.openapi import route
from wsruntime_ext.settings.service import (
    READ_SCOPES,
    SCOPES,
    Conditions,
    SettingsService,
    parse_etags,
    part_of_body,
)


class SettingsPartHandler(ApiHandler):
    """GET and PUT of one part of a scope's settings; ``part`` names it (the key of the body)."""

    part = "settings"

    @property
    def service(self) -> SettingsService:  # not "settings": that is Tornado's application settings
        return self.ctx.settings

    def scope(self, writing: bool) -> str:
        scope = self.query("scope", "project")
        if scope not in READ_SCOPES:
            raise ApiError(
                400,
                "invalid_parameter",
                f"Query parameter 'scope' must be one of {', '.join(READ_SCOPES)}",
                parameter="scope",
            )
        if writing and scope not in SCOPES:
            raise ApiError(
                400,
                "scope_read_only",
                "The effective view is read-only: PUT to scope project, local or user",
                scope=scope,
            )
        return scope

    async def get(self) -> None:
        answer, etag = await self.service.read(self.scope(writing=False), self.part)
        self.set_header("ETag", etag)
        self.send_json(answer)

    async def put(self) -> None:
        scope = self.scope(writing=True)
        force = self.query_bool("force")
        conditions = Conditions(
            parse_etags(self.request.headers.get("If-Match")), parse_etags(self.request.headers.get("If-None-Match"))
        )
        body: Any
        try:
            body = self.json_body()
        except ApiError as exc:
            if exc.code == "invalid_json":
                raise
            body = None  # empty, or JSON that is not an object: a bad settings body like any other
        value = part_of_body(body, self.part, scope)
        answer, etag = await self.service.write(scope, self.part, value, conditions, force)
        self.set_header("ETag", etag)
        self.send_json(answer)


class HooksHandler(SettingsPartHandler):
    part = "hooks"


class McpHandler(SettingsPartHandler):
    part = "mcpServers"


handlers = [
    route("/api/v1/settings", SettingsPartHandler),
    route("/api/v1/settings/hooks", HooksHandler),
    route("/api/v1/settings/mcp", McpHandler),
]
