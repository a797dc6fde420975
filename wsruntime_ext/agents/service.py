"""The agent session manager (API.md "Agent sessions"): create, list, get, terminate, follow-ups, recovery.

It knows no HTTP: the handlers validate and call it. Sessions live in memory
while the runtime runs and on disk (``store.py``) for good; at start-up the
sessions that were still running when the runtime stopped become
``interrupted``, and ``resume`` continues them through the CLI's own resume.
Every agent process carries ``WSRUNTIME_AGENT_SESSION=<id>`` in its
environment (and so does all it starts), so that what a killed runtime left
running — the CLI, its tools, a server a tool started in its own session — is
found and stopped at the next start, as processes and script runs are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from wsruntime_ext.agents.adapter import AgentAdapter, AgentInfo, SessionOptions
from wsruntime_ext.agents.claude_code import ClaudeCodeAdapter
from wsruntime_ext.agents.codex import CodexAdapter
from wsruntime_ext.agents.gemini import GeminiAdapter
from wsruntime_ext.agents.opencode import OpencodeAdapter
from wsruntime_ext.agents.qwen_code import QwenCodeAdapter
from wsruntime_ext.agents.session import ENDED_STATUSES, EVICT_S, LIVE_STATUSES, AgentSession, stop_tree
from wsruntime_ext.agents.store import SessionStore
from wsruntime_ext.base import ApiError
from wsruntime_ext.context import now_iso
from wsruntime_ext.paths import new_record_id
from wsruntime_ext.procs import stop_tagged
from wsruntime_ext.versions import DETECTION_WAIT_S

if TYPE_CHECKING:
    from wsruntime_ext.config import Config
    from wsruntime_ext.context import Context

log = logging.getLogger("wsruntime.agents")

STATUSES = ("starting", "running", "idle", "completed", "failed", "terminated", "interrupted")
TAG_VARIABLE = "WSRUNTIME_AGENT_SESSION"  # in every agent process's environment: the session it belongs to
LEFTOVER_GRACE_S = 1.0  # a left-behind agent gets SIGTERM (to save its conversation), then SIGKILL after this
STREAM_LIMIT = 1 << 16
# Frames live in the session's own list, so a lagging client costs a cursor, not a queue; still, a client
# this many live frames behind, or whose socket takes nothing for this long, is closed with 1013.
CLIENT_BACKLOG = 100_000
CLIENT_STALL_S = 15.0
FIRST_RUN_WAIT_S = 30.0  # the longest a session waits for its agent's first session to start


class AgentService:
    """Every agent session of the workspace, running or stored."""

    def __init__(self, ctx: Context, adapters: list[AgentAdapter]) -> None:
        self.ctx = ctx
        self.adapters = {a.name: a for a in adapters}
        self.info: dict[str, AgentInfo] = {}
        self._detection: asyncio.Future[None] | None = None
        self._detecting: dict[str, asyncio.Future[None]] = {}  # per agent: its own probe
        self.store = SessionStore(ctx.config.state_dir, ctx.temps)
        self.sessions: dict[str, AgentSession] = {}
        self.max_sessions = ctx.config.max_sessions
        self.env_overrides: dict[str, str] = {}  # added to every agent's environment (tests point it at a mock)
        self.client_backlog = CLIENT_BACKLOG
        self.client_stall_s = CLIENT_STALL_S
        self.detection_wait_s = DETECTION_WAIT_S  # the longest GET /api/v1/agents waits for a --version probe
        self._saving: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        # Per agent whose CLI must run alone the first time: opened once its first session said its id or ended.
        self._first_runs: dict[str, tuple[asyncio.Event, list[str]]] = {}

    # -- start-up and shutdown ---------------------------------------------------------

    async def start(self) -> None:
        """Load the stored sessions (running ones become ``interrupted``) and start detecting the CLIs."""
        # Detection reads an npm package.json (microseconds) or runs `<cli> --version` (a native binary or a
        # script: up to seconds when it starts Node): it must not delay the port opening.
        self._detection = asyncio.ensure_future(self._detect())
        stale: list[str] = []
        for record in await self.ctx.run_blocking(self.store.load_all):
            session = AgentSession(record, self.adapters.get(record.get("agent", "")), None, None, self._changed)
            self.sessions[session.id] = session
            if record.get("status") not in ENDED_STATUSES:
                stale.append(session.id)
                await self._mark_interrupted(session)
        if stale:
            # SIGTERM first: a CLI saves its conversation (resume reads it), then SIGKILL to what is left.
            found = await self.ctx.run_blocking(stop_tagged, TAG_VARIABLE, stale, LEFTOVER_GRACE_S)
            for session_id, pids in found.items():
                log.warning("stopped %d process(es) left behind by agent session %s", len(pids), session_id)

    async def _detect(self) -> None:
        async def detect(adapter: AgentAdapter) -> None:
            self.info[adapter.name] = await self.ctx.run_blocking(adapter.detect)  # known as soon as it is

        self._detecting = {name: asyncio.ensure_future(detect(a)) for name, a in self.adapters.items()}
        await asyncio.gather(*self._detecting.values())

    async def detected(self, timeout: float | None = None) -> bool:
        """Wait until the CLIs have been detected (once per runtime; at most ``timeout`` s); whether they are."""
        if self._detection is None:
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._detection), timeout)
        return self._detection.done()

    async def _agent_detected(self, agent: str) -> None:
        """Wait for this agent's own probe only (another CLI's slow ``--version`` does not delay it)."""
        if self._detection is None:
            return
        if not self._detecting:
            await asyncio.sleep(0)  # _detect has not started its probes yet
        probe = self._detecting.get(agent)
        await asyncio.shield(probe if probe is not None else self._detection)

    async def _mark_interrupted(self, session: AgentSession) -> None:
        """A session the runtime stopped while it ran: end its open turn and its stream, keep it resumable."""
        await self.load_messages(session)
        session.log = await self.ctx.run_blocking(self.store.open_log, session.id)
        if turn_was_open(session.messages or []):
            session.emit({"type": "error", "error": "interrupted: the runtime stopped"})
        session.record["pid"] = None
        session.set_status("interrupted")
        session.log.close()
        session.ended.set()
        asyncio.get_running_loop().call_later(EVICT_S, session.evict)

    async def shutdown(self) -> None:
        """Stop every live agent (they become ``interrupted``) and write every record."""
        live = [s for s in self.sessions.values() if not s.is_ended and s.task is not None]
        await asyncio.gather(*(s.stop("interrupted", 0.5, 0.5) for s in live), return_exceptions=True)
        pending = list(self._saving.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- persistence and events --------------------------------------------------------

    def _changed(self, session: AgentSession) -> None:
        """The record changed: tell the hub on a status change and save it (coalesced, off the IOLoop)."""
        status = session.status
        if session.record.get("_published") != status:
            session.record["_published"] = status
            # API.md names the session "id"; "session_id" stays as an alias for the clients written before.
            self.ctx.hub.publish(
                "agent_session",
                {"id": session.id, "session_id": session.id, "status": status, "agent": session.record["agent"]},
            )
        first = self._first_runs.get(session.record["agent"])
        if first is not None and session.id in first[1] and not first[0].is_set():
            if session.record.get("agent_session_id") or session.status in ENDED_STATUSES:
                first[0].set()  # the CLI has set up its state: the others may start
        self._dirty.add(session.id)
        if session.id not in self._saving:
            self._saving[session.id] = asyncio.ensure_future(self._save(session))

    async def _save(self, session: AgentSession) -> None:
        try:
            while session.id in self._dirty:
                self._dirty.discard(session.id)
                try:
                    await self.ctx.run_blocking(self.store.save, public(session.record))
                except Exception:
                    log.exception("cannot save agent session %s", session.id)
        finally:
            self._saving.pop(session.id, None)

    async def load_messages(self, session: AgentSession) -> list[bytes]:
        """The session's messages, read from disk the first time a stored session is asked for them."""
        if session.messages is None:
            texts = await self.ctx.run_blocking(self.store.read_messages, session.id)
            if session.messages is None:
                session.messages = texts
                session.record["message_count"] = len(texts)
        return session.messages

    # -- the API -----------------------------------------------------------------------

    async def list_agents(self) -> list[dict[str, Any]]:
        """Every adapter's CLI, once detected: a ``--version`` probe still running is waited for (bounded)."""
        await self.detected(self.detection_wait_s)
        await self.ctx.run_blocking(self.ctx.agent_settings.refresh_files)  # stat calls: off the IOLoop
        return self.agents()

    def agents(self) -> list[dict[str, Any]]:
        """Every adapter's CLI as known now; one still being probed says ``detecting``."""
        found = []
        for name, adapter in self.adapters.items():
            info = self.info.get(name)
            if info is None:
                info = adapter.info(False, None, None)
                found.append({**info.as_json(), "detecting": True})
            else:
                found.append(info.as_json())
            # The settings files of this agent, as last checked (GET /api/v1/agents and every settings write
            # check again; /health shows the last check and never touches the disk).
            found[-1]["settings_files"] = self.ctx.agent_settings.files_known.get(name, [])
        return found

    def health(self) -> dict[str, Any]:
        """What is known now: /health never waits for a probe (it says ``detecting`` while one runs)."""
        agents = self.agents()
        for agent in agents:
            agent.pop("capabilities", None)  # GET /api/v1/agents has them; /health keeps its shape
        return {"agents": {a.pop("name"): a for a in agents}}

    def get(self, session_id: str) -> AgentSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, "session_not_found", "No agent session with this id", session_id=session_id[:80])
        return session

    @staticmethod
    def view(session: AgentSession) -> dict[str, Any]:
        """The session object as API.md shows it."""
        return public(session.record)

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """Session objects, newest first, optionally only those with ``status``."""
        chosen = [s for s in self.sessions.values() if status is None or s.status == status]
        chosen.sort(key=lambda s: (s.record["created_at"], s.id), reverse=True)
        return [public(s.record) for s in chosen]

    def live_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.status in LIVE_STATUSES)

    def resolve_resume(
        self, resume: str, cwd: str | None, agent: str | None = None
    ) -> tuple[str, str | None, str | None]:
        """``resume`` (our id or the agent's) → (agent session id, cwd to use, our old id)."""
        old = self.sessions.get(resume)
        if old is None:
            return resume, cwd, None
        if agent is not None and old.record.get("agent") != agent:
            raise ApiError(
                400, "invalid_field", f"That session ran {old.record.get('agent')}, not {agent}", field="resume"
            )
        if not old.is_ended:
            raise ApiError(409, "session_running", "That session is still running: stop it before resuming it")
        agent_sid = old.record.get("agent_session_id")
        if not agent_sid:
            raise ApiError(409, "not_resumable", "That session never got an agent session id to resume")
        # The CLI finds a conversation only from the directory it was started in.
        return str(agent_sid), str(old.record.get("cwd") or ""), old.id

    def session_environment(self) -> dict[str, str]:
        """The environment every agent session starts from, before its adapter adds its own variables."""
        home = {"HOME": self.ctx.config.home} if self.ctx.config.home else {}  # --home: where the settings are
        return {**os.environ, **home, **self.env_overrides}

    def adapter(self, agent: str) -> AgentAdapter:
        """The adapter called ``agent``; 400 unknown_agent."""
        adapter = self.adapters.get(agent)
        if adapter is None:
            raise ApiError(400, "unknown_agent", f"Unknown agent {agent[:80]!r}", known=sorted(self.adapters))
        return adapter

    async def create(self, agent: str, options: SessionOptions, cwd_rel: str, resumed_from: str | None) -> AgentSession:
        """Start a session; 400 unknown_agent, 422 agent_unavailable, 429 too_many_sessions."""
        adapter = self.adapter(agent)
        driver = adapter.driver(options)
        if driver is not None and options.resume_agent_session_id and not driver.can_resume():
            # Its long-lived mode cannot resume (Gemini 0.61's session/load): the one-shot mode can, alone.
            wanted = next(n for n in ("interactive", "permission_prompts", "deltas") if getattr(options, n))
            raise ApiError(
                400,
                "unsupported_option",
                f"The {agent} agent cannot resume a session with {wanted!r}: resume it without",
                field=wanted,
                agent=agent,
            )
        await self._agent_detected(agent)
        info = self.info.get(agent)
        if info is None or not info.available:
            raise ApiError(
                422, "agent_unavailable", f"The {agent} CLI is not installed", binary=adapter.binary, agent=agent
            )
        if self.live_count() >= self.max_sessions:
            raise ApiError(
                429,
                "too_many_sessions",
                f"{self.max_sessions} agent sessions are running already",
                max_sessions=self.max_sessions,
            )
        session_id = new_record_id("as_")
        if adapter.first_run_alone:
            await self._first_run(agent, session_id)
        now = now_iso()
        record: dict[str, Any] = {
            "id": session_id,
            "agent": agent,
            "status": "starting",
            "created_at": now,
            "updated_at": now,
            "ended_at": None,
            "prompt": options.prompt,
            "cwd": cwd_rel,
            "model": options.model,
            "agent_session_id": options.resume_agent_session_id,
            "pid": None,
            "message_count": 0,
            "result": None,
            "usage": None,
            "cost_usd": None,
            "exit_code": None,
            "error": None,
            "interactive": options.interactive,
            "permission_prompts": options.permission_prompts,
            "deltas": options.deltas,
            "resumed_from": resumed_from,
            "mcp_servers": None,
        }
        message_log = await self.ctx.run_blocking(self.store.create, dict(record))
        session = AgentSession(record, adapter, [], message_log, self._changed)
        self.sessions[session.id] = session
        self._changed(session)
        # PWD names the session's directory (API.md "Subprocesses"): opencode takes its project from PWD, so the
        # runtime's own PWD would make it run, and read its project settings, in the runtime's directory.
        env = {**adapter.environment(self.session_environment()), "PWD": options.cwd, TAG_VARIABLE: session.id}
        argv = adapter.command(options)
        if driver is not None:
            session.use_driver(driver)
            env = driver.environment(env)
            argv = driver.command()
        try:
            proc = await self.ctx.procs.spawn(
                argv,
                cwd=options.cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                limit=STREAM_LIMIT,
            )
        except OSError as exc:
            session.turns_open = 1 if options.prompt is not None else 0
            session.interactive = False
            session.start_error = f"could not start {argv[0]}: {exc.strerror or exc}"
            session._finish(None)
            return session
        session.attach(proc, options.prompt)
        session.task = asyncio.ensure_future(session.run(proc, options.prompt))
        session.task.add_done_callback(lambda task: _after_run(session, task))
        return session

    async def _first_run(self, agent: str, session_id: str) -> None:
        """The first session of ``agent`` in this runtime starts at once; others wait until it said its id."""
        first = self._first_runs.get(agent)
        if first is None:
            self._first_runs[agent] = (asyncio.Event(), [session_id])
            return
        if not first[0].is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(first[0].wait()), FIRST_RUN_WAIT_S)
            if not first[0].is_set():
                first[0].set()  # the first never said its id (or never started): stop holding the others

    async def terminate(self, session: AgentSession) -> dict[str, Any]:
        """Stop a live session and everything it started; an ended one is returned as it is."""
        if not session.is_ended:
            await session.stop("terminated")
        return public(session.record)

    async def follow_up(self, session: AgentSession, content: str) -> None:
        self._check_live(session)
        if not session.interactive:
            raise ApiError(409, "session_not_interactive", "This session takes no follow-up: create it interactive")
        if not await session.send_user(content):
            raise ApiError(409, "session_ended", "The agent process is no longer taking input")

    def interrupt(self, session: AgentSession) -> None:
        self._check_live(session)
        if session.adapter is not None and not session.can_interrupt:
            raise ApiError(
                409,
                "interrupt_unsupported",
                f"{session.adapter.name} runs one process per turn: end the turn with DELETE",
                agent=session.adapter.name,
            )
        if session.adapter is None or not session.interrupt():
            raise ApiError(409, "session_ended", "The agent process is no longer taking input")

    def answer_permission(self, session: AgentSession, request_id: str, allow: bool, message: str | None) -> None:
        self._check_live(session)
        if request_id not in session.pending_permissions:
            raise ApiError(
                404,
                "permission_request_not_found",
                "No pending permission request with this id",
                request_id=request_id[:200],
            )
        if not session.answer_permission(request_id, allow, message):
            raise ApiError(409, "session_ended", "The agent process is no longer taking input")

    @staticmethod
    def _check_live(session: AgentSession) -> None:
        if session.is_ended or session.stop_reason is not None:
            raise ApiError(
                409, "session_ended", f"The session has ended ({session.status})", session_status=session.status
            )


def turn_was_open(texts: list[bytes]) -> bool:
    """Whether the stored stream stops inside a turn (the record may lag behind the message log)."""
    for text in reversed(texts):
        try:
            frame = json.loads(text)
        except ValueError:
            continue
        if frame.get("type") in ("done", "error"):
            return False
        if frame.get("type") == "status":
            if frame.get("status") == "running":
                return True
            if frame.get("status") in ("idle", *ENDED_STATUSES):
                return False
            continue
        return True  # content of a turn that never ended
    return False


def _after_run(session: AgentSession, task: asyncio.Task[None]) -> None:
    """A relay that broke (a bug) still ends its session, so that no client waits forever."""
    if task.cancelled() or task.exception() is None:
        return
    log.error("agent session %s failed", session.id, exc_info=task.exception())
    if session.proc is not None and session.proc.returncode is None:
        session.task = asyncio.ensure_future(stop_tree(session.proc, 1.0))  # kept, and awaited by stop()
    if not session.is_ended:
        session.start_error = "the runtime failed relaying this agent (see its log)"
        session._finish(session.proc.returncode if session.proc is not None else None)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The session object as API.md shows it (internal keys start with ``_``)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def default_adapters(config: Config) -> list[AgentAdapter]:
    return [
        ClaudeCodeAdapter(config.claude_bin),
        CodexAdapter(config.codex_bin),
        GeminiAdapter(config.gemini_bin),
        QwenCodeAdapter(config.qwen_bin),
        OpencodeAdapter(config.opencode_bin),
    ]
