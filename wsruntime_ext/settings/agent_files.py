"""Where the four other agents keep their settings and hooks, per scope (API.md "Every agent's settings").

The files side of ``agent_settings.py``: each CLI's candidates in the project and user scopes (as its
profile in ``profiles.py`` declares them, under its own config directory), the one that wins, the layers
the CLI merges, and the list ``/health`` and ``GET /api/v1/agents`` show.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Callable

from wsruntime_ext.base import ApiError
from wsruntime_ext.paths import resolve_in_workspace
from wsruntime_ext.settings.profiles import PROFILES, AgentProfile
from wsruntime_ext.settings.service import Location, RunBlocking, SettingsService
from wsruntime_ext.temps import TempRegistry

CLAUDE = "claude-code"
AGENTS = (CLAUDE, *PROFILES)
AGENT_SCOPES = ("project", "user")


class AgentFiles:
    """The settings and hooks files of Codex, Gemini CLI, Qwen Code and opencode (and Claude Code's, listed)."""

    def __init__(
        self,
        workspace: str,
        home: str,
        run_blocking: RunBlocking,
        claude: SettingsService,
        environ: Callable[[], Mapping[str, str]] | None = None,
        temps: TempRegistry | None = None,
    ) -> None:
        self.workspace = workspace
        self.home = os.path.abspath(home)
        self.run_blocking = run_blocking
        self.claude = claude
        self.environ = environ or (lambda: os.environ)
        self.temps = temps  # where every temporary file is recorded (temps.py)
        self.files_known: dict[str, list[dict[str, Any]]] = {}  # agent → its settings files (for /health)

    # -- where things are --------------------------------------------------------------

    @staticmethod
    def profile(agent: str) -> AgentProfile:
        profile = PROFILES.get(agent)
        if profile is None:
            raise ApiError(400, "unknown_agent", f"Unknown agent {agent[:80]!r}", known=list(AGENTS))
        return profile

    def _env(self) -> Mapping[str, str]:
        return self.environ()

    def _shown(self, path: str) -> str:
        rel = os.path.relpath(path, self.home)
        return path if rel.startswith("..") else "~/" + rel.replace(os.sep, "/")

    def _home_location(self, scope: str, path: str, keys: tuple[str, ...] = (), mode: int | None = None) -> Location:
        return Location(scope, os.path.realpath(path), self._shown(path), keys, mode)

    def _workspace_location(self, scope: str, rel: str, keys: tuple[str, ...] = ()) -> Location:
        return Location(scope, resolve_in_workspace(self.workspace, rel).real, rel, keys, None)

    def _candidates(self, profile: AgentProfile, scope: str) -> list[Location]:
        names = profile.files[scope]
        if scope == "project":
            return [self._workspace_location(scope, rel) for rel in names]
        base = profile.config_dir(self._env(), self.home)
        return [self._home_location(scope, os.path.join(base, name)) for name in names]

    def settings_location(self, profile: AgentProfile, scope: str) -> Location:
        """The agent's settings file in ``scope``: the first candidate that exists, else the one a new file
        gets (``new_file``, else the last)."""
        candidates = self._candidates(profile, scope)
        new = profile.new_file.get(scope)
        index = profile.files[scope].index(new) if new is not None else -1
        return next((where for where in candidates if os.path.exists(where.file)), candidates[index])

    def settings_layers(self, profile: AgentProfile, scope: str) -> list[Location]:
        """Every settings file of ``scope`` the CLI reads, the lowest first (only the written one if none exists)."""
        found = [where for where in self._candidates(profile, scope) if os.path.exists(where.file)]
        return found[::-1] or [self.settings_location(profile, scope)]

    def hooks_location(self, profile: AgentProfile, scope: str) -> tuple[Location, str]:
        """Where the hooks are, and that file's format (Codex: ``hooks.json``; others: their settings)."""
        if profile.hooks_file is None:
            where = self.settings_location(profile, scope)
            return dataclasses.replace(where, keys=("hooks",)), profile.format
        name = profile.hooks_file[scope]
        if scope == "project":
            return self._workspace_location(scope, name, ("hooks",)), "json"
        base = profile.config_dir(self._env(), self.home)
        return self._home_location(scope, os.path.join(base, name), ("hooks",)), "json"

    def settings_files(self, agent: str) -> list[dict[str, Any]]:
        """The files this agent's settings live in, per scope, and whether they exist (blocking)."""
        if agent == CLAUDE:
            found = []
            for scope in ("project", "local", "user"):
                for part in ("settings", "mcpServers"):
                    where = self.claude.location(scope, part)
                    found.append({"scope": scope, "path": where.shown, "exists": os.path.isfile(where.file)})
            return found
        profile = self.profile(agent)
        found = []
        for scope in AGENT_SCOPES:
            wheres = self.settings_layers(profile, scope)[::-1]
            if profile.hooks_file is not None:
                wheres.append(self.hooks_location(profile, scope)[0])
            for where in wheres:
                found.append({"scope": scope, "path": where.shown, "exists": os.path.isfile(where.file)})
        return found

    def refresh_files(self) -> dict[str, list[dict[str, Any]]]:
        """Re-check every agent's settings files (blocking); what /health shows until the next refresh."""
        known = {}
        for agent in AGENTS:
            try:
                known[agent] = self.settings_files(agent)
            except ApiError:  # a workspace file that leads outside: not listed
                known[agent] = []
        self.files_known = known
        return known
