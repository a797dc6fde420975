"""HTTP and WebSocket handlers of API.md "Processes and terminals": thin, over :class:`ProcessService`."""

from __future__ import annotations

import base64
import binascii
import logging
import math
from typing import Any

from wsruntime_ext.base import ApiError, ApiHandler, loads_client_json
from wsruntime_ext.processes.service import SIGNALS, STATUSES, ProcessRequest, ProcessService
from wsruntime_ext.processes.stream import STREAM_BATCH, RunOutputSocket

log = logging.getLogger("wsruntime.processes")

MAX_ARGS = 1000
MAX_ENV = 1000
MAX_VALUE = 128 << 10  # one argument or environment value (the kernel's own limit per string)
MAX_NAME = 200
MAX_SIZE = 1000  # columns or rows
MAX_TIMEOUT_S = 7 * 86400.0


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", message, field=field)


def _size(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise _invalid(field, f"{field} must be an integer from 1 to {MAX_SIZE}")
    return value


def _no_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" not in value and len(value) <= MAX_VALUE


def process_request(body: dict[str, Any]) -> ProcessRequest:
    """A start request, validated (400 invalid_field naming the field)."""
    request = ProcessRequest()
    command, shell = body.get("command"), body.get("shell")
    if command is not None and shell is not None:
        raise _invalid("command", "Give either command (an argv list) or shell (a command line), not both")
    if command is not None:
        if (
            not isinstance(command, list)
            or not command
            or len(command) > MAX_ARGS
            or not all(_no_nul(a) for a in command)
            or command[0] == ""
        ):
            raise _invalid("command", "command must be a non-empty list of strings without NUL")
        request.command = list(command)
    if shell is not None:
        if not _no_nul(shell) or not shell.strip():
            raise _invalid("shell", "shell must be a non-empty command line without NUL")
        request.shell = shell
    cwd = body.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str):
            raise _invalid("cwd", "cwd must be a workspace-relative path")
        request.cwd = cwd
    env = body.get("env")
    if env is not None:
        if (
            not isinstance(env, dict)
            or len(env) > MAX_ENV
            or not all(k and "=" not in k and "\x00" not in k for k in env)
            or not all(_no_nul(v) for v in env.values())
        ):
            raise _invalid("env", "env must map names (not empty, no '=' or NUL) to strings without NUL")
        request.env = dict(env)
    stdin = body.get("stdin")
    if stdin is not None:
        if not isinstance(stdin, bool):
            raise _invalid("stdin", "stdin must be true or false")
        request.stdin = stdin
    timeout = body.get("timeout_s")
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT_S
        ):
            raise _invalid("timeout_s", f"timeout_s must be null or seconds > 0 and <= {MAX_TIMEOUT_S:g}")
        request.timeout_s = float(timeout)
    pty = body.get("pty")
    if pty is not None:
        if not isinstance(pty, dict):
            raise _invalid("pty", "pty must be null or {cols, rows}")
        request.pty = (_size(pty.get("cols"), "cols"), _size(pty.get("rows"), "rows"))
    if request.command is None and request.shell is None and request.pty is None:
        raise _invalid("command", "command (an argv list) or shell is required, unless pty asks for a terminal")
    name = body.get("name")
    if name is not None:
        if not isinstance(name, str) or len(name) > MAX_NAME or "\x00" in name:
            raise _invalid("name", f"name must be null or a string of at most {MAX_NAME} characters")
        request.name = name
    return request


def input_data(body: dict[str, Any]) -> tuple[bytes, bool]:
    """``data`` (text) or ``data_base64`` (bytes), and ``eof``, of an input request or frame."""
    data, encoded, eof = body.get("data"), body.get("data_base64"), body.get("eof", False)
    if not isinstance(eof, bool):
        raise _invalid("eof", "eof must be true or false")
    if data is not None and encoded is not None:
        raise _invalid("data", "Give data or data_base64, not both")
    if data is not None:
        if not isinstance(data, str):
            raise _invalid("data", "data must be a string")
        return data.encode("utf-8", "surrogatepass"), eof
    if encoded is not None:
        try:
            if not isinstance(encoded, str):
                raise ValueError
            return base64.b64decode(encoded, validate=True), eof
        except (ValueError, binascii.Error):
            raise _invalid("data_base64", "data_base64 must be base64") from None
    if not eof:
        raise _invalid("data", "data, data_base64 or eof is required")
    return b"", eof


def signal_field(body: dict[str, Any]) -> str:
    name = body.get("signal")
    if name not in SIGNALS:
        raise ApiError(400, "invalid_signal", f"signal must be one of {', '.join(SIGNALS)}", signals=list(SIGNALS))
    return str(name)


class ProcessesHandler(ApiHandler):
    client_gone = False

    def get(self) -> None:
        status = self.query("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_parameter", f"status must be one of {', '.join(STATUSES)}", parameter="status")
        limit = self.query_int("limit", 200, 1, 1000)
        self.send_json({"processes": self.ctx.processes.list_runs(status, limit)})

    async def post(self) -> None:
        wait = self.query_bool("wait")
        request = process_request(self.json_body())
        if wait and request.pty is not None:
            raise _invalid("pty", "?wait=true is for processes on pipes, not terminals")
        service: ProcessService = self.ctx.processes
        run = await service.start_process(request)
        if not wait:
            self.send_json(service.public(run), 201)
            return
        # A client that goes away does not stop the process: GET /processes/{id} tells how it ended.
        answer = await service.wait_output(run)
        if not self.client_gone:
            self.send_json(answer)

    def on_connection_close(self) -> None:
        self.client_gone = True
        super().on_connection_close()


class ProcessHandler(ApiHandler):
    def get(self, process_id: str) -> None:
        service = self.ctx.processes
        self.send_json(service.public(service.get(process_id)))

    async def delete(self, process_id: str) -> None:
        service = self.ctx.processes
        self.send_json(await service.kill(service.get(process_id)))


class InputHandler(ApiHandler):
    async def post(self, process_id: str) -> None:
        service = self.ctx.processes
        run = service.get(process_id)
        data, eof = input_data(self.json_body())
        self.send_json({"written": await service.write_input(run, data, eof)})


class SignalHandler(ApiHandler):
    def post(self, process_id: str) -> None:
        service = self.ctx.processes
        run = service.get(process_id)
        service.send_signal(run, signal_field(self.json_body()))
        self.send_json(service.public(run))


class ResizeHandler(ApiHandler):
    def post(self, process_id: str) -> None:
        service = self.ctx.processes
        run = service.get(process_id)
        body = self.json_body()
        cols, rows = _size(body.get("cols"), "cols"), _size(body.get("rows"), "rows")
        service.resize(run, cols, rows)
        self.send_json(service.public(run))


class ProcessStreamSocket(RunOutputSocket):
    """``WS /api/v1/ws/processes/{id}?after=``: hello, stored output after ``after``, live output, ``exit``;
    a terminal's output as binary frames from a byte offset (``stream.py`` has the pipes' pump)."""

    end_reason = "process ended"

    @property
    def engine(self) -> ProcessService:
        return self.ctx.processes

    async def pump_output(self) -> None:
        if self.run.is_terminal:
            await self._pump_terminal()
        else:
            await self.pump_pipes({"type": "hello", "process": self.engine.public(self.run)})

    async def _pump_terminal(self) -> None:
        run, service = self.run, self.engine
        terminal_log = run.terminal_log
        assert terminal_log is not None
        position = min(self.after, terminal_log.end)
        oldest = terminal_log.oldest
        truncated = position < oldest
        position = max(position, oldest)
        self.send_message({"type": "hello", "process": service.public(run), "offset": position, "truncated": truncated})
        while not self.closing:
            self.more.clear()
            ended = run.ended.is_set()  # read before the bytes: an end seen here has all its output stored
            begin, data = await service.read_terminal(run, position, STREAM_BATCH)
            if begin > position:
                # The scrollback moved past what this client has: it fell behind.
                self.close_with(1013, "too far behind: reconnect with ?after=")
                return
            if data:
                position = begin + len(data)
                written = self.write_message(data, binary=True)
                if not await self.sent(written, position, lambda: terminal_log.end):
                    return
                continue
            if ended:
                self.end()
                return
            await self.more.wait()

    async def on_message(self, message: str | bytes) -> None:
        service = self.engine
        try:
            if isinstance(message, bytes):
                await service.write_input(self.run, message)
                return
            try:
                frame = loads_client_json(message)
            except ValueError:
                raise ApiError(400, "invalid_json", "A text frame must be a JSON object") from None
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == "input":
                data, eof = input_data(frame)
                await service.write_input(self.run, data, eof)
            elif kind == "eof":
                await service.write_input(self.run, b"", True)
            elif kind == "resize":
                service.resize(self.run, _size(frame.get("cols"), "cols"), _size(frame.get("rows"), "rows"))
            elif kind == "signal":
                service.send_signal(self.run, signal_field(frame))
            else:
                raise ApiError(400, "unknown_frame", "Frames are input, eof, resize or signal (or binary input)")
        except ApiError as exc:
            self.send_message(
                {
                    "type": "reply",
                    "ok": False,
                    "error": {"code": exc.code, "message": exc.message, "details": exc.details},
                }
            )
