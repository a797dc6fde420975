"""Live text as it is generated (API.md extension): ``deltas: true``, with tests/fake_agent.py as ``claude``.

Deltas are live only: not stored, not numbered, not replayed, each sent in its place after the stored
frame it names in ``after``; a client attached mid-block gets the rest of them and the complete block.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agents_support import check_stream, create, get_session, kinds, stream, wait_for_frame
from tests.conftest import ServerPool, ServerThread

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_agent.py")
ALL = ["deltas", "interactive", "interrupt", "permission_prompts", "resume"]
CAPABILITIES = {"claude-code": ALL, "codex": ALL, "gemini": ALL, "qwen-code": ALL, "opencode": ALL}


@pytest.fixture(scope="module")
def fake(servers: ServerPool) -> Iterator[ServerThread]:
    server = servers.fresh("--claude-bin", FAKE, "--max-sessions", "5")
    yield server
    server.stop()


def stored_kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [k for f, k in zip(frames, kinds(frames)) if "seq" in f]


async def test_agents_list_their_capabilities(fake: ServerThread) -> None:
    agents = {a["name"]: a for a in (await fake.request("GET", "/api/v1/agents")).body["agents"]}
    for name, capabilities in CAPABILITIES.items():
        assert agents[name]["capabilities"] == capabilities
    for agent in agents.values():
        assert set(agent["capabilities"]) <= {"deltas", "interactive", "interrupt", "permission_prompts", "resume"}
    health = (await fake.request("GET", "/health")).body["agents"]
    assert "capabilities" not in health["claude-code"]  # /health keeps its shape


async def test_an_unsupported_capability_is_refused_by_name(fake: ServerThread) -> None:
    agents = {a["name"]: a for a in (await fake.request("GET", "/api/v1/agents")).body["agents"]}
    for name, agent in agents.items():
        for option in ("deltas", "interactive", "permission_prompts"):
            if option in agent["capabilities"]:
                continue
            response = await fake.request(
                "POST", "/api/v1/agent-sessions", {"agent": name, "prompt": "hi", option: True}
            )
            assert response.status == 400, (name, option)
            error = response.body["error"]
            assert error["code"] == "unsupported_option" and error["details"]["field"] == option
            assert option in error["message"]
    response = await fake.request("POST", "/api/v1/agent-sessions", {"prompt": "hi", "deltas": "yes"})
    assert response.status == 400 and response.body["error"]["code"] == "invalid_field"


async def test_deltas_come_live_before_their_block_and_are_never_stored(fake: ServerThread) -> None:
    folder = tempfile.mkdtemp(prefix="deltas-")
    start, gate = os.path.join(folder, "start"), os.path.join(folder, "go")
    record = await create(fake, prompt=f"wait {gate} {start}", deltas=True)
    assert record["deltas"] is True
    sid = record["id"]
    early = await fake.websocket(f"/api/v1/ws/agent-sessions/{sid}")
    early_frames: list[dict[str, Any]] = []
    await wait_for_frame(early, "status", early_frames, status="running")
    with open(start, "w"):  # attached: now the first half comes (deltas are live only, never replayed)
        pass
    first = await wait_for_frame(early, "text_delta", early_frames)
    assert first["content"] == "first half " and first["block"] == 0 and "seq" not in first
    assert first["session_id"] == sid and first["after"] == early_frames[-2]["seq"]
    # A client attached mid-block: the stored frames so far, then the rest of the block's deltas.
    late = await fake.websocket(f"/api/v1/ws/agent-sessions/{sid}")
    late_frames: list[dict[str, Any]] = []
    await wait_for_frame(late, "status", late_frames, status="running")
    with open(gate, "w"):
        pass
    for ws, frames in ((early, early_frames), (late, late_frames)):
        while True:
            text = await ws.read_message()
            if text is None:
                break
            frames.append(json.loads(text))
    assert kinds(early_frames) == [
        "status:running",
        "text_delta",
        "text_delta",
        "text",
        "done",
        "status:completed",
    ]
    assert kinds(late_frames) == ["status:running", "text_delta", "text", "done", "status:completed"]
    for frames in (early_frames, late_frames):
        second = frames[-4]
        assert second["content"] == "second half" and second["after"] == 1 and "seq" not in second
        assert frames[-3]["content"] == "first half second half"
        check_stream([f for f in frames if "seq" in f], sid)
    # Stored, replayed, counted: the complete frames only.
    replayed, _ = await stream(fake, sid)
    assert kinds(replayed) == ["status:running", "text", "done", "status:completed"]
    stored = (await fake.request("GET", f"/api/v1/agent-sessions/{sid}/messages")).body["messages"]
    assert [m["type"] for m in stored] == ["status", "text", "done", "status"]
    assert (await get_session(fake, sid))["message_count"] == 4


async def test_without_deltas_no_delta_is_relayed(fake: ServerThread) -> None:
    record = await create(fake, prompt="stream 50 10000")
    assert record["deltas"] is False
    frames, _ = await stream(fake, record["id"])
    assert kinds(frames) == ["status:running", "text", "done", "status:completed"]


async def test_a_fast_stream_of_deltas_keeps_its_order(fake: ServerThread) -> None:
    gate = os.path.join(tempfile.mkdtemp(prefix="deltas-gate-"), "go")
    record = await create(fake, prompt=f"stream 500 100000 {gate}", deltas=True)
    ws = await fake.websocket(f"/api/v1/ws/agent-sessions/{record['id']}")
    with open(gate, "w"):  # attached: now the deltas come (a socket attached after them would see none)
        pass
    frames: list[dict[str, Any]] = []
    while True:
        text = await ws.read_message()
        if text is None:
            break
        frames.append(json.loads(text))
    deltas = [f["content"] for f in frames if f["type"] == "text_delta"]
    # Attached before the block: every delta, in order, none twice (500 is far below a client's live backlog).
    assert len(deltas) == 500 and all(d.startswith(f"<{i} ") for i, d in enumerate(deltas))
    complete = next(f for f in frames if f["type"] == "text")
    assert complete["content"].endswith("".join(deltas))
    assert stored_kinds(frames) == ["status:running", "text", "done", "status:completed"]
    assert frames.index(complete) > max(i for i, f in enumerate(frames) if f["type"] == "text_delta")
