"""Helpers for the agent session tests: create a session, read its stream to the end, wait for a state."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.conftest import ServerThread


async def create(server: ServerThread, **body: Any) -> dict[str, Any]:
    response = await server.request("POST", "/api/v1/agent-sessions", body)
    assert response.status == 201, response.raw
    return dict(response.body)


async def stream(
    server: ServerThread, session_id: str, after: int | None = None, timeout: float = 60
) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame of the session's WebSocket until the server closes it; (frames, close code).

    Closed with 1013 (too far behind), it reconnects with ``?after=`` as API.md tells clients to.
    """
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        start = frames[-1]["seq"] if frames else after
        path = f"/api/v1/ws/agent-sessions/{session_id}" + (f"?after={start}" if start is not None else "")
        ws = await server.websocket(path)
        while True:
            text = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
            if text is None:
                break
            frames.append(json.loads(text))
        if ws.close_code != 1013:
            return frames, ws.close_code


async def wait_for_frame(
    ws: Any, kind: str, frames: list[dict[str, Any]], timeout: float = 60, **fields: Any
) -> dict[str, Any]:
    """Read frames (kept in ``frames``) until one of ``kind`` with ``fields`` arrives."""
    deadline = time.monotonic() + timeout
    while True:
        text = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        assert text is not None, f"closed ({ws.close_code}) before a {kind} frame; last frames: {frames[-5:]}"
        frame: dict[str, Any] = json.loads(text)
        frames.append(frame)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame


async def get_session(server: ServerThread, session_id: str) -> dict[str, Any]:
    response = await server.request("GET", f"/api/v1/agent-sessions/{session_id}")
    assert response.status == 200
    return dict(response.body)


async def wait_status(server: ServerThread, session_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = await get_session(server, session_id)
        if record["status"] in statuses:
            return record
        assert time.monotonic() < deadline, f"still {record['status']}, wanted {statuses}"
        await asyncio.sleep(0.05)


def check_stream(frames: list[dict[str, Any]], session_id: str) -> None:
    """The stream invariants: seq 1, 2, 3 … with no gap; every frame stamped; one final status frame."""
    assert [f["seq"] for f in frames] == list(range(frames[0]["seq"], frames[0]["seq"] + len(frames)))
    assert all(f["session_id"] == session_id and f["ts"] for f in frames)
    assert frames[-1]["type"] == "status" and frames[-1]["status"] in (
        "completed",
        "failed",
        "terminated",
        "interrupted",
    )
    assert sum(1 for f in frames if f["type"] == "status" and f["status"] in ("completed", "failed", "terminated")) <= 1


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] if f["type"] != "status" else f"status:{f['status']}" for f in frames]
