"""Codex's hook trust, asked of the CLI itself.

``codex exec`` skips every hook in a ``hooks.json`` that is not trusted, and
keeps that trust in the user ``config.toml`` as ``[hooks.state."<key>"]
trusted_hash = "sha256:…"``, where the key names the hook by its file, event
and position and the hash is one the CLI computes over the hook's definition.
The hash is not documented, so the runtime does not compute it: it asks
``codex app-server`` (``hooks/list``), which answers each hook's ``key``,
``currentHash``, ``sourcePath`` and ``trustStatus`` — what Codex's own hook
review writes and reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from wsruntime_ext.procs import ProcessRegistry

LIST_TIMEOUT = 30.0  # a Node-free native binary: about 0.3 s here, much more on a loaded machine


class HookListFailed(Exception):
    """``codex app-server`` did not list the hooks (did not start, failed, timed out)."""


class CodexMissing(HookListFailed):
    """There is no codex CLI to ask."""


async def list_hooks(procs: ProcessRegistry, binary: str, env: dict[str, str], cwd: str) -> list[dict[str, Any]]:
    """Every hook Codex sees from ``cwd`` with ``env``: its ``hooks/list`` entries (``key``, ``currentHash``,
    ``sourcePath``, ``trustStatus``, …). Raises HookListFailed."""
    try:
        managed = await procs.spawn(
            [binary, "app-server"],
            cwd,
            env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise CodexMissing(f"{binary} did not start: {exc.strerror or exc}") from None
    proc = managed.proc
    assert proc.stdin is not None and proc.stdout is not None
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"clientInfo": {"name": "wsruntime", "version": "1"}},
        },
        {"jsonrpc": "2.0", "method": "initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "hooks/list", "params": {"cwds": [cwd]}},
    ]
    try:
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        answer = await asyncio.wait_for(_answer_to(proc.stdout, 2), LIST_TIMEOUT)
    except asyncio.TimeoutError:
        raise HookListFailed(f"codex app-server did not list its hooks within {LIST_TIMEOUT:.0f} s") from None
    except (OSError, ValueError) as exc:
        raise HookListFailed(f"codex app-server: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        await managed.kill_tree(grace=1.0)
    if "error" in answer:
        error = answer["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise HookListFailed(f"codex app-server: hooks/list failed: {message}")
    hooks = []
    for entry in (answer.get("result") or {}).get("data") or []:
        for hook in entry.get("hooks") or [] if isinstance(entry, dict) else []:
            if isinstance(hook, dict) and isinstance(hook.get("key"), str):
                hooks.append(hook)
    return hooks


async def _answer_to(stdout: asyncio.StreamReader, request_id: int) -> dict[str, Any]:
    while True:
        line = await stdout.readline()
        if not line:
            raise ValueError("it exited before answering")
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not a protocol line
        if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
            return message


def count_handlers(hooks: Any) -> int:
    """How many hooks a ``{"<Event>": [{"hooks": [...]}]}`` object defines (what trust must cover)."""
    if not isinstance(hooks, dict):
        return 0
    return sum(
        len(group["hooks"])
        for groups in hooks.values()
        if isinstance(groups, list)
        for group in groups
        if isinstance(group, dict) and isinstance(group.get("hooks"), list)
    )


def of_file(listed: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """The listed hooks defined in the file at ``path`` (compared by their real paths)."""
    real = os.path.realpath(path)
    return [h for h in listed if isinstance(h.get("sourcePath"), str) and os.path.realpath(h["sourcePath"]) == real]


def trust_entries(listed: list[dict[str, Any]], path: str) -> dict[str, str]:
    """``{key: currentHash}`` for every hook of the file at ``path``: what trusting them records."""
    return {h["key"]: h["currentHash"] for h in of_file(listed, path) if isinstance(h.get("currentHash"), str)}


def all_trusted(listed: list[dict[str, Any]], path: str, defined: int) -> bool:
    """Whether Codex runs every one of the ``defined`` hooks of the file at ``path``."""
    mine = of_file(listed, path)
    return len(mine) >= defined and all(h.get("trustStatus") in ("trusted", "managed") for h in mine)
