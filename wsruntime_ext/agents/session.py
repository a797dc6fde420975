"""One running agent session (API.md "Agent sessions", "Turns and endings"): its process, turns and stream.

An :class:`AgentSession` owns the agent process, reads its stdout in chunks
(long lines are split and decoded by us, very long ones off the IOLoop),
numbers every AgentMessage, appends it to the message log and wakes the
listeners (WebSocket clients read from the session's list at their own pace).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
from typing import TYPE_CHECKING, Any, Callable, Protocol

from wsruntime_ext.agents.adapter import LIVE_TYPES, AgentAdapter, ProtocolDriver, StreamParser
from wsruntime_ext.agents.store import MessageLog
from wsruntime_ext.context import now_iso
from wsruntime_ext.procs import descendants

if TYPE_CHECKING:
    from wsruntime_ext.procs import ManagedProcess

log = logging.getLogger("wsruntime.agents")

READ_CHUNK = 1 << 16
MAX_LINE = 64 << 20  # a longer line is dropped, not held
OFFLOAD_LINE = 1 << 20  # lines above this are decoded in a thread
STDERR_TAIL = 4096
DESCENDANT_SCAN_S = 1.0
EVICT_S = 120.0  # an ended session's messages leave memory this long after its last reader (read back on demand)
LIVE_STATUSES = frozenset({"starting", "running", "idle"})
ENDED_STATUSES = frozenset({"completed", "failed", "terminated", "interrupted"})


class Listener(Protocol):
    def wake(self) -> None: ...

    def live(self, after: int, text: bytes) -> None:
        """A live-only frame (a delta) produced after stored frame ``after``."""


def _now() -> str:
    return now_iso()


class AgentSession:
    """A session's record, its stored messages and (while it runs) its agent process."""

    def __init__(
        self,
        record: dict[str, Any],
        adapter: AgentAdapter | None,
        messages: list[bytes] | None,
        message_log: MessageLog | None,
        on_change: Callable[[AgentSession], None],
    ) -> None:
        self.record = record
        self.adapter = adapter
        # Each frame as UTF-8 JSON, encoded once for every reader; seq n at index n-1; None until loaded.
        self.messages = messages
        self.log = message_log
        self.on_change = on_change  # persist the record and tell the hub
        self.listeners: set[Listener] = set()
        self.proc: ManagedProcess | None = None
        self.parser: StreamParser | None = adapter.new_parser() if adapter is not None else None
        # A long-lived protocol client (ACP, Codex app-server) instead of the adapter's lines; set before run().
        self.driver: ProtocolDriver | None = None
        self._tool_stopper: asyncio.Future[None] | None = None
        self.turns_open = 0
        self.last_turn_failed = False
        self.pending_permissions: dict[str, dict[str, Any]] = {}
        self.stop_reason: str | None = None  # "terminated" or "interrupted" once we stop it
        self.exited = False  # the agent's process has exited (what is left of its output is being relayed)
        self.ended = asyncio.Event()
        self.turn_ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._noise: collections.deque[str] = collections.deque(maxlen=5)
        self._request_no = 0
        self.start_error: str | None = None  # why the process could not start
        self._stamp: str | None = None  # the receive time of this IOLoop turn's frames
        self._wake_handle: asyncio.Handle | None = None
        if ended := record["status"] in ENDED_STATUSES:
            self.ended.set()
        self.interactive = bool(record.get("interactive")) and not ended
        self.deltas = bool(record.get("deltas"))

    # -- state -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def is_ended(self) -> bool:
        return self.ended.is_set()

    @property
    def last_seq(self) -> int:
        return len(self.messages) if self.messages is not None else int(self.record.get("message_count") or 0)

    def emit(self, message: dict[str, Any]) -> None:
        """Number, stamp, store and relay one AgentMessage."""
        assert self.messages is not None
        if self._stamp is None:
            # Everything handled in one turn of the IOLoop was received at the same moment.
            self._stamp = _now()
            self._wake_handle = asyncio.get_running_loop().call_soon(self._wake_listeners)
        message["seq"] = len(self.messages) + 1
        message["ts"] = self._stamp
        message["session_id"] = self.id
        try:
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from the agent: escaped, the frame stays valid UTF-8
            text = json.dumps(message, separators=(",", ":")).encode("ascii")
        self.messages.append(text)
        if self.log is not None:
            self.log.append(text)
        self.record["message_count"] = len(self.messages)

    def emit_live(self, message: dict[str, Any]) -> None:
        """Relay a live-only frame (``text_delta``/``thinking_delta``) to the clients attached now.

        Never stored, numbered or replayed: it carries ``after``, the seq of the last stored frame, so
        that each client sends it in its place, after that frame and before the next.
        """
        if not self.listeners:
            return
        if self._stamp is None:
            self._stamp = _now()
            self._wake_handle = asyncio.get_running_loop().call_soon(self._wake_listeners)
        after = self.last_seq
        message["after"] = after
        message["session_id"] = self.id
        try:
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(message, separators=(",", ":")).encode("ascii")
        for listener in self.listeners:
            listener.live(after, text)

    def _wake_listeners(self) -> None:
        """Once per IOLoop turn, however many frames it brought: each reader catches up on its own."""
        self._stamp = None
        for listener in tuple(self.listeners):
            listener.wake()

    def set_status(self, status: str) -> None:
        if status == self.record["status"]:
            return
        self.record["status"] = status
        self.record["updated_at"] = _now()
        if status in ENDED_STATUSES:
            self.record["ended_at"] = self.record["updated_at"]
        self.emit({"type": "status", "status": status})
        if self.log is not None:
            self.log.flush()
        self.on_change(self)

    # -- the process -----------------------------------------------------------------

    def attach(self, proc: ManagedProcess, first_prompt: str | None) -> None:
        """The agent process has started: the session runs (or, interactive with no prompt, waits for one)."""
        self.proc = proc
        self.record["pid"] = proc.pid
        self.set_status("idle" if first_prompt is None and self.interactive else "running")

    def use_driver(self, driver: ProtocolDriver) -> None:
        """Talk to the agent through a protocol client (it parses the output and writes the requests)."""
        self.driver = driver
        self.parser = driver

    @property
    def prompt_in_argv(self) -> bool:
        return self.adapter is not None and self.adapter.prompt_in_argv and self.driver is None

    @property
    def can_interrupt(self) -> bool:
        return self.driver is not None or (self.adapter is not None and self.adapter.supports_interrupt)

    def _flush_driver(self) -> None:
        """Write what the protocol client owes the agent (answers, queued prompts); stop a session it gave up."""
        driver = self.driver
        if driver is None:
            return
        while driver.outbox:
            self._write(driver.outbox.pop(0))
        if driver.fatal:
            self.interactive = False
            self._close_stdin()

    async def run(self, proc: ManagedProcess, first_prompt: str | None) -> None:
        """Relay the agent until its process ends, then end the session."""
        assert self.adapter is not None
        if self.driver is not None:
            self.driver.start()
            self._flush_driver()
            if first_prompt is not None:
                await self.send_user(first_prompt)
            elif not self.interactive:
                self._close_stdin()  # nothing to do: the CLI exits once its stdin ends
        elif self.adapter.prompt_in_argv:
            # The prompt went on the command line: its one turn is open, the CLI reads nothing more.
            self.turns_open += 1 if first_prompt is not None else 0
            self.turn_ended.clear()
            self._close_stdin()
        else:
            self._write(self.adapter.encode_startup())
            if first_prompt is not None:
                await self.send_user(first_prompt)
            elif not self.interactive:
                self._close_stdin()
        assert proc.proc.stderr is not None and proc.proc.stdout is not None
        stderr_task = asyncio.ensure_future(self._read_stderr(proc.proc.stderr))
        watch_task = asyncio.ensure_future(self._watch_descendants(proc))
        reader = asyncio.ensure_future(self._read_stdout(proc.proc.stdout))
        exited = asyncio.ensure_future(wait_exit(proc))
        try:
            await asyncio.wait({reader, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                # Exited, but something it started may hold stdout open: drain briefly, then stop the tree.
                await asyncio.wait({reader}, timeout=1.0)
                if not reader.done():
                    proc.signal_tree(signal.SIGKILL)
                    await asyncio.wait({reader}, timeout=1.0)
            code = await exited
            self.exited = True  # a turn that ends from here on ends with the process: never "idle"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(stderr_task), 0.5)
        finally:
            for task in (reader, stderr_task, watch_task, exited):
                task.cancel()
        # The CLI's tools may have left processes behind (its Bash tool runs them in their own session).
        await stop_tree(proc, 0.5)
        # A descendant we never saw may still hold the pipes: let go of them, or wait() never returns (< 3.12).
        transport = getattr(proc.proc, "_transport", None)
        if transport is not None:
            transport.close()
        if self.parser is not None:
            self._deliver(self.parser.finish(code))
        self._finish(code)

    def _finish(self, code: int | None) -> None:
        self.record["exit_code"] = code
        self.record["pid"] = None
        if self.turns_open > 0:
            self._end_turn({"type": "error", "error": self._death_reason(code)})
        for request_id in list(self.pending_permissions):
            self.pending_permissions.pop(request_id, None)
        if self.stop_reason is not None:
            final = self.stop_reason
        elif code == 0 and not self.last_turn_failed:
            final = "completed"
        else:
            final = "failed"
            if self.record.get("error") is None:
                self.record["error"] = self._death_reason(code) if code else "the last turn failed"
        self.interactive = False
        self.set_status(final)
        if self.log is not None:
            self.log.close()
        self.ended.set()
        for listener in tuple(self.listeners):
            listener.wake()
        asyncio.get_running_loop().call_later(EVICT_S, self.evict)

    def evict(self) -> None:
        """Let go of an ended session's messages while nobody reads them; the message log has them all."""
        if self.is_ended and not self.listeners:
            self.messages = None
        elif self.is_ended:
            asyncio.get_running_loop().call_later(EVICT_S, self.evict)

    def _death_reason(self, code: int | None) -> str:
        if self.start_error is not None:
            return self.start_error
        if self.stop_reason == "terminated":
            return "terminated"
        if self.stop_reason == "interrupted":
            return "interrupted: the runtime stopped"
        tail = b"".join(self._stderr).decode("utf-8", "replace").strip()
        if tail:
            return tail[-STDERR_TAIL:]
        if self._noise:
            return "the agent printed: " + " | ".join(self._noise)
        if code is not None and code < 0:
            return f"the agent was killed by {signal.Signals(-code).name if -code in signal.valid_signals() else -code}"
        return f"the agent exited with code {code} without a result"

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while True:
            chunk = await stream.read(READ_CHUNK)
            if not chunk:
                return
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size - len(self._stderr[0]) >= STDERR_TAIL and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    async def _watch_descendants(self, proc: ManagedProcess) -> None:
        """Snapshot the process tree now and then: a tool child that escapes the session is still found."""
        loop = asyncio.get_running_loop()
        while proc.returncode is None:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, proc.remember_descendants)
            await asyncio.sleep(DESCENDANT_SCAN_S)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        pending = bytearray()
        skipping = False  # inside an over-long line: drop until its newline
        loop = asyncio.get_running_loop()
        while True:
            chunk = await stream.read(READ_CHUNK)
            if not chunk:
                break
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    if not skipping:
                        pending += chunk[start:]
                        if len(pending) > MAX_LINE:
                            log.warning("agent session %s: dropping a line over %d bytes", self.id, MAX_LINE)
                            pending.clear()
                            skipping = True
                    break
                if skipping:
                    skipping = False
                else:
                    pending += chunk[start:nl]
                    line = bytes(pending)
                    pending.clear()
                    if len(line) > OFFLOAD_LINE:
                        self._handle(await loop.run_in_executor(None, _decode, line), line)
                    else:
                        self._handle(_decode(line), line)
                start = nl + 1
            if self.log is not None:
                self.log.flush()
        if pending and not skipping:
            self._handle(_decode(bytes(pending)), bytes(pending))

    def _handle(self, decoded: Any, raw: bytes) -> None:
        if not isinstance(decoded, dict):
            text = raw.decode("utf-8", "replace").strip()
            if text:
                self._noise.append(text[:200])
                log.debug("agent session %s: ignoring a non-JSON line", self.id)
            return
        assert self.parser is not None
        self._deliver(self.parser.parse(decoded))
        self._flush_driver()

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        """Relay a parser's messages: a ``done``/``error`` ends the turn; remember the agent's session id."""
        assert self.parser is not None
        for message in messages:
            kind = message["type"]
            if kind in ("done", "error"):
                self._end_turn(message)
                continue
            if kind in LIVE_TYPES:
                if self.deltas:
                    self.emit_live(message)
                continue
            if kind == "permission_request":
                self.pending_permissions[message["request_id"]] = message.get("input") or {}
            self.emit(message)
        changed = False
        sid = self.parser.agent_session_id
        if sid and self.record.get("agent_session_id") != sid:
            self.record["agent_session_id"] = sid
            changed = True
        servers = self.parser.mcp_servers
        if servers is not None and self.record.get("mcp_servers") != servers:
            self.record["mcp_servers"] = servers
            changed = True
        if changed:
            self.on_change(self)

    def _end_turn(self, message: dict[str, Any]) -> None:
        if self.stop_reason == "terminated":
            # The interrupt we sent on DELETE: the turn was cut short by the client.
            message = {"type": "error", "error": "terminated"}
        if self.turns_open == 0 and self.stop_reason is None:
            log.debug("agent session %s: a turn end with no turn open", self.id)
        self.turns_open = max(0, self.turns_open - 1)
        self.last_turn_failed = message["type"] == "error"
        if message["type"] == "done":
            self.record["result"] = message.get("content")
            self.record["error"] = None
        else:
            self.record["error"] = message.get("error")
        for key in ("usage", "cost_usd"):
            if key in message:
                self.record[key] = message[key]
        self.emit(message)
        if self.driver is not None:
            self.pending_permissions.clear()  # the driver answered or dropped them when the turn ended
        self.turn_ended.set()
        if not self.interactive:
            self._close_stdin()  # the CLI exits once its stdin ends
        elif self.turns_open == 0 and self.stop_reason is None and not self.exited:
            self.set_status("idle")
        else:
            self.on_change(self)

    # -- talking to the agent --------------------------------------------------------

    def _write(self, data: bytes | None) -> bool:
        proc = self.proc
        if data is None or proc is None or proc.proc.stdin is None or proc.proc.stdin.is_closing():
            return False
        try:
            proc.proc.stdin.write(data)
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    def _stdin_open(self) -> bool:
        proc = self.proc
        return proc is not None and proc.proc.stdin is not None and not proc.proc.stdin.is_closing()

    def _close_stdin(self) -> None:
        proc = self.proc
        if proc is not None and proc.proc.stdin is not None and not proc.proc.stdin.is_closing():
            proc.proc.stdin.close()

    async def send_user(self, content: str) -> bool:
        """Start a turn with a user message (queued by the CLI if one is running)."""
        assert self.adapter is not None
        if self.driver is not None:
            if not self._stdin_open():  # the client queues it until the agent can take it
                return False
            self.driver.user(content)
            self._flush_driver()
        elif not self._write(self.adapter.encode_user(content)):
            return False
        self.turns_open += 1
        self.turn_ended.clear()
        if self.status == "idle":
            self.set_status("running")
        return True

    def interrupt(self) -> bool:
        """Ask the agent to stop the running turn; False when it cannot be told."""
        assert self.adapter is not None
        self._request_no += 1
        if self.driver is not None:
            if not self._stdin_open() or not self.driver.interrupt():
                return False
            self._flush_driver()
            if self.driver.kills_tools_on_interrupt and self.proc is not None:
                # The CLI ends the turn but leaves the running command alive (Codex): the runtime stops it.
                self._tool_stopper = asyncio.ensure_future(stop_descendants(self.proc))
            return True
        return self._write(self.adapter.encode_interrupt(f"wsruntime-interrupt-{self._request_no}"))

    def answer_permission(self, request_id: str, allow: bool, message: str | None) -> bool:
        """Answer a pending permission request; False when it is not pending."""
        assert self.adapter is not None
        tool_input = self.pending_permissions.pop(request_id, None)
        if tool_input is None:
            return False
        if self.driver is not None:
            if not self._stdin_open() or not self.driver.permission(request_id, allow):
                return False
            self._flush_driver()
            return True
        return self._write(self.adapter.encode_permission(request_id, allow, message, tool_input))

    async def stop(self, reason: str, interrupt_wait: float = 1.5, grace: float = 1.0) -> None:
        """Stop the agent and all it started: interrupt, close stdin, SIGINT, then kill the whole tree."""
        if self.is_ended:
            return
        self.stop_reason = reason
        proc = self.proc
        if proc is None or self.task is None:
            return
        # Know the whole tree before anything exits: an orphan is no longer linked to us afterwards.
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(None, proc.remember_descendants)
        if self.turns_open > 0 and self.interrupt():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.turn_ended.wait(), interrupt_wait)
        self._close_stdin()
        if not await exited_within(proc, 0.5):
            if proc.returncode is None:
                proc.proc.send_signal(signal.SIGINT)
            if not await exited_within(proc, grace):
                await stop_tree(proc, grace)
        await asyncio.shield(self.task)


def tool_processes(agent_pid: int) -> list[int]:
    """The agent's descendants in sessions of their own: the commands its tools run (Codex starts each in a
    new session), not the helpers of the agent itself, which stay in the agent's session (blocking)."""
    found = []
    for pid in descendants(agent_pid):
        with contextlib.suppress(OSError):
            if os.getsid(pid) != agent_pid:
                found.append(pid)
    return found


async def stop_descendants(proc: ManagedProcess, grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``, to the processes of the agent's tools, not to the agent."""
    loop = asyncio.get_running_loop()
    pids = await loop.run_in_executor(None, tool_processes, proc.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    await asyncio.sleep(grace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def wait_exit(proc: ManagedProcess) -> int:
    """The exit code, as soon as the process has exited, even while a descendant holds its pipes.

    Before Python 3.12 ``Process.wait()`` returns only once every pipe is closed.
    """
    waiter = asyncio.ensure_future(proc.proc.wait())
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=0.1)
    finally:
        waiter.cancel()
    code = proc.returncode
    assert code is not None
    return code


async def exited_within(proc: ManagedProcess, timeout: float) -> bool:
    try:
        await asyncio.wait_for(wait_exit(proc), timeout)
    except asyncio.TimeoutError:
        return False
    return True


async def stop_tree(proc: ManagedProcess, grace: float) -> None:
    """SIGTERM to the process and every descendant seen, SIGKILL to what is left after ``grace``."""
    proc.signal_tree(signal.SIGTERM)
    await exited_within(proc, grace)
    proc.signal_tree(signal.SIGKILL)
    await exited_within(proc, 2.0)


def _decode(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None
