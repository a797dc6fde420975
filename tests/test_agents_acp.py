"""The ACP client (wsruntime_ext/agents/acp.py) replaying the recorded conversations of the real CLIs.

Each recording in tests/fixtures/<cli>/acp-{session,cancel,error} holds both directions of a real
session (AGENT-PROTOCOLS.md). The driver is fed what the agent said, and is told to do what the
recording's client did (a prompt, a permission answer, a cancel); it must send the same requests,
answer what the agent asks, and turn the updates into the runtime's messages.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from wsruntime_ext.agents.acp import AcpAgent, AcpDriver, GeminiAcp, OpencodeAcp, QwenAcp, error_text
from wsruntime_ext.agents.adapter import LIVE_TYPES, SessionOptions

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
AGENTS: dict[str, type[AcpAgent]] = {"gemini-cli": GeminiAcp, "qwen-code": QwenAcp, "opencode": OpencodeAcp}


class Replay:
    """A driver fed one recording; what it sent and what it made of it."""

    def __init__(self, name: str, permission_prompts: bool = True) -> None:
        cli = name.split("/")[0]
        options = SessionOptions(prompt=None, cwd="/work", permission_prompts=permission_prompts)
        self.driver = AcpDriver(AGENTS[cli]("x"), options)
        self.sent: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.unmatched: list[str] = []
        ours: dict[str, list[int]] = {}  # method → ids of our requests not yet matched to the recording's
        ids: dict[int, int] = {}  # the recording's request id → ours
        asked: dict[Any, dict[str, Any]] = {}  # the agent's permission requests by rpc id

        def drain() -> None:
            for data in self.driver.outbox:
                sent = json.loads(data)
                assert sent["jsonrpc"] == "2.0" and data.endswith(b"\n")
                self.sent.append(sent)
                if "method" in sent and "id" in sent:
                    ours.setdefault(sent["method"], []).append(sent["id"])
            self.driver.outbox.clear()

        self.driver.start()
        drain()
        with open(os.path.join(FIXTURES, name, "transcript.jsonl"), encoding="utf-8") as f:
            entries = [json.loads(line) for line in f if line.strip()]
        for entry in entries:
            msg = entry["msg"]
            if entry["dir"] == "send":
                method = msg.get("method")
                if method == "session/prompt":
                    self.driver.user(msg["params"]["prompt"][0]["text"])
                elif method == "session/cancel":
                    self.driver.interrupt()
                elif "result" in msg and "outcome" in msg["result"] and msg["id"] in asked:
                    chosen = msg["result"]["outcome"]["optionId"]
                    kind = next(o["kind"] for o in asked[msg["id"]]["options"] if o["optionId"] == chosen)
                    self.driver.permission(f"acp-{msg['id']}", kind.startswith("allow"))
                drain()
                if method is not None and "id" in msg:
                    if ours.get(method):
                        ids[msg["id"]] = ours[method].pop(0)
                    else:
                        self.unmatched.append(method)
                continue
            if "method" not in msg and msg.get("id") in ids:
                msg = {**msg, "id": ids[msg["id"]]}
            elif msg.get("method") == "session/request_permission":
                asked[msg["id"]] = msg["params"]
            self.messages += self.driver.parse(msg)
            drain()
        self.messages += self.driver.finish(0)

    def stored(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] not in LIVE_TYPES]

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.stored()]


RECORDINGS = sorted(f"{cli}/{scenario}" for cli in AGENTS for scenario in ("acp-session", "acp-cancel", "acp-error"))


@pytest.mark.parametrize("name", RECORDINGS)
def test_the_driver_sends_what_the_recorded_client_sent(name: str) -> None:
    replay = Replay(name)
    assert replay.unmatched == []
    methods = [m["method"] for m in replay.sent if "method" in m and "id" in m]
    assert methods[:2] == ["initialize", "session/new"]
    assert ("session/set_mode" in methods) == (not name.startswith("opencode"))
    # Every request the agent made was answered, the permission requests with one of their options.
    assert replay.driver.agent_session_id


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_turn_ends_once_and_every_tool_use_gets_its_result(name: str) -> None:
    replay = Replay(name)
    stored = replay.stored()
    prompts = sum(1 for m in replay.sent if m.get("method") == "session/prompt")
    assert sum(1 for m in stored if m["type"] in ("done", "error")) == prompts
    uses = {m["tool_use_id"]: m for m in stored if m["type"] == "tool_use"}
    results = [m for m in stored if m["type"] == "tool_result"]
    assert sorted(uses) == sorted(r["tool_use_id"] for r in results)
    for result in results:
        assert result["tool"] == uses[result["tool_use_id"]]["tool"]
        assert ("error" in result) == result["is_error"]
    for use in uses.values():
        assert use["input"].get("command"), use  # every call of these recordings is a shell command
    for request in (m for m in stored if m["type"] == "permission_request"):
        assert request["tool_use_id"] in uses and request["input"].get("command")


@pytest.mark.parametrize("name", RECORDINGS)
def test_deltas_join_into_the_complete_block(name: str) -> None:
    pending: list[dict[str, Any]] = []
    for message in Replay(name).messages:
        if message["type"] in LIVE_TYPES:
            pending.append(message)
            continue
        if pending:
            assert message["type"] == pending[0]["type"].removesuffix("_delta")
            assert "".join(p["content"] for p in pending) == message["content"]
            assert len({p["block"] for p in pending}) == 1
            pending = []
    assert pending == []


@pytest.mark.parametrize("cli", list(AGENTS))
def test_a_cancel_ends_the_turn_as_interrupted_and_the_next_turn_works(cli: str) -> None:
    replay = Replay(f"{cli}/acp-cancel")
    ends = [m for m in replay.stored() if m["type"] in ("done", "error")]
    assert ends[0] == {"type": "error", "error": "interrupted"}
    assert ends[-1]["type"] == "done"
    assert any(m.get("method") == "session/cancel" for m in replay.sent)


@pytest.mark.parametrize(
    ("cli", "error"),
    [
        ("gemini-cli", "mock internal server error"),
        ("qwen-code", "500 mock internal server error"),
        ("opencode", "Internal error: mock internal server error"),
    ],
)
def test_an_api_error_ends_its_turn_and_the_session_goes_on(cli: str, error: str) -> None:
    replay = Replay(f"{cli}/acp-error")
    ends = [m for m in replay.stored() if m["type"] in ("done", "error")]
    assert ends[0] == {"type": "error", "error": error}
    assert ends[-1]["type"] == "done"


@pytest.mark.parametrize("cli", list(AGENTS))
def test_a_permission_request_is_a_frame_and_its_answer_picks_the_option_by_kind(cli: str) -> None:
    replay = Replay(f"{cli}/acp-session")
    requests = [m for m in replay.stored() if m["type"] == "permission_request"]
    answers = [m for m in replay.sent if "result" in m and "outcome" in m["result"]]
    assert len(requests) == len(answers) >= 2
    allow, deny = ("once", "reject") if cli == "opencode" else ("proceed_once", "cancel")
    assert [a["result"]["outcome"]["optionId"] for a in answers[:2]] == [allow, deny]
    # The denied call: an error result (Gemini sends none; the driver makes it).
    denied = [
        m for m in replay.stored() if m["type"] == "tool_result" and m["tool_use_id"] == requests[1]["tool_use_id"]
    ]
    assert denied and denied[0]["is_error"] is True


def test_without_permission_prompts_a_question_is_denied_not_shown() -> None:
    replay = Replay("gemini-cli/acp-session", permission_prompts=False)
    assert "permission_request" not in replay.kinds()
    answers = [m for m in replay.sent if "result" in m and "outcome" in m["result"]]
    assert answers and all(a["result"]["outcome"]["optionId"] == "cancel" for a in answers)
    assert not any(m.get("method") == "session/set_mode" for m in replay.sent)


def test_unknown_requests_get_an_error_and_unknown_notifications_are_ignored() -> None:
    driver = AcpDriver(QwenAcp("qwen"), SessionOptions(prompt=None, cwd="/w"))
    assert driver.parse({"jsonrpc": "2.0", "id": 7, "method": "craft/drainMidTurnQueue", "params": {}}) == []
    answer = json.loads(driver.outbox.pop())
    assert answer == {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": answer["error"]["message"]}}
    assert driver.parse({"jsonrpc": "2.0", "method": "qwen/notify/whatever", "params": {"x": 1}}) == []
    assert driver.parse({"jsonrpc": "2.0", "method": "session/update", "params": "garbage"}) == []
    assert driver.parse({"jsonrpc": "2.0", "id": 99, "result": {}}) == []  # a response to nothing we asked
    assert driver.outbox == []


def test_follow_ups_queue_until_the_session_is_ready_and_the_turn_ended() -> None:
    driver = AcpDriver(OpencodeAcp("opencode"), SessionOptions(prompt=None, cwd="/w"))
    driver.start()
    driver.user("one")
    driver.user("two")
    sent = [json.loads(b) for b in driver.outbox]
    driver.outbox.clear()
    assert [m["method"] for m in sent] == ["initialize"]
    driver.parse({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 1}})
    driver.parse({"jsonrpc": "2.0", "id": 2, "result": {"sessionId": "s1"}})
    sent = [json.loads(b) for b in driver.outbox]
    driver.outbox.clear()
    assert [m["method"] for m in sent] == ["session/new", "session/prompt"]
    assert sent[1]["params"] == {"sessionId": "s1", "prompt": [{"type": "text", "text": "one"}]}
    out = driver.parse({"jsonrpc": "2.0", "id": 3, "result": {"stopReason": "end_turn"}})
    assert out == [{"type": "done", "content": ""}]
    sent = [json.loads(b) for b in driver.outbox]
    assert [m["params"]["prompt"][0]["text"] for m in sent] == ["two"]


def test_a_resume_loads_the_session_and_does_not_show_its_history_again() -> None:
    options = SessionOptions(prompt=None, cwd="/w", resume_agent_session_id="old-1")
    driver = AcpDriver(QwenAcp("qwen"), options)
    driver.start()
    driver.parse({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 1}})
    load = json.loads(driver.outbox[-1])
    assert load["method"] == "session/load" and load["params"]["sessionId"] == "old-1"
    replayed = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "old answer"}}
    assert driver.parse({"jsonrpc": "2.0", "method": "session/update", "params": {"update": replayed}}) == []
    driver.parse({"jsonrpc": "2.0", "id": 2, "result": {}})
    assert driver.agent_session_id == "old-1"
    assert not GeminiAcp("gemini").can_load() and QwenAcp("q").can_load() and OpencodeAcp("o").can_load()


def test_error_texts() -> None:
    assert error_text({"code": -32603, "message": "Internal error", "data": {"details": "500 boom"}}) == "500 boom"
    assert error_text({"code": 500, "message": '{"error":{"code":500,"message":"boom"}}'}) == "boom"
    assert error_text({"code": 1, "message": "{not json"}) == "{not json"
    assert error_text("nonsense") == ""


def test_an_interrupt_with_no_turn_running_is_a_no_op() -> None:
    driver = AcpDriver(GeminiAcp("gemini"), SessionOptions(prompt=None, cwd="/w"))
    assert driver.interrupt() is True and driver.outbox == []
