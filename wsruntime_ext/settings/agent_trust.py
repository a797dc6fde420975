"""Trust, the way each CLI keeps it: Codex's trusted projects (its user config.toml), Gemini's trusted
folders, Qwen's MCP approvals (a hash of each project server). Reported on every read; recorded only when
a write asks for it (``trust=true``), as one more staged change of that write."""

from __future__ import annotations

import json
import os
from typing import Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.settings import jsonc
from wsruntime_ext.settings.agent_files import AgentFiles
from wsruntime_ext.settings.formats import parser_for, qwen_approval_hash, render
from wsruntime_ext.settings.profiles import AgentProfile, normalize_mcp_json
from wsruntime_ext.settings.service import Location, load
from wsruntime_ext.settings.staging import Change

TRUSTED_FOLDER_RULES = ("TRUST_FOLDER", "TRUST_PARENT", "DO_NOT_TRUST")


class AgentTrust(AgentFiles):
    """Whether a scope's contents are used by the CLI now, and the change that makes them so."""

    def _trust_files(self, profile: AgentProfile) -> Location | None:
        env = self._env()
        if profile.trust == "codex-project":
            return self._home_location("user", os.path.join(profile.config_dir(env, self.home), "config.toml"))
        if profile.trust == "gemini-folder":
            path = env.get("GEMINI_CLI_TRUSTED_FOLDERS_PATH") or os.path.join(
                profile.config_dir(env, self.home), "trustedFolders.json"
            )
            return self._home_location("user", path, (), 0o600)
        if profile.trust == "qwen-approval":
            path = env.get("QWEN_CODE_MCP_APPROVALS_PATH") or os.path.join(
                profile.config_dir(env, self.home), "mcpApprovals.json"
            )
            return self._home_location("user", path, (), 0o600)
        return None

    def _needs_trust(self, profile: AgentProfile, scope: str) -> bool:
        if profile.trust in ("codex-project", "qwen-approval"):
            return scope == "project"
        return profile.trust == "gemini-folder"  # Gemini suppresses even user-level servers in an untrusted folder

    def trusted(self, profile: AgentProfile, scope: str, project_servers: dict[str, Any] | None = None) -> bool:
        """Whether the CLI uses ``scope``'s contents now, as far as trust goes (blocking)."""
        if not self._needs_trust(profile, scope):
            return True
        where = self._trust_files(profile)
        assert where is not None
        loaded = load(where, parser_for("toml" if profile.trust == "codex-project" else "jsonc"))
        data = loaded.data if loaded.error is None else {}
        if profile.trust == "codex-project":
            entry = data.get("projects", {}).get(self.workspace) if isinstance(data.get("projects"), dict) else None
            return isinstance(entry, dict) and entry.get("trust_level") == "trusted"
        if profile.trust == "gemini-folder":
            return self._gemini_trusted(profile, data)
        # Qwen: every project server (.mcp.json's too) approved for exactly its current entry.
        project_servers = self._project_native_servers(profile, project_servers)
        approvals = data.get(self.workspace, {})
        approvals = approvals if isinstance(approvals, dict) else {}
        for name, entry in project_servers.items():
            record = approvals.get(name)
            if not (
                isinstance(record, dict)
                and record.get("status") == "approved"
                and isinstance(entry, dict)
                and record.get("hash") == qwen_approval_hash(entry)
            ):
                return False
        return True

    def _gemini_trusted(self, profile: AgentProfile, folders: dict[str, Any]) -> bool:
        env = self._env()
        if env.get("GEMINI_CLI_TRUST_WORKSPACE") in ("true", "false"):
            return env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"
        user = load(self.settings_location(profile, "user"), jsonc.parse)
        security = user.data.get("security") if user.error is None else None
        folder_trust = security.get("folderTrust") if isinstance(security, dict) else None
        if isinstance(folder_trust, dict) and folder_trust.get("enabled") is False:
            return True
        best, rule = -1, "DO_NOT_TRUST"
        for path, value in folders.items():
            if not isinstance(path, str) or value not in TRUSTED_FOLDER_RULES:
                continue
            base = os.path.dirname(path.rstrip("/")) if value == "TRUST_PARENT" else path.rstrip("/") or "/"
            if (self.workspace == base or self.workspace.startswith(base.rstrip("/") + "/")) and len(base) > best:
                best, rule = len(base), value
        return best >= 0 and rule != "DO_NOT_TRUST"

    def _project_native_servers(self, profile: AgentProfile, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """The project's servers as the CLI assembles them (Qwen: ``.mcp.json`` < its project settings);
        ``own``: the project settings' servers, when they are about to be written."""
        if own is None:
            loaded = load(self.settings_location(profile, "project"), parser_for(profile.format))
            servers = loaded.data.get(profile.mcp_key) if loaded.error is None else None
            own = servers if isinstance(servers, dict) else {}
        return {**self._mcp_json_servers(profile), **own}

    def _mcp_json_servers(self, profile: AgentProfile) -> dict[str, Any]:
        if not profile.reads_mcp_json:
            return {}
        loaded = load(self.claude.location("project", "mcpServers"))
        servers = loaded.data.get("mcpServers") if loaded.error is None else None
        if not isinstance(servers, dict):
            return {}
        return {name: normalize_mcp_json(s) for name, s in servers.items() if isinstance(s, dict)}

    def _stage_trust(self, profile: AgentProfile, scope: str, project_servers: dict[str, Any]) -> Change | None:
        """The change that records trust for ``scope`` the way the CLI does, or None when nothing is needed."""
        if not self._needs_trust(profile, scope):
            return None
        where = self._trust_files(profile)
        assert where is not None
        fmt = "toml" if profile.trust == "codex-project" else "json"
        loaded = load(where, parser_for("toml" if fmt == "toml" else "jsonc"))
        if loaded.error is not None:
            raise loaded.error
        new = json.loads(json.dumps(loaded.data))
        if profile.trust == "codex-project":
            projects = new.setdefault("projects", {})
            if not isinstance(projects, dict):
                raise ApiError(
                    422, "settings_file_invalid", f"{where.shown}: projects is not a table", path=where.shown
                )
            entry = projects.setdefault(self.workspace, {})
            if not isinstance(entry, dict):
                projects[self.workspace] = entry = {}
            entry["trust_level"] = "trusted"
        elif profile.trust == "gemini-folder":
            if self.trusted(profile, scope):
                return None
            new[self.workspace] = "TRUST_FOLDER"
        else:
            records = new.get(self.workspace)
            records = dict(records) if isinstance(records, dict) else {}
            for name, entry in self._project_native_servers(profile, project_servers).items():
                if isinstance(entry, dict):
                    records[name] = {"hash": qwen_approval_hash(entry), "status": "approved"}
            new[self.workspace] = records
        if new == loaded.data and loaded.exists:
            return None
        return Change(where, loaded, render(fmt, loaded, new))
