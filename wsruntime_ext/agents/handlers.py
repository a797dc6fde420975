"""HTTP and WebSocket handlers of API.md "Agent sessions": thin, over :class:`AgentService`."""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any

import tornado.iostream
import tornado.websocket

from wsruntime_ext.agents.adapter import OPTION_FIELDS, AgentAdapter, SessionOptions
from wsruntime_ext.agents.service import STATUSES, public
from wsruntime_ext.agents.session import AgentSession
from wsruntime_ext.base import ApiError, ApiHandler, loads_client_json
from wsruntime_ext.paths import resolve_in_workspace
from wsruntime_ext.websocket import ApiWebSocket

PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan")
BATCH = 256  # frames written before waiting for the socket to take them
LIVE_BACKLOG = 10_000  # deltas queued for one client; past that it gets no more until it catches up
MAX_PROMPT = 1 << 20


BLANK = " \t\n\x0b\x0c\r"  # what "only white space" means here, and in the OpenAPI patterns


def _argv_value(body: dict[str, Any], name: str) -> str | None:
    """A string that becomes a command-line value: no NUL, not empty, never read as a flag."""
    value = ApiHandler.field_str(body, name)
    if value is not None and not usable_argv(value):
        raise ApiError(
            400, "invalid_field", f"Field {name!r} must not be empty, start with '-' or hold NUL", field=name
        )
    return value


def usable_argv(value: str) -> bool:
    return value != "" and value[0] not in "-\x00" + BLANK and "\x00" not in value


def _argv_list(body: dict[str, Any], name: str) -> list[str]:
    values = ApiHandler.field_str_list(body, name) or []
    if not all(usable_argv(v) for v in values):
        raise ApiError(400, "invalid_field", f"Field {name!r} holds an unusable tool name", field=name)
    return values


def _text(body: dict[str, Any], name: str) -> str | None:
    value = ApiHandler.field_str(body, name)
    if value is not None and ("\x00" in value or len(value) > MAX_PROMPT):
        raise ApiError(400, "invalid_field", f"Field {name!r} must be text under 1 MiB without NUL", field=name)
    return value


def _message_text(value: str) -> bool:
    """A prompt or follow-up: not only white space, no NUL, at most 1 MiB."""
    return bool(value.strip(BLANK)) and "\x00" not in value and len(value) <= MAX_PROMPT


class SessionsHandler(ApiHandler):
    def get(self) -> None:
        status = self.query("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_parameter", f"status must be one of {', '.join(STATUSES)}", parameter="status")
        self.send_json({"sessions": self.ctx.agents.list(status)})

    async def post(self) -> None:
        body = self.json_body()
        service = self.ctx.agents
        agent = self.field_str(body, "agent", "claude-code") or "claude-code"
        adapter = service.adapter(agent)
        prompt = self.field_str(body, "prompt")
        if prompt is not None and not _message_text(prompt):
            raise ApiError(400, "invalid_field", "Field 'prompt' must be non-empty text under 1 MiB", field="prompt")
        resume = _argv_value(body, "resume")
        if prompt is None and resume is None:
            raise ApiError(
                400, "invalid_field", "Field 'prompt' is required (unless 'resume' is given)", field="prompt"
            )
        if prompt is None and adapter.prompt_in_argv:
            raise ApiError(400, "invalid_field", f"Field 'prompt' is required for {agent}", field="prompt")
        check_supported(adapter, body)
        permission_mode = self.field_str(body, "permission_mode")
        modes = adapter.permission_modes or PERMISSION_MODES
        if permission_mode is not None and permission_mode not in modes:
            raise ApiError(
                400,
                "invalid_field",
                f"permission_mode for {agent} must be one of {', '.join(modes)}",
                field="permission_mode",
            )
        max_turns = body.get("max_turns")
        if type(max_turns) is float and max_turns.is_integer():
            max_turns = int(max_turns)  # JSON's 5.0 is the integer 5
        if max_turns is not None and (type(max_turns) is not int or not 1 <= max_turns <= 10_000):
            raise ApiError(400, "invalid_field", "max_turns must be an integer from 1 to 10000", field="max_turns")
        cwd_field = self.field_str(body, "cwd", "") or ""
        resume_sid, resume_cwd, resumed_from = None, None, None
        if resume is not None:
            resume_sid, resume_cwd, resumed_from = service.resolve_resume(
                resume, cwd_field if "cwd" in body else None, agent
            )
        where = resolve_in_workspace(self.ctx.workspace, resume_cwd if resume_cwd is not None else cwd_field)
        if not await self.ctx.run_blocking(os.path.isdir, where.real):
            raise ApiError(404, "cwd_not_found", "cwd must name an existing directory in the workspace", cwd=where.rel)
        options = SessionOptions(
            prompt=prompt,
            cwd=where.real,
            model=_argv_value(body, "model"),
            permission_mode=permission_mode,
            allowed_tools=_argv_list(body, "allowed_tools"),
            disallowed_tools=_argv_list(body, "disallowed_tools"),
            system_prompt=_text(body, "system_prompt"),
            append_system_prompt=_text(body, "append_system_prompt"),
            max_turns=max_turns,
            resume_agent_session_id=resume_sid,
            interactive=self.field_bool(body, "interactive"),
            permission_prompts=self.field_bool(body, "permission_prompts"),
            deltas=self.field_bool(body, "deltas"),
        )
        session = await service.create(agent, options, where.rel, resumed_from or (resume if resume else None))
        self.send_json(public(session.record), 201)


def check_supported(adapter: AgentAdapter, body: dict[str, Any]) -> None:
    """400 ``unsupported_option`` naming the first option set in ``body`` that the agent does not take.

    An option left at its "nothing" value (null, false, an empty list) is not set.
    """
    for name in OPTION_FIELDS:
        value = body.get(name)
        if value is None or value is False or value == []:
            continue
        if name not in adapter.option_names:
            raise ApiError(
                400,
                "unsupported_option",
                f"The {adapter.name} agent does not support {name!r}",
                field=name,
                agent=adapter.name,
                supported=list(adapter.option_names),
            )


class SessionHandler(ApiHandler):
    def get(self, session_id: str) -> None:
        self.send_json(public(self.ctx.agents.get(session_id).record))

    async def delete(self, session_id: str) -> None:
        service = self.ctx.agents
        self.send_json(await service.terminate(service.get(session_id)))


class MessagesHandler(ApiHandler):
    async def get(self, session_id: str) -> None:
        service = self.ctx.agents
        session = service.get(session_id)
        after = self.query_int("after", 0, 0)
        limit = self.query_int("limit", 1000, 1, 10_000)
        texts = await service.load_messages(session)
        chosen = texts[after : after + limit]
        has_more = after + limit < len(texts)
        # The stored texts are JSON already: joined, not re-encoded.
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(
            b'{"messages":[' + b",".join(chosen) + b'],"has_more":' + (b"true" if has_more else b"false") + b"}"
        )

    async def post(self, session_id: str) -> None:
        body = self.json_body()
        content = self.field_str(body, "content", required=True)
        assert content is not None
        if not _message_text(content):
            raise ApiError(400, "invalid_field", "Field 'content' must be non-empty text under 1 MiB", field="content")
        service = self.ctx.agents
        await service.follow_up(service.get(session_id), content)
        self.send_json({"accepted": True}, 202)


class InterruptHandler(ApiHandler):
    def post(self, session_id: str) -> None:
        service = self.ctx.agents
        service.interrupt(service.get(session_id))
        self.send_json({"accepted": True}, 202)


def permission_answer(body: dict[str, Any]) -> tuple[bool, str | None]:
    """``{"behavior": "allow"|"deny", "message"?}`` → (allow, message), or 400."""
    behavior = body.get("behavior")
    if behavior not in ("allow", "deny"):
        raise ApiError(400, "invalid_field", "behavior must be 'allow' or 'deny'", field="behavior")
    message = ApiHandler.field_str(body, "message")
    if message is not None and len(message) > MAX_PROMPT:
        raise ApiError(400, "invalid_field", "message is too long", field="message")
    return behavior == "allow", message


class PermissionHandler(ApiHandler):
    def post(self, session_id: str, request_id: str) -> None:
        allow, message = permission_answer(self.json_body())
        service = self.ctx.agents
        service.answer_permission(service.get(session_id), request_id, allow, message)
        self.send_json({"accepted": True}, 202)


class AgentsHandler(ApiHandler):
    async def get(self) -> None:
        self.send_json({"agents": await self.ctx.agents.list_agents()})


class AgentStreamSocket(ApiWebSocket):
    """``WS /api/v1/ws/agent-sessions/{id}?after=SEQ``: replay, then live, in order, none twice."""

    session: AgentSession
    after = 0
    closing = False

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.session = self.ctx.agents.get(kwargs.get("session_id") or args[0])  # 404 before the upgrade
        self.after = self.query_after()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.set_nodelay(True)
        self.texts = await self.ctx.agents.load_messages(self.session)
        self.next_seq = self.after + 1
        self.joined_at = self.session.last_seq
        self.wakeup = asyncio.Event()
        # Live-only frames (deltas) waiting for their place: (seq of the stored frame they follow, text).
        self.live_frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self.session.listeners.add(self)
        self.pump = asyncio.ensure_future(self._pump())

    def wake(self) -> None:
        """New frames (or the end): a client too far behind is closed, never waited for."""
        lag = self.session.last_seq - max(self.next_seq - 1, self.joined_at)
        if lag > self.ctx.agents.client_backlog:
            self._too_slow()
            return
        self.wakeup.set()

    def live(self, after: int, text: bytes) -> None:
        """A delta: queued in its place among the stored frames; a client this far behind gets no more of them.

        Deltas are a preview of a block whose complete frame comes anyway: dropping them loses nothing.
        """
        if len(self.live_frames) < LIVE_BACKLOG:
            self.live_frames.append((after, text))

    def _too_slow(self) -> None:
        if not self.closing:
            self.closing = True
            self.session.listeners.discard(self)
            self.close_after_queued(1013, "too far behind: reconnect with ?after=<last seq>")
            self.wakeup.set()

    async def _pump(self) -> None:
        session = self.session
        try:
            while not self.closing:
                # The list this socket loaded stays valid even if an ended session's copy is let go of.
                texts = session.messages if session.messages is not None else self.texts
                while not self.closing:
                    batch = self._next_batch(texts)
                    if not batch:
                        break
                    last = self.write_text_frames(batch)
                    # Taken at once by the socket (the usual case): no timer and no task to wait on it.
                    if last is not None and not (isinstance(last, asyncio.Future) and last.done()):
                        try:
                            await asyncio.wait_for(asyncio.shield(last), self.ctx.agents.client_stall_s)
                        except asyncio.TimeoutError:
                            self._too_slow()
                            return
                if session.is_ended:
                    self.closing = True
                    self.close_after_queued(1000, "session ended")
                    return
                await self.wakeup.wait()
                self.wakeup.clear()
        except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass

    def _next_batch(self, texts: list[bytes]) -> list[bytes]:
        """The next frames to send, in stream order: stored frames up to the next delta's place, then deltas."""
        sent = self.next_seq - 1
        live = self.live_frames
        batch: list[bytes] = []
        while live and live[0][0] <= sent and len(batch) < BATCH:
            after, text = live.popleft()
            if after == sent:  # one whose place this client skipped (it attached with a later ?after=) is dropped
                batch.append(text)
        if batch:
            return batch
        end = min(len(texts), sent + BATCH)
        if live:
            end = min(end, live[0][0])
        if end <= sent:
            return batch
        self.next_seq = end + 1
        return texts[sent:end]

    async def on_message(self, message: str | bytes) -> None:
        try:
            frame = loads_client_json(message)
        except (ValueError, UnicodeDecodeError):
            frame = None
        if not isinstance(frame, dict):
            self._reply_error(ApiError(400, "invalid_json", "A frame must be a JSON object"))
            return
        service = self.ctx.agents
        try:
            kind = frame.get("type")
            if kind == "user":
                content = frame.get("content")
                if not isinstance(content, str) or not _message_text(content):
                    raise ApiError(400, "invalid_field", "content must be non-empty text", field="content")
                await service.follow_up(self.session, content)
            elif kind == "interrupt":
                service.interrupt(self.session)
            elif kind == "permission":
                request_id = frame.get("request_id")
                if not isinstance(request_id, str):
                    raise ApiError(400, "invalid_field", "request_id must be a string", field="request_id")
                allow, text = permission_answer(frame)
                service.answer_permission(self.session, request_id, allow, text)
            else:
                raise ApiError(400, "unknown_frame", "type must be user, interrupt or permission")
        except ApiError as exc:
            self._reply_error(exc)

    def _reply_error(self, exc: ApiError) -> None:
        # A reply to this client only: not part of the stream, so it has no seq.
        self.send_message(
            {"type": "reply", "ok": False, "error": {"code": exc.code, "message": exc.message, "details": exc.details}}
        )

    def on_close(self) -> None:
        super().on_close()
        self.closing = True
        session = getattr(self, "session", None)
        if session is not None:
            session.listeners.discard(self)
        if hasattr(self, "wakeup"):
            self.wakeup.set()
