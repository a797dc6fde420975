"""HTTP and WebSocket handlers of API.md "Scripts": thin, over :class:`ScriptService`."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import tornado.iostream
import tornado.websocket

from wsruntime_ext.base import ApiError, ApiHandler, ApiWebSocket
from wsruntime_ext.processes.live import LIVE_BATCH
from wsruntime_ext.processes.runs import Cursor
from wsruntime_ext.scripts.discovery import usable_env_name
from wsruntime_ext.scripts.service import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, STATUSES, ScriptRun, ScriptService

MAX_ARGS = 1000
MAX_ENV = 1000
MAX_VALUE = 128 << 10  # one argument or environment value (the kernel's own limit per string)
STREAM_BATCH = 1 << 20  # bytes of frames read from disk per step of a streaming client
CLIENT_STALL_S = 30.0  # a socket that takes nothing for this long is closed with 1013


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


class RunStreamSocket(ApiWebSocket):
    """``WS /api/v1/ws/scripts/runs/{run_id}?after=SEQ``: stored output after SEQ, then live, then ``exit``."""

    run: ScriptRun
    after = 0
    closing = False

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.run = self.ctx.scripts.get(kwargs.get("run_id") or args[0])  # 404 before the upgrade
        self.after = self.query_after()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.set_nodelay(True)
        self.more = asyncio.Event()
        self.run.listen(self.more)
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        run = self.run
        service = self.ctx.scripts
        cursor = Cursor(self.after + 1)
        try:
            while not self.closing:
                self.more.clear()
                ended = run.ended.is_set()  # read before the frames: an end seen here has all its output stored
                frames = service.read_live(run, cursor, LIVE_BATCH)  # the newest output, framed once for all
                if frames is None:
                    wanted = cursor.next_seq
                    lines, skipped = await service.read(run, cursor, STREAM_BATCH)
                    if skipped:
                        # Older output than the run keeps on disk: say so, and go on from what is kept.
                        self.send_message({"type": "output_dropped", "frames": skipped, "next_seq": wanted + skipped})
                    last = self.write_text_frames(lines) if lines else None
                else:
                    last = self.write_prepared_frames(frames) if frames else None
                if last is not None:
                    try:
                        await asyncio.wait_for(asyncio.shield(last), CLIENT_STALL_S)
                    except asyncio.TimeoutError:
                        self.closing = True
                        self.close(1013, "too far behind: reconnect with ?after=<last seq>")
                        return
                    continue
                if ended:  # and everything stored has been sent (a frame that failed to store never comes)
                    self.closing = True
                    self.send_message(run.exit_frame())
                    self.close(1000, "run ended")
                    return
                await self.more.wait()
        except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass

    def on_message(self, message: str | bytes) -> None:
        self.send_message(
            {
                "type": "reply",
                "ok": False,
                "error": {"code": "unknown_frame", "message": "This stream takes no messages", "details": {}},
            }
        )

    def on_close(self) -> None:
        super().on_close()
        self.closing = True
        run = getattr(self, "run", None)
        if run is not None and hasattr(self, "more"):
            run.unlisten(self.more)
            self.more.set()
