"""The OpenSpec service: the workspace's state as API.md shows it, cached, and the workflow actions.

It knows no HTTP. :meth:`OpenSpecService.state` reads through :mod:`reader`
off the IOLoop and caches the result under a stat fingerprint of ``openspec/``,
``.claude/`` (every entry's mtime, size and inode) and the global
``openspec/config.json`` that picks the profile: a repeated call costs one walk of
stats, no file is read or parsed again until something changes. Actions start
agent sessions through ``ctx.agents``; ``init`` runs the CLI. The CLI runs, and
the global config is found, in the environment agent sessions get (``HOME`` is
``--home``), so what ``init`` installs is what the answer reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from wsruntime_ext.agents.adapter import SessionOptions
from wsruntime_ext.base import ApiError
from wsruntime_ext.openspec import actions
from wsruntime_ext.openspec.profile import Profile, config_path, not_in_profile, read_profile
from wsruntime_ext.openspec.reader import read_workspace
from wsruntime_ext.openspec.schema import SchemaCatalog
from wsruntime_ext.procs import version_output
from wsruntime_ext.versions import DETECTION_WAIT_S, npm_package_version

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

log = logging.getLogger("wsruntime.openspec")

# An entry changed this recently may change again within the file system's clock tick unseen: re-read.
SETTLE_NS = 2_000_000_000
INIT_TIMEOUT_S = 180.0
OUTPUT_LIMIT = 64 << 10
AGENT = "claude-code"


def fingerprint(workspace: str, global_config: str) -> tuple[tuple[Any, ...], int]:
    """Every entry under ``openspec/`` and ``.claude/commands`` + ``.claude/skills``, the global config file, and
    the newest mtime."""
    items: list[tuple[Any, ...]] = []
    newest = 0
    try:
        st = os.stat(global_config)
        items.append((global_config, st.st_mtime_ns, st.st_size, st.st_ino))
        newest = st.st_mtime_ns
    except OSError:
        items.append((global_config, None))
    for top in ("openspec", os.path.join(".claude", "commands"), os.path.join(".claude", "skills")):
        stack = [os.path.join(workspace, top)]
        try:
            st = os.stat(stack[0])
        except OSError:
            items.append((top, None))
            continue
        items.append((top, st.st_mtime_ns, st.st_ino))
        newest = max(newest, st.st_mtime_ns)
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                items.append((entry.path, st.st_mtime_ns, st.st_size, st.st_ino))
                newest = max(newest, st.st_mtime_ns)
                if is_dir:
                    stack.append(entry.path)
    items.sort()
    return tuple(items), newest


def _rel(workspace: str, path: str) -> str:
    rel = os.path.relpath(path, workspace)
    return rel.replace(os.sep, "/")


def api_view(state: dict[str, Any], installed: list[str], profile: Profile) -> dict[str, Any]:
    """The reader's CLI-shaped state → API.md's ``GET .../openspec`` body (without ``cli``)."""
    workspace = state["workspace"]
    statuses = {s["changeName"]: s for s in state["status"]["changes"]}
    changes = []
    for item in state["list"]["changes"]:
        name = item["name"]
        status = statuses.get(name)
        change: dict[str, Any] = {
            "name": name,
            "status": item["status"],
            "tasks": {"completed": item["completedTasks"], "total": item["totalTasks"]},
            "last_modified": item["lastModified"],
            "path": f"openspec/changes/{name}",
            "schema": None,
            "artifacts": [],
            "planning_complete": False,
            "apply_state": None,
            "next_steps": [],
            "error": None,
        }
        if "nested" in item:
            change["nested"] = item["nested"]
        if status is None and name.startswith("."):
            change["error"] = {"code": "hidden_change", "message": "A hidden folder is listed but never loaded"}
        elif status is not None and "status" in status:
            diag = status["status"][0]
            change["error"] = {"code": diag["code"], "message": diag["message"]}
        elif status is not None:
            apply = state["apply"].get(name, {})
            paths = status["artifactPaths"]
            change.update(
                schema=status["schemaName"],
                planning_complete=status["isPlanningComplete"],
                apply_state=apply.get("state"),
                next_steps=status["nextSteps"],
            )
            if apply.get("missingArtifacts"):
                change["missing_artifacts"] = apply["missingArtifacts"]
            for a in status["artifacts"]:
                artifact: dict[str, Any] = {
                    "id": a["id"],
                    "status": a["status"],
                    "path": _rel(workspace, paths[a["id"]]["resolvedOutputPath"]),
                    "files": [_rel(workspace, p) for p in paths[a["id"]]["existingOutputPaths"]],
                    "requires": a["requires"],
                    "specs": a["outputPath"].startswith("specs/"),
                }
                if "missingDeps" in a:
                    artifact["missing_deps"] = a["missingDeps"]
                change["artifacts"].append(artifact)
        change["actions"] = actions.change_actions(change, installed, profile.workflows)
        changes.append(change)
    return {
        "initialized": state["initialized"],
        "root": "openspec" if state["initialized"] else None,
        "legacy": state["legacy"],
        "schema": state["schema"],
        "schemas": state["schemas"],
        "changes": changes,
        "specs": [
            {"name": s["id"], "requirements": s["requirementCount"], "path": f"openspec/specs/{s['id']}/spec.md"}
            for s in state["specs"]["specs"]
        ],
        "archived": state["archived"],
        "warnings": state["list"].get("warnings", []),
        "actions": actions.workspace_actions(state["initialized"], changes, installed, profile.workflows),
        "profile": profile.view(),
        "installed": installed,
        "agent": AGENT,
    }


class OpenSpecService:
    """The workspace's OpenSpec state (cached) and its workflow actions."""

    def __init__(self, ctx: Context, binary: str | None) -> None:
        self.ctx = ctx
        self.workspace = ctx.workspace
        self.binary = binary or "openspec"
        self.catalog = SchemaCatalog()
        self.cli: dict[str, Any] = {"available": False, "version": None, "path": None}
        self.env_overrides: dict[str, str] = {}  # added to the CLI's environment (tests give it a temp HOME)
        self._detection: asyncio.Future[None] | None = None
        self.detection_wait_s = DETECTION_WAIT_S  # the longest a state request waits for `openspec --version`
        self._cache: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self.reads = 0  # full reads so far (the cache's misses)

    # -- the CLI -------------------------------------------------------------------------

    def start(self) -> None:
        """Detect the CLI's version in the background: the port must not wait for Node."""
        self._detection = asyncio.ensure_future(self._detect())

    async def detected(self, timeout: float | None = None) -> bool:
        """Wait until the CLI is detected (at most ``timeout`` seconds); whether it is."""
        if self._detection is None:
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._detection), timeout)
        return self._detection.done()

    def _env(self) -> dict[str, str]:
        """What the CLI runs with: the agent sessions' environment (they run it too), telemetry off."""
        base = self.ctx.agents.session_environment() if hasattr(self.ctx, "agents") else dict(os.environ)
        return {**base, "OPENSPEC_TELEMETRY": "0", "DO_NOT_TRACK": "1", "NO_COLOR": "1", **self.env_overrides}

    def global_config_path(self) -> str:
        """The global ``openspec/config.json`` the CLI reads in that environment (``~`` is ``--home``)."""
        env = self._env()
        return config_path(env, env.get("HOME") or self.ctx.config.home_dir)

    def _find_binary(self) -> str | None:
        path = shutil.which(self.binary) if os.sep not in self.binary else self.binary
        if path is None or not os.access(path, os.X_OK) or os.path.isdir(path):
            return None
        return path

    def _detect_blocking(self) -> dict[str, Any] | None:
        path = self._find_binary()
        if path is None:
            return None
        version = npm_package_version(path)  # the npm install says it: no Node started
        if version is not None:
            return {"available": True, "version": version, "path": path}
        try:
            code, text = version_output([path, "--version"], 30, self._env())
        except (OSError, subprocess.SubprocessError):
            return None
        if code == 0 and text:
            return {"available": True, "version": text.split()[-1], "path": path}
        return None

    async def _detect(self) -> None:
        found = await self.ctx.run_blocking(self._detect_blocking)
        if found is not None:
            self.cli = found

    def health(self) -> dict[str, Any]:
        """What is known now: /health never waits for a probe (it says ``detecting`` while one runs)."""
        cli = dict(self.cli)
        if self._detection is not None and not self._detection.done():
            cli["detecting"] = True
        return {"openspec": {"cli": cli}}

    # -- the state -----------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        """Blocking: the API view, from the cache when nothing under the watched folders changed."""
        global_config = self.global_config_path()
        key, newest = fingerprint(self.workspace, global_config)
        with self._lock:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        state = read_workspace(self.workspace, self.catalog)
        view = api_view(state, actions.installed_commands(self.workspace), read_profile(global_config))
        self.reads += 1
        settled = time.time_ns() - newest > SETTLE_NS
        with self._lock:
            self._cache = (key, view) if settled else None
        return view

    async def state(self) -> dict[str, Any]:
        view, _ = await asyncio.gather(self.ctx.run_blocking(self._read), self.detected(self.detection_wait_s))
        return {**view, "cli": self.cli_info()}

    def cli_info(self) -> dict[str, Any]:
        """What is known of the CLI; ``detecting`` only while a ``--version`` probe outlasts the bounded wait."""
        info: dict[str, Any] = {"available": self.cli["available"], "version": self.cli["version"]}
        if self._detection is not None and not self._detection.done():
            info["detecting"] = True
        return info

    # -- actions -------------------------------------------------------------------------

    async def run_action(self, action: str, change_name: str | None, text: str | None) -> dict[str, Any]:
        """Carry ``action`` out: an agent session (its record), or for ``init`` the CLI's output."""
        if action not in actions.ACTIONS:
            raise ApiError(
                400, "unknown_action", f"Unknown OpenSpec action {action[:80]!r}", known=list(actions.ACTIONS)
            )
        view = await self.ctx.run_blocking(self._read)
        if action == "init":
            if change_name is not None:
                raise ApiError(400, "invalid_field", "init takes no change", field="change")
            return await self._init(view)
        reason = not_in_profile(view["profile"], action)
        if reason is not None:
            raise ApiError(409, "action_not_available", reason, action=action, profile=view["profile"]["name"])
        if not view["initialized"]:
            raise ApiError(
                409,
                "action_not_available",
                "OpenSpec is not initialised in this workspace: run the init action first",
                action=action,
            )
        if action in actions.NEEDS and not (text or "").strip():
            raise ApiError(
                400, "invalid_field", f"{action} needs 'input': the {actions.NEEDS[action][0]}", field="input"
            )
        if change_name is None:
            if action not in actions.WORKSPACE_ACTIONS:
                raise ApiError(400, "invalid_field", f"{action} needs 'change': the change to act on", field="change")
            reason = actions.workspace_reason(action, view["changes"])
            prompt = actions.slash(action)
        else:
            if action not in actions.CHANGE_ACTIONS:
                raise ApiError(400, "invalid_field", f"{action} does not act on one change", field="change")
            change = next((c for c in view["changes"] if c["name"] == change_name), None)
            if change is None:
                raise ApiError(404, "change_not_found", "No active change with this name", change=change_name[:200])
            reason = actions.change_reason(action, change)
            prompt = actions.slash(action, change_name)
        if reason is not None:
            raise ApiError(409, "action_not_available", reason, action=action, change=change_name)
        if text and text.strip():
            prompt += " " + text.strip()
        options = SessionOptions(prompt=prompt, cwd=self.workspace)
        session = await self.ctx.agents.create(AGENT, options, "", None)
        return self.ctx.agents.view(session)

    async def _init(self, view: dict[str, Any]) -> dict[str, Any]:
        if view["initialized"]:
            raise ApiError(
                409, "action_not_available", "OpenSpec is initialised in this workspace already", action="init"
            )
        await self.detected()
        if not self.cli["available"]:
            raise ApiError(
                422,
                "openspec_cli_unavailable",
                "The openspec CLI is not installed (npm install -g @fission-ai/openspec)",
                binary=self.binary,
            )
        argv = [self.cli["path"], *actions.INIT_COMMAND[1:], "--no-animation"]
        done = await self.ctx.procs.run(
            argv, self.workspace, self._env(), timeout=INIT_TIMEOUT_S, output_limit=OUTPUT_LIMIT
        )
        output = (done.stdout + done.stderr).decode("utf-8", "replace")[-OUTPUT_LIMIT:]
        if not done.ok:
            raise ApiError(
                502,
                "openspec_cli_failed",
                "openspec init failed" + (" (timed out)" if done.timed_out else ""),
                exit_code=done.returncode,
                output=output[-4000:],
            )
        view = await self.ctx.run_blocking(self._read)
        return {"initialized": view["initialized"], "output": output}
