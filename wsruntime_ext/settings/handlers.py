"""The HTTP side of the settings: one thin handler per part (whole settings, hooks, MCP servers)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.base import ApiError, ApiHandler
from wsruntime_ext.openapi import route
from wsruntime_ext.settings.agent_files import AGENT_SCOPES, AGENTS, CLAUDE
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

    def agent(self, allow_all: bool = False) -> str:
        agent = self.query("agent", CLAUDE) or CLAUDE
        if agent == "all" and allow_all:
            return agent
        if agent not in AGENTS:
            known = [*AGENTS, "all"] if allow_all else list(AGENTS)
            raise ApiError(400, "unknown_agent", f"Unknown agent {agent[:80]!r}", known=known)
        return agent

    def scope(self, writing: bool, agent: str = CLAUDE) -> str:
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
        if agent != CLAUDE and scope == "local":
            raise ApiError(
                400,
                "scope_unsupported",
                f"Only Claude Code has a local scope; {agent} has {', '.join(AGENT_SCOPES)}"
                + ("" if writing else " and effective"),
                scope=scope,
                agent=agent,
            )
        return scope

    async def get(self) -> None:
        agent = self.agent(allow_all=self.part == "mcpServers")
        scope = self.scope(writing=False, agent=agent)
        if agent == "all":
            self.send_json(await self.ctx.agent_settings.read_all(scope))
            return
        if agent == CLAUDE:
            answer, etag = await self.service.read(scope, self.part)
        else:
            answer, etag = await self.ctx.agent_settings.read(agent, scope, self.part)
        self.set_header("ETag", etag)
        self.send_json(answer)

    async def put(self) -> None:
        agent = self.agent()
        scope = self.scope(writing=True, agent=agent)
        force = self.query_bool("force")
        trust = self.query_bool("trust")
        conditions = Conditions(
            parse_etags(self.request.headers.get("If-Match")), parse_etags(self.request.headers.get("If-None-Match"))
        )
        value = part_of_body(self.settings_body(), self.part, scope)
        if agent == CLAUDE:
            answer, etag = await self.service.write(scope, self.part, value, conditions, force)
        else:
            answer, etag = await self.ctx.agent_settings.write(agent, scope, self.part, value, conditions, force, trust)
        self.set_header("ETag", etag)
        self.send_json(answer)

    def settings_body(self) -> Any:
        try:
            return self.json_body()
        except ApiError as exc:
            if exc.code == "invalid_json":
                raise
            return None  # empty, or JSON that is not an object: a bad settings body like any other


class HooksHandler(SettingsPartHandler):
    part = "hooks"


class McpHandler(SettingsPartHandler):
    part = "mcpServers"

    async def patch(self) -> None:
        """``?agent=all``: add, replace or remove servers for every agent at once, all or nothing."""
        agent = self.agent(allow_all=True)
        if agent != "all":
            raise ApiError(400, "invalid_parameter", "PATCH takes agent=all (one agent: PUT)", parameter="agent")
        scope = self.scope(writing=True, agent=agent)
        servers = part_of_body(self.settings_body(), self.part, scope)
        self.send_json(await self.ctx.agent_settings.patch_all(scope, servers, self.query_bool("trust")))


handlers = [
    route("/api/v1/settings", SettingsPartHandler),
    route("/api/v1/settings/hooks", HooksHandler),
    route("/api/v1/settings/mcp", McpHandler),
]
