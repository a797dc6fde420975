"""The HTTP side of OpenSpec (API.md "OpenSpec"): thin handlers over :class:`OpenSpecService`."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.base import ApiError, ApiHandler
from wsruntime_ext.openapi import route

PREFIX = "/api/v1/workspaces/{workspace_id}/openspec"
MAX_INPUT = 64 << 10


class StateHandler(ApiHandler):
    async def get(self, workspace_id: str) -> None:
        self.check_workspace(workspace_id)
        self.send_json(await self.ctx.openspec.state())


class ActionHandler(ApiHandler):
    async def post(self, workspace_id: str, action: str) -> None:
        self.check_workspace(workspace_id)
        body: dict[str, Any] = self.json_body() if self.body_bytes.strip() else {}
        change = self.field_str(body, "change")
        if change is not None and (not change or "\x00" in change or "/" in change or len(change) > 255):
            raise ApiError(400, "invalid_field", "Field 'change' must be a change's folder name", field="change")
        text = self.field_str(body, "input")
        if text is not None and ("\x00" in text or len(text) > MAX_INPUT):
            raise ApiError(400, "invalid_field", "Field 'input' must be text under 64 KiB without NUL", field="input")
        result = await self.ctx.openspec.run_action(action, change, text)
        self.send_json(result, 201)


handlers = [
    route(PREFIX, StateHandler),
    route(PREFIX + "/actions/{action}", ActionHandler),
]
