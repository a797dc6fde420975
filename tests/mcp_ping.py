"""A tiny stdio MCP server (stdlib only) with one tool, ``ping``, for the agent-settings proofs.

Newline-delimited JSON-RPC 2.0 on stdin/stdout, the MCP stdio transport:
``initialize``, ``ping``, ``tools/list`` (one tool) and ``tools/call`` (answers
``PING-MCP-<label>``); notifications are ignored, other methods answer -32601.
Every call is appended as a JSON line to ``--log FILE`` (with the label), so a
test sees which configured copy the agent reached.

    python3 tests/mcp_ping.py --label user --log /tmp/calls.jsonl
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TOOL = {
    "name": "ping",
    "description": "Answers a fixed marker. Call it when asked to ping.",
    "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
}


def option(name: str, default: str) -> str:
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1] if name in argv[:-1] else default


def main() -> None:
    label = option("--label", "ping")
    log = option("--log", os.devnull)

    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict) or message.get("id") is None:
            continue  # a notification
        method, mid = message.get("method"), message["id"]
        if method == "initialize":
            version = (message.get("params") or {}).get("protocolVersion") or "2024-11-05"
            result: dict[str, Any] = {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "mcp-ping", "version": "1.0"},
            }
        elif method == "ping":
            result = {}
        elif method == "tools/list":
            result = {"tools": [TOOL]}
        elif method == "tools/call":
            params = message.get("params") or {}
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"label": label, "tool": params.get("name"), "cwd": os.getcwd()}) + "\n")
            result = {"content": [{"type": "text", "text": f"PING-MCP-{label}"}], "isError": False}
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": f"no method {method}"}})
            continue
        send({"jsonrpc": "2.0", "id": mid, "result": result})


if __name__ == "__main__":
    main()
