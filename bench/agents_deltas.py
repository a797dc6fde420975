"""Agent sessions with ``deltas: true``: added latency of live text_delta frames to 10 clients, and the log size.

``python bench/agents_deltas.py`` starts wsruntime with ``--claude-bin tests/fake_agent.py`` and has the
fake agent stream one text block as ``stream N 2000`` — N ``stream_event`` deltas at 2,000 a second, each
stamped when written — to 10 WebSocket clients of one session. It reports, over every delta every client
received, p50/p99/max of arrival minus stamp (pipe + runtime + WebSocket + this process's own decoding),
how many deltas each client got, and the session's stored message log before and after the turn: its
``message_count`` and the size of ``messages.jsonl`` (deltas are live only: the log grows by the complete
block, the ``done`` and two status frames, whatever N is).

Target (issue 21): p99 added latency < 5 ms at 2,000 chunks/s to 10 clients. Results go to
``bench/results/agents-deltas-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import tornado.websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agents_relay import RESULTS_DIR, Runtime, cpu_seconds, percentile

TARGET_P99_MS = 5.0


async def deltas_session(runtime: Runtime) -> str:
    body = {"prompt": "echo warm-up", "interactive": True, "deltas": True}
    record = await runtime.call("POST", "/api/v1/agent-sessions", body)
    sid = str(record["id"])
    while (await runtime.call("GET", f"/api/v1/agent-sessions/{sid}"))["status"] != "idle":  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # another process: nothing to wait on but its answers
    return sid


async def collect(ws: tornado.websocket.WebSocketClientConnection, delays: list[float]) -> int:
    """Arrival minus stamp of every delta, until the turn's done; the number of deltas."""
    count = 0
    while True:
        text = await ws.read_message()
        received = time.time()
        if text is None:
            raise RuntimeError(f"closed early ({ws.close_code})")
        assert isinstance(text, str)
        if text.startswith('{"type":"text_delta"'):
            # Not decoded: 10 clients in this one process read 20,000 frames a second, and their own
            # decoding would be what is measured. The stamp is the second word of "<i stamp>".
            start = text.index('"content":"<') + 12
            count += 1
            delays.append((received - float(text[text.index(" ", start) + 1 : text.index(">", start)])) * 1000)
        elif text.startswith('{"type":"done"'):
            return count


def compact(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def log_state(runtime: Runtime, sid: str, record: dict[str, Any]) -> dict[str, int]:
    path = os.path.join(runtime.workspace, ".wsruntime", "agent-sessions", sid, "messages.jsonl")
    return {"message_count": int(record["message_count"]), "log_bytes": os.path.getsize(path)}


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    """``--repeat`` runs (a shared 2-core machine is noisy); the run with the median p99 is reported."""
    runs = [await one_run(opts) for _ in range(opts.repeat)]
    result = sorted(runs, key=lambda r: r["latency_ms"]["p99"])[len(runs) // 2]
    result["p99_ms_of_every_run"] = [r["latency_ms"]["p99"] for r in runs]
    return result


async def one_run(opts: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    runtime = Runtime()
    try:
        sid = await deltas_session(runtime)
        sockets = [await runtime.connect(sid) for _ in range(opts.clients)]
        before = log_state(runtime, sid, await runtime.call("GET", f"/api/v1/agent-sessions/{sid}"))
        await asyncio.sleep(0.2)
        server_cpu, wall = cpu_seconds(runtime.proc.pid), time.perf_counter()
        delays: list[float] = []
        prompt = f"stream {opts.count} {opts.rate}"
        await runtime.call("POST", f"/api/v1/agent-sessions/{sid}/messages", {"content": prompt})
        counts = await asyncio.gather(*(collect(ws, delays) for ws in sockets))
        server_share = (cpu_seconds(runtime.proc.pid) - server_cpu) / (time.perf_counter() - wall)
        while (await runtime.call("GET", f"/api/v1/agent-sessions/{sid}"))["status"] != "idle":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        after = log_state(runtime, sid, await runtime.call("GET", f"/api/v1/agent-sessions/{sid}"))
        added = await runtime.call("GET", f"/api/v1/agent-sessions/{sid}/messages?after={before['message_count']}")
        # What the new stored frames weigh: the log grows by them (the complete block holds every chunk's text).
        frames_bytes = sum(len(compact(m)) + 1 for m in added["messages"])
        await runtime.call("DELETE", f"/api/v1/agent-sessions/{sid}")
        for ws in sockets:
            ws.close()
    finally:
        runtime.stop()
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": load_before},
        "chunks": opts.count,
        "chunks_per_s": opts.rate,
        "clients": opts.clients,
        "deltas_received_per_client": {"min": min(counts), "max": max(counts)},
        "latency_ms": {
            "p50": round(percentile(delays, 50), 3),
            "p99": round(percentile(delays, 99), 3),
            "max": round(max(delays), 3),
            "samples": len(delays),
        },
        "server_cpu_share_of_a_core": round(server_share, 2),
        "stored_log": {
            "before": before,
            "after": after,
            "frames_added": after["message_count"] - before["message_count"],
            "bytes_added": after["log_bytes"] - before["log_bytes"],
            "bytes_of_the_added_frames": frames_bytes,
            "added_frames": [m["type"] for m in added["messages"]],
        },
        "target_p99_ms": TARGET_P99_MS,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="deltas in the block (default: 10000, 5 s)")
    parser.add_argument("--rate", type=float, default=2000.0, help="deltas a second (default: 2000)")
    parser.add_argument("--clients", type=int, default=10, help="WebSocket clients (default: 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the one with the median p99 is kept")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=1))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"agents-deltas-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    log = result["stored_log"]
    ok = (
        result["latency_ms"]["p99"] < TARGET_P99_MS
        and log["frames_added"] == 4
        and log["bytes_added"] == log["bytes_of_the_added_frames"]
    )
    print("targets met" if ok else "targets NOT met")
