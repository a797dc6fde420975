"""``GET /health`` (API.md "Health"): liveness without auth, more detail with it.

It answers from memory only — what the modules know is gathered once at
start-up (and refreshed by them), never by a subprocess on the request path.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

from wsruntime_ext import __version__
from wsruntime_ext.base import OpenHandler, log
from wsruntime_ext.openapi import json_response, route
from wsruntime_ext.procs import version_output

if TYPE_CHECKING:
    from wsruntime_ext.context import Context


class HealthHandler(OpenHandler):
    def get(self) -> None:
        ctx = self.ctx
        uptime = round(time.monotonic() - ctx.started_monotonic, 3)
        # The details tell an attacker what runs here: only for a valid token (or no token configured).
        detailed = ctx.security.token_ok(self.supplied_token())
        encoded = answer_of(ctx).detailed(uptime) if detailed else None
        if encoded is not None:
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(encoded)
            return
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "uptime_s": uptime,
            "workspace_id": ctx.config.workspace_id,
        }
        if detailed:
            body["auth"] = ctx.config.auth_enabled
            body["runtime"] = runtime_info()
            for provider in ctx.health_providers:
                body.update(provider())
        self.send_json(body)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_OWN_KEYS = frozenset(("status", "version", "uptime_s", "workspace_id", "auth", "runtime"))


class HealthAnswer:
    """The detailed answer as bytes, from pieces encoded once: what a provider reports is encoded again
    only when it differs from what it reported last time (comparing costs a twentieth of encoding, and
    /health is what load balancers and the console poll)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.head = b'{"status":"ok","version":' + _ENCODER.encode(__version__).encode() + b',"uptime_s":'
        self.fixed = (
            ',"workspace_id":'
            + _ENCODER.encode(ctx.config.workspace_id)
            + ',"auth":'
            + _ENCODER.encode(ctx.config.auth_enabled)
            + ',"runtime":'
            + _ENCODER.encode(runtime_info())
        ).encode()
        # Per provider: a copy of its last report (the provider may change the very dict it returned),
        # the report's members encoded without the braces (after a comma), and its keys.
        self.last: list[tuple[dict[str, Any], bytes, frozenset[str]] | None] = []
        self.distinct = True  # no key reported twice (else the dict decides which one wins)

    def detailed(self, uptime: float) -> bytes | None:
        """The answer with every provider's report, or None when two of them report the same key."""
        providers = self.ctx.health_providers
        if len(self.last) != len(providers):
            self.last = [None] * len(providers)
        parts = [self.head, repr(uptime).encode(), self.fixed]
        changed = False
        for index, provider in enumerate(providers):
            report = provider()
            last = self.last[index]
            if last is None or last[0] != report:
                members = _ENCODER.encode(report)[1:-1].encode()
                last = self.last[index] = (copy.deepcopy(report), b"," + members if members else b"", frozenset(report))
                changed = True
            parts.append(last[1])
        if changed:
            keys = [entry[2] for entry in self.last if entry is not None]
            every = frozenset().union(_OWN_KEYS, *keys)
            self.distinct = len(every) == len(_OWN_KEYS) + sum(len(k) for k in keys)
        if not self.distinct:
            return None
        parts.append(b"}")
        return b"".join(parts)


_ANSWERS: weakref.WeakKeyDictionary[Context, HealthAnswer] = weakref.WeakKeyDictionary()


def answer_of(ctx: Context) -> HealthAnswer:
    answer = _ANSWERS.get(ctx)
    if answer is None:
        answer = _ANSWERS[ctx] = HealthAnswer(ctx)
    return answer


_RUNTIME: dict[str, Any] = {}


def runtime_info() -> dict[str, Any]:
    if not _RUNTIME:
        try:
            import psutil

            psutil_version: str | None = psutil.__version__
        except Exception:  # no wheel for this interpreter: stats fall back to /proc
            psutil_version = None
        pyz = pyz_facts()
        if pyz is not None:
            psutil_source = pyz["psutil_source"]
        elif psutil_version is not None:
            psutil_source = "installed"
        else:
            psutil_source = "proc" if os.path.exists("/proc/self/stat") else "unavailable"
        _RUNTIME.update(
            python=platform.python_version(),
            implementation=sys.implementation.name,
            platform=f"{sys.platform}-{platform.machine()}",
            psutil=psutil_version,
            psutil_source=psutil_source,
            pyz=None if pyz is None else {k: pyz[k] for k in _PYZ_KEYS},
        )
    return _RUNTIME


_PYZ_KEYS = ("version", "build_id", "platform_tag", "pyz", "code_dir", "cache")


def pyz_facts() -> dict[str, Any] | None:
    """What the wsruntime.pyz bootstrap (zipapp/wsruntime_pyz.py) recorded, when it started us."""
    bootstrap = sys.modules.get("wsruntime_pyz")  # never imported here: only present inside a pyz
    facts = getattr(bootstrap, "FACTS", None)
    return dict(facts) if facts else None


def detect_tool(name: str, timeout: float = 5.0) -> dict[str, Any]:
    """Whether a CLI is on PATH and the version it prints (blocking: run it off the IOLoop)."""
    path = shutil.which(name)
    if path is None:
        return {"available": False, "version": None, "path": None}
    version = None
    try:
        _code, out = version_output([path, "--version"], timeout)
        match = re.search(r"\d+(\.\d+)+", out)
        version = match.group(0) if match else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"available": True, "version": version, "path": path}


async def startup(ctx: Context) -> None:
    info = runtime_info()
    pyz = pyz_facts()
    if pyz is not None:
        where = pyz["code_dir"] or f"the zip itself ({pyz['pyz']})"
        log.info("running wsruntime.pyz build %s from %s; psutil: %s", pyz["build_id"], where, info["psutil_source"])
        degraded = pyz["code_dir"] is None or not info["psutil_source"].startswith("cache:")
        for note in pyz["notes"]:
            log.log(logging.WARNING if degraded else logging.INFO, "wsruntime.pyz: %s", note)
    git = await ctx.run_blocking(detect_tool, "git")
    ctx.health_providers.append(lambda: {"git": git})


handlers = [route("/health", HealthHandler)]

open_paths = ["/health"]

openapi = {
    "tags": [{"name": "health", "description": "Liveness and what the runtime can do"}],
    "schemas": {
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptime_s", "workspace_id"],
            "properties": {
                "status": {"type": "string", "const": "ok"},
                "version": {"type": "string", "examples": [__version__]},
                "uptime_s": {"type": "number", "minimum": 0},
                "workspace_id": {"type": "string"},
                "auth": {"type": "boolean", "description": "whether a token is required (authorised callers only)"},
                "runtime": {
                    "type": "object",
                    "description": "interpreter and platform (authorised callers only)",
                    "properties": {
                        "python": {"type": "string"},
                        "implementation": {"type": "string"},
                        "platform": {"type": "string"},
                        "psutil": {"type": ["string", "null"]},
                        "psutil_source": {
                            "type": "string",
                            "description": "where psutil came from: cache:<dir> or memfd (wsruntime.pyz), installed, "
                            "or proc (unavailable: system stats come from /proc) or unavailable",
                        },
                        "pyz": {
                            "type": ["object", "null"],
                            "description": "the wsruntime.pyz that started this process (null outside one)",
                            "properties": {
                                "version": {"type": "string"},
                                "build_id": {"type": "string"},
                                "platform_tag": {"type": "string", "examples": ["manylinux_x86_64"]},
                                "pyz": {"type": "string", "description": "the pyz file"},
                                "code_dir": {"type": ["string", "null"], "description": "where it was extracted"},
                                "cache": {
                                    "type": "string",
                                    "description": "extracted, reused, raced, repaired or none",
                                },
                            },
                        },
                    },
                },
                "events": {
                    "type": "object",
                    "description": "`WS /api/v1/ws` (authorised callers only): clients listening, the last seq, "
                    "queues of 4096 events that filled and gave way to a `resync` (`overflows`), clients closed "
                    "with 1013 for answering no ping for 20 s (`stalls`), and the events never sent (`undelivered`)",
                    "properties": {
                        "subscribers": {"type": "integer", "minimum": 0},
                        "last_seq": {"type": "integer", "minimum": 0},
                        "overflows": {"type": "integer", "minimum": 0},
                        "stalls": {"type": "integer", "minimum": 0},
                        "undelivered": {"type": "integer", "minimum": 0},
                    },
                },
                "git": {
                    "type": "object",
                    "description": "whether git is installed (authorised callers only)",
                    "properties": {
                        "available": {"type": "boolean"},
                        "version": {"type": ["string", "null"]},
                        "path": {"type": ["string", "null"]},
                    },
                },
            },
        }
    },
    "paths": {
        "/health": {
            "get": {
                "summary": "Liveness",
                "description": "Never needs a token. With a valid token (or none configured) it adds what "
                "the runtime found on this machine (git, agent CLIs, …). It never waits: an agent CLI or the "
                "OpenSpec CLI whose `--version` is still running at start-up is listed with `detecting: true` "
                "(available false, version null); an npm install's version is read from its package.json.",
                "tags": ["health"],
                "responses": {"200": json_response("The runtime is up", {"$ref": "#/components/schemas/Health"})},
            }
        }
    },
}
