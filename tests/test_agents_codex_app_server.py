"""The Codex app-server client (wsruntime_ext/agents/codex_app_server.py) replaying a recorded conversation.

tests/fixtures/codex/app-server-approvals holds both directions of a real ``codex app-server`` run
(AGENT-PROTOCOLS.md §4): deltas, a command allowed and one declined, a file change, an interrupt
during a long command (``transcript.jsonl``), then a second process resuming the thread and an
HTTP 500 (``transcript_b.jsonl``). The driver is told to do what the recorded client did.
"""

from __future__ import annotations

import json
import os
from typing import Any

from wsruntime_ext.agents.adapter import LIVE_TYPES, SessionOptions
from wsruntime_ext.agents.codex_app_server import CodexAppServerDriver

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "codex", "app-server-approvals")


def replay(name: str, resume: str | None = None) -> tuple[CodexAppServerDriver, list[dict[str, Any]], list[Any]]:
    options = SessionOptions(prompt=None, cwd="/work", permission_prompts=True, resume_agent_session_id=resume)
    driver = CodexAppServerDriver("codex", options)
    sent: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    ours: dict[str, list[int]] = {}
    ids: dict[int, int] = {}

    def drain() -> None:
        for data in driver.outbox:
            message = json.loads(data)
            sent.append(message)
            if "method" in message and "id" in message:
                ours.setdefault(message["method"], []).append(message["id"])
        driver.outbox.clear()

    driver.start()
    drain()
    with open(os.path.join(FIXTURE, name), encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for entry in entries:
        msg = entry.get("msg")
        if not isinstance(msg, dict):
            continue
        if entry["dir"] == "send":
            method = msg.get("method")
            if method == "turn/start":
                driver.user(msg["params"]["input"][0]["text"])
            elif method == "turn/interrupt":
                driver.interrupt()
            elif "decision" in (msg.get("result") or {}):
                driver.permission(f"codex-{msg['id']}", msg["result"]["decision"] == "accept")
            drain()
            if method is not None and "id" in msg:
                assert ours.get(method), f"the driver did not send {method}"
                ids[msg["id"]] = ours[method].pop(0)
            continue
        if "method" not in msg and msg.get("id") in ids:
            msg = {**msg, "id": ids[msg["id"]]}
        messages += driver.parse(msg)
        drain()
    return driver, messages, sent


def stored(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] not in LIVE_TYPES]


def test_the_recorded_session_maps_to_messages() -> None:
    driver, messages, sent = replay("transcript.jsonl")
    assert driver.agent_session_id == "01a24888-37eb-7602-a546-b21270cb11e1"
    assert [m["method"] for m in sent if "method" in m][:3] == ["initialize", "initialized", "thread/start"]
    start = next(m for m in sent if m.get("method") == "thread/start")
    assert start["params"] == {"cwd": "/work", "approvalPolicy": "untrusted"}
    out = stored(messages)
    ends = [m for m in out if m["type"] in ("done", "error")]
    assert [m["type"] for m in ends] == ["done", "done", "done", "done", "error"]
    assert ends[0]["content"] == "Hello! This is a plain answer without any tool call." and "usage" in ends[0]
    assert ends[-1] == {"type": "error", "error": "interrupted"}
    asks = [m for m in out if m["type"] == "permission_request"]
    assert [a["tool"] for a in asks] == ["shell", "shell", "apply_patch", "shell"]
    assert "touch probe_a.txt" in asks[0]["input"]["command"] and asks[2]["input"]["changes"]
    decisions = [m["result"]["decision"] for m in sent if "decision" in (m.get("result") or {})]
    assert decisions == ["accept", "decline", "accept", "accept"]
    uses = {m["tool_use_id"]: m for m in out if m["type"] == "tool_use"}
    results = {m["tool_use_id"]: m for m in out if m["type"] == "tool_result"}
    assert sorted(uses) == sorted(results)  # the interrupted command's result too, before its turn's end
    assert results[asks[0]["tool_use_id"]]["is_error"] is False
    assert results[asks[1]["tool_use_id"]]["is_error"] is True  # declined
    assert results[asks[3]["tool_use_id"]]["error"] == "interrupted"
    # Nothing after the last turn's end (the killed command's late item/completed is not shown again).
    assert out[-1] == ends[-1]


def test_deltas_join_into_their_block() -> None:
    _, messages, _ = replay("transcript.jsonl")
    pending: list[dict[str, Any]] = []
    seen = 0
    for message in messages:
        if message["type"] in LIVE_TYPES:
            pending.append(message)
            continue
        if pending and message["type"] in ("text", "thinking"):
            assert message["type"] == pending[0]["type"].removesuffix("_delta")
            assert "".join(p["content"] for p in pending) == message["content"]
            seen += 1
            pending = []
    assert seen >= 4


def test_a_resumed_thread_and_an_api_error() -> None:
    _, messages, sent = replay("transcript_b.jsonl", resume="01a24888-37eb-7602-a546-b21270cb11e1")
    resume = next(m for m in sent if m.get("method") == "thread/resume")
    assert resume["params"]["threadId"] == "01a24888-37eb-7602-a546-b21270cb11e1"
    ends = [m for m in stored(messages) if m["type"] in ("done", "error")]
    assert [m["type"] for m in ends] == ["done", "error", "done"]
    assert ends[1]["error"]


def test_unknown_server_requests_get_an_error_and_approvals_without_prompts_are_declined() -> None:
    driver = CodexAppServerDriver("codex", SessionOptions(prompt=None, cwd="/w"))
    assert driver.parse({"id": 5, "method": "item/tool/requestUserInput", "params": {}}) == []
    assert json.loads(driver.outbox.pop())["error"]["code"] == -32601
    approval = {"id": 6, "method": "item/commandExecution/requestApproval", "params": {"itemId": "c1"}}
    assert driver.parse(approval) == []
    assert json.loads(driver.outbox.pop()) == {"id": 6, "result": {"decision": "decline"}}
    assert driver.parse({"method": "account/rateLimits/updated", "params": {}}) == []
    assert driver.outbox == []
