"""HTTP and WebSocket handlers of API.md "Scripts": thin, over :class:`ScriptService`."""

from __future__ import annotations

import math
from typing import Any

from wsruntime_ext.base import ApiError, ApiHandler
from wsruntime_ext.processes.stream import RunOutputSocket
from wsruntime_ext.scripts.discovery import usable_env_name
from wsruntime_ext.scripts.service import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, STATUSES, ScriptRun, ScriptService

MAX_ARGS = 1000
MAX_ENV = 1000
MAX_VALUE = 128 << 10  # one argument or environment value (the kernel's own limit per string)


def run_options(body: dict[str, Any]) -> tuple[list[str], dict[str, str], float]:
    """``args``, ``env`` and ``timeout_s`` of a run request, validated (400 invalid_field naming the field)."""
    args = ApiHandler.field_str_list(body, "args") or []
    if len(args) > MAX_ARGS or not all("\x00" not in a and len(a) <= MAX_VALUE for a in args):
        raise ApiError(
            400, "invalid_field", f"args: at most {MAX_ARGS} strings without NUL, each at most 128 KiB", field="args"
        )
    env = body.get("env")
    if env is None:
        env = {}
    if (
        not isinstance(env, dict)
        or len(env) > MAX_ENV
        or not all(isinstance(v, str) and "\x00" not in v and len(v) <= MAX_VALUE for v in env.values())
        or not all(usable_env_name(k) for k in env)
    ):
        raise ApiError(
            400,
            "invalid_field",
            "env must map names (not empty, no '=' or NUL) to strings without NUL",
            field="env",
        )
    timeout = body.get("timeout_s")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_S
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise ApiError(
            400,
            "invalid_field",
            f"timeout_s must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:g}",
            field="timeout_s",
        )
    return args, env, float(timeout)


class ScriptsHandler(ApiHandler):
    async def get(self) -> None:
        self.send_json((await self.ctx.scripts.discover()).as_json())


class RunScriptHandler(ApiHandler):
    client_gone = False

    async def post(self, name: str) -> None:
        wait = self.query_bool("wait")
        args, env, timeout = run_options(self.json_body() if self.body_bytes.strip() else {})
        service = self.ctx.scripts
        run = await service.run(name, args, env, timeout)
        if not wait:
            self.send_json(service.public(run), 202)
            return
        # A client that goes away does not stop the run: it goes on, and GET /runs/{id} tells how it ended.
        await service.wait(run)
        if not self.client_gone:
            self.send_json(await with_output(service, run))

    def on_connection_close(self) -> None:
        self.client_gone = True
        super().on_connection_close()


async def with_output(service: ScriptService, run: ScriptRun) -> dict[str, Any]:
    text, cut = await service.script_output(run)
    return {**service.public(run), "output": text, "output_truncated": cut}


class RunsHandler(ApiHandler):
    def get(self) -> None:
        status = self.query("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_parameter", f"status must be one of {', '.join(STATUSES)}", parameter="status")
        limit = self.query_int("limit", 100, 1, 1000)
        self.send_json({"runs": self.ctx.scripts.list_runs(status, limit)})


class RunHandler(ApiHandler):
    async def get(self, run_id: str) -> None:
        service = self.ctx.scripts
        self.send_json(await with_output(service, service.get(run_id)))

    async def delete(self, run_id: str) -> None:
        service = self.ctx.scripts
        self.send_json(await service.cancel(service.get(run_id)))


class RunStreamSocket(RunOutputSocket):
    """``WS /api/v1/ws/scripts/runs/{run_id}?after=SEQ``: stored output after SEQ, then live, then ``exit``."""

    @property
    def engine(self) -> ScriptService:
        return self.ctx.scripts

    def on_message(self, message: str | bytes) -> None:
        self.send_message(
            {
                "type": "reply",
                "ok": False,
                "error": {"code": "unknown_frame", "message": "This stream takes no messages", "details": {}},
            }
        )
