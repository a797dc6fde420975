"""Settings, hooks and MCP servers of Codex, Gemini CLI, Qwen Code and opencode (API.md "Every agent's settings").

One service for the four, driven by the declarations in ``profiles.py``: it
reads each CLI's file in its own format (TOML through tomlkit, JSON with
comments through ``jsonc.py``), shows it as JSON, and writes back only what
changed, keeping comments, key order and every untouched key. MCP servers are
translated to and from Claude Code's shape. Trust (Codex project trust, Gemini
trusted folders, Qwen MCP approvals) is reported on every read and recorded
only when asked (``trust=True``).

Every write is staged — all the files it changes are computed first — and then
committed file by file, each rename checked against the version read; when one
fails, the files already committed are put back. ``PATCH …/mcp?agent=all`` is
one such write over every agent (Claude Code's files included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Awaitable, Mapping
from typing import Any, Callable

from wsruntime_ext.base import ApiError
from wsruntime_ext.paths import file_etag
from wsruntime_ext.settings import codex_hooks
from wsruntime_ext.settings.agent_files import AGENT_SCOPES, CLAUDE
from wsruntime_ext.settings.agent_trust import AgentTrust
from wsruntime_ext.settings.formats import json_bytes, parser_for, render
from wsruntime_ext.settings.profiles import PROFILES, AgentProfile
from wsruntime_ext.settings.schema import (
    SettingsInvalid,
    check_depth,
    check_object,
    member,
    validate_hooks,
    validate_mcp_servers,
)
from wsruntime_ext.settings.service import (
    WRITE_ATTEMPTS,
    ChangedMeanwhile,
    Conditions,
    Loaded,
    Location,
    RunBlocking,
    SettingsService,
    backup_file,
    deep_merge,
    extract,
    invalid_settings,
    load,
)
from wsruntime_ext.settings.staging import Change, commit_all, restore_all
from wsruntime_ext.temps import TempRegistry


def _no_nulls(value: Any, path: str) -> None:
    if value is None:
        raise SettingsInvalid(path, "must not be null (TOML has no null)")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nulls(item, member(path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nulls(item, f"{path}[{index}]")


class AgentSettingsService(AgentTrust):
    """The four other agents' settings in the ``project`` and ``user`` scopes, and MCP servers for all five.
    Locations in ``agent_files.py``, trust in ``agent_trust.py``, all-or-nothing writes in ``staging.py``."""

    def __init__(
        self,
        workspace: str,
        home: str,
        run_blocking: RunBlocking,
        claude: SettingsService,
        environ: Callable[[], Mapping[str, str]] | None = None,
        temps: TempRegistry | None = None,
        list_codex_hooks: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        super().__init__(workspace, home, run_blocking, claude, environ, temps)
        # Codex's hooks as `codex app-server` lists them (codex_hooks.py); raises HookListFailed.
        self.list_codex_hooks = list_codex_hooks
        self._codex_listed: tuple[tuple[str, ...], list[dict[str, Any]]] | None = None  # (files' ETags, hooks)
        self._lock = asyncio.Lock()  # this service's writes take turns (a PATCH spans many files)

    # -- reading -----------------------------------------------------------------------

    def _load(self, where: Location, fmt: str) -> Loaded:
        loaded = load(where, parser_for(fmt))
        if loaded.error is not None:
            raise loaded.error
        return loaded

    async def read(self, agent: str, scope: str, part: str) -> tuple[dict[str, Any], str]:
        """What GET answers for ``part`` of ``agent`` in ``scope`` (``effective``: merged), and its ETag."""
        profile = self.profile(agent)
        if part == "hooks" and profile.hook_events is None:
            raise _hooks_unsupported(agent)
        if scope == "effective":
            answer, etag = await self.run_blocking(self._read_effective, profile, part)
        else:
            answer, etag = await self.run_blocking(self._read_scope, profile, scope, part)
        if part == "hooks" and profile.hooks_trust is not None:
            answer["trusted"] = await self._hooks_trusted(profile, AGENT_SCOPES if scope == "effective" else (scope,))
        return answer, etag

    def _read_scope(self, profile: AgentProfile, scope: str, part: str) -> tuple[dict[str, Any], str]:
        where, fmt = self._where(profile, scope, part)
        loaded = self._load(where, fmt)
        return self._answer(profile, where, part, loaded), loaded.etag

    def _where(self, profile: AgentProfile, scope: str, part: str) -> tuple[Location, str]:
        if part == "hooks":
            return self.hooks_location(profile, scope)
        where = self.settings_location(profile, scope)
        keys = (profile.mcp_key,) if part == "mcpServers" else ()
        return dataclasses.replace(where, keys=keys), profile.format

    def _layers(self, profile: AgentProfile, scope: str, part: str) -> list[tuple[Location, str]]:
        if part == "hooks":
            return [self.hooks_location(profile, scope)]
        keys = (profile.mcp_key,) if part == "mcpServers" else ()
        layers = self.settings_layers(profile, scope)
        return [(dataclasses.replace(where, keys=keys), profile.format) for where in layers]

    def _answer(self, profile: AgentProfile, where: Location, part: str, loaded: Loaded) -> dict[str, Any]:
        value = extract(loaded.data, where.keys, where.shown)
        if part == "mcpServers":
            servers = {name: profile.from_native(s) for name, s in value.items() if isinstance(s, dict)}
            trusted = self.trusted(profile, where.scope, value if where.scope == "project" else None)
            value = servers
        elif part == "hooks" and profile.hooks_trust is not None:
            trusted = False  # asked of the CLI by the caller (_hooks_trusted)
        else:
            trusted = self.trusted(profile, where.scope)
        return {
            "agent": profile.name,
            "scope": where.scope,
            "path": where.shown,
            "exists": loaded.exists,
            part: value,
            "trusted": trusted,
        }

    def _read_effective(self, profile: AgentProfile, part: str) -> tuple[dict[str, Any], str]:
        merged: dict[str, Any] = {}
        sources, etags = [], []
        for scope in ("user", "project"):  # the project wins
            used = scope == "user" or not profile.project_trusted_only or self.trusted(profile, "project")
            if part == "mcpServers" and scope == "project" and used:
                merged = {**merged, **self._mcp_json_servers(profile)}  # Qwen: .mcp.json below its own file
            for where, fmt in self._layers(profile, scope, part):  # a later file wins
                loaded = self._load(where, fmt)
                sources.append({"scope": scope, "path": where.shown, "exists": loaded.exists, "used": used})
                etags.append(loaded.etag)
                if not used:
                    continue
                value = extract(loaded.data, where.keys, where.shown)
                if part == "mcpServers":
                    merged = {**merged, **{n: s for n, s in value.items() if isinstance(s, dict)}}  # a name: replaced
                else:
                    merged = deep_merge(merged, value)  # hooks arrays concatenate, objects merge
        if part == "mcpServers":
            merged = {name: profile.from_native(s) for name, s in merged.items()}
        digest = hashlib.sha256("|".join(etags).encode()).hexdigest()[:32]
        answer = {
            "agent": profile.name,
            "scope": "effective",
            "path": None,
            "exists": any(s["exists"] for s in sources),
            part: merged,
            "sources": sources,
            "trusted": all(self.trusted(profile, s) for s in AGENT_SCOPES),
        }
        return answer, f'W/"{digest}"'

    # -- validating --------------------------------------------------------------------

    def validate(self, profile: AgentProfile, part: str, value: Any) -> None:
        path = f"$.{part}"
        try:
            check_depth(value, path)
            if part == "hooks":
                assert profile.hook_events is not None
                validate_hooks(value, path, profile.hook_events, profile.name)
            elif part == "mcpServers":
                self.validate_servers(profile, value, path)
            else:
                settings = check_object(value, path)
                if "hooks" in settings and profile.hooks_file is None and profile.hook_events is not None:
                    validate_hooks(settings["hooks"], f"{path}.hooks", profile.hook_events, profile.name)
                if profile.mcp_key in settings:
                    self._validate_native_servers(profile, settings[profile.mcp_key], member(path, profile.mcp_key))
                for key in profile.string_keys:
                    if key in settings and not isinstance(settings[key], str):
                        raise SettingsInvalid(member(path, key), f"must be a string for {profile.name}")
            if profile.format == "toml":
                _no_nulls(value, path)
        except SettingsInvalid as exc:
            raise invalid_settings(exc.path, exc.message) from None
        except RecursionError:
            raise invalid_settings(path, "is nested too deeply") from None

    @staticmethod
    def _validate_native_servers(profile: AgentProfile, value: Any, path: str) -> None:
        """A whole-settings write's servers, in the agent's own shape: each must read back as a server the
        mcp endpoint would take (else GET …/mcp answers what no PUT …/mcp accepts, and the CLI cannot run it)."""
        servers = check_object(value, path)
        for name, native in servers.items():
            server_path = member(path, name)
            check_object(native, server_path)
            try:
                AgentSettingsService.validate_servers(profile, {name: profile.from_native(native)}, path)
            except SettingsInvalid as exc:
                detail = exc.path[len(server_path) :].lstrip(".")
                where = f"its {detail} " if detail else ""
                raise SettingsInvalid(
                    server_path, f"is not a server {profile.name} can run: {where}{exc.message}"
                ) from None

    @staticmethod
    def validate_servers(profile: AgentProfile | None, value: Any, path: str, allow_null: bool = False) -> None:
        """API-shape servers (Claude Code's, plus ``cwd`` and ``native``); ``allow_null``: a PATCH's removals."""
        servers = check_object(value, path)
        present = {name: s for name, s in servers.items() if not (allow_null and s is None)}
        validate_mcp_servers(present, path, native=profile is not None)
        for name, server in present.items():
            server_path = member(path, name)
            if "cwd" in server:
                if profile is not None and not profile.mcp_cwd:
                    raise SettingsInvalid(f"{server_path}.cwd", f"{profile.name} has no working directory for servers")
                if server.get("type", "stdio") != "stdio":
                    raise SettingsInvalid(f"{server_path}.cwd", "is for stdio servers only")
            if profile is not None and profile.format == "toml" and server.get("type") == "sse":
                raise SettingsInvalid(f"{server_path}.type", f"{profile.name} speaks streamable HTTP only: use http")

    # -- writing -----------------------------------------------------------------------

    async def write(
        self,
        agent: str,
        scope: str,
        part: str,
        value: Any,
        conditions: Conditions,
        force: bool = False,
        trust: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """Validate ``value`` and put it in place of ``part`` in ``agent``'s ``scope``; trust it if asked."""
        profile = self.profile(agent)
        if part == "hooks" and profile.hook_events is None:
            raise _hooks_unsupported(agent)
        self.validate(profile, part, value)
        trust_hooks = trust and part == "hooks" and profile.hooks_trust is not None
        if trust_hooks and self.list_codex_hooks is None:
            raise ApiError(
                422,
                "trust_unsupported",
                f"{agent} keeps its hook trust as a hash its own CLI computes, and the runtime has no {agent} "
                "CLI to ask: trust its hooks in the CLI itself, or leave out trust=true",
                agent=agent,
            )
        async with self._lock:
            answer, etag, changes = await self.run_blocking(
                self._write, profile, scope, part, value, conditions, force, trust
            )
            if trust_hooks:
                await self._trust_codex_hooks(profile, scope, codex_hooks.count_handlers(value), changes)
            if part == "hooks" and profile.hooks_trust is not None:
                answer["trusted"] = await self._hooks_trusted(profile, (scope,))
            await self.run_blocking(self.refresh_files)
            return answer, etag

    # -- Codex's hook trust (codex_hooks.py) -------------------------------------------

    def _hook_files(
        self, profile: AgentProfile, scopes: tuple[str, ...]
    ) -> tuple[list[tuple[str, str, int]], tuple[str, ...]]:
        """Each scope's hooks file and how many hooks it defines, and the ETags that the CLI's answer depends on
        (the hooks files and the user config.toml, where trust is kept). Blocking."""
        files, etags = [], []
        for scope in AGENT_SCOPES:
            where, fmt = self.hooks_location(profile, scope)
            loaded = load(where, parser_for(fmt))
            etags.append(f"{where.file}={loaded.etag}")
            if scope in scopes:
                hooks = loaded.data.get("hooks") if loaded.error is None else None
                files.append((scope, where.file, codex_hooks.count_handlers(hooks)))
        config = self._trust_files(profile)
        assert config is not None
        etags.append(f"{config.file}={load(config, parser_for('toml')).etag}")
        etags.append(f"{self.workspace}|{self.trusted(profile, 'project')}")
        return files, tuple(etags)

    async def _listed_hooks(self, etags: tuple[str, ...]) -> list[dict[str, Any]]:
        """Codex's hooks/list, asked again only when a file it depends on changed."""
        assert self.list_codex_hooks is not None
        if self._codex_listed is not None and self._codex_listed[0] == etags:
            return self._codex_listed[1]
        listed = await self.list_codex_hooks()
        self._codex_listed = (etags, listed)
        return listed

    async def _hooks_trusted(self, profile: AgentProfile, scopes: tuple[str, ...]) -> bool:
        """Whether the CLI runs every hook of ``scopes`` now (false when it cannot be asked)."""
        files, etags = await self.run_blocking(self._hook_files, profile, scopes)
        needed = [(scope, path, count) for scope, path, count in files if count]
        if not needed:  # nothing to trust; a project's hooks file is still ignored until the project is trusted
            return all([await self.run_blocking(self.trusted, profile, scope) for scope, _, _ in files])
        if self.list_codex_hooks is None:
            return False
        try:
            listed = await self._listed_hooks(etags)
        except codex_hooks.HookListFailed:
            return False
        return all(codex_hooks.all_trusted(listed, path, count) for _, path, count in needed)

    async def _trust_codex_hooks(self, profile: AgentProfile, scope: str, defined: int, changes: list[Change]) -> None:
        """Record trust for every hook of ``scope``'s hooks file the way Codex's hook review does: the CLI's
        own key and hash of each, in the user config.toml. On a failure the write that came before it (the
        hooks file, the project's trust) is put back: all or nothing."""
        assert self.list_codex_hooks is not None
        where, _ = self.hooks_location(profile, scope)
        try:
            self._codex_listed = None
            entries = codex_hooks.trust_entries(await self.list_codex_hooks(), where.file)
            if len(entries) < defined:
                raise codex_hooks.HookListFailed(
                    f"codex lists {len(entries)} of the {defined} hooks in {where.shown}"
                    + (" (is the project trusted?)" if scope == "project" else "")
                )
            await self.run_blocking(self._record_hook_trust, profile, where.file, entries)
        except BaseException as exc:
            await self.run_blocking(restore_all, changes, self.temps)
            if isinstance(exc, codex_hooks.CodexMissing):
                raise ApiError(
                    422,
                    "trust_unsupported",
                    f"{profile.name} keeps its hook trust as a hash its own CLI computes, and {exc}: trust its hooks "
                    "in the CLI itself, or leave out trust=true (nothing was written)",
                    agent=profile.name,
                ) from None
            if isinstance(exc, codex_hooks.HookListFailed):
                raise ApiError(
                    502, "trust_failed", f"{profile.name}'s hooks could not be trusted (nothing was written): {exc}"
                ) from None
            raise

    def _record_hook_trust(self, profile: AgentProfile, hooks_file: str, entries: dict[str, str]) -> None:
        real = os.path.realpath(hooks_file)
        for _attempt in range(WRITE_ATTEMPTS):
            where = self._trust_files(profile)
            assert where is not None
            loaded = self._load(where, "toml")
            new = json.loads(json.dumps(loaded.data))
            hooks = new.setdefault("hooks", {})
            state = hooks.setdefault("state", {}) if isinstance(hooks, dict) else None
            if not isinstance(state, dict):
                raise ApiError(
                    422, "settings_file_invalid", f"{where.shown}: hooks.state is not a table", path=where.shown
                )
            for key in [k for k in state if os.path.realpath(k.rsplit(":", 3)[0]) == real and k not in entries]:
                del state[key]  # a hook of this file that is gone (its position now holds another, or none)
            for key, digest in entries.items():
                entry = state.get(key)
                state[key] = {**(entry if isinstance(entry, dict) else {}), "trusted_hash": digest}
            try:
                commit_all([Change(where, loaded, render("toml", loaded, new))], Conditions(), self.temps)
            except ChangedMeanwhile:
                continue
            return
        raise ApiError(409, "settings_file_busy", "A settings file kept changing while it was written; try again")

    def _write(
        self,
        profile: AgentProfile,
        scope: str,
        part: str,
        value: Any,
        conditions: Conditions,
        force: bool,
        trust: bool,
    ) -> tuple[dict[str, Any], str, list[Change]]:
        for _attempt in range(WRITE_ATTEMPTS):
            where, fmt = self._where(profile, scope, part)
            loaded = load(where, parser_for(fmt))
            conditions.check(loaded.etag, loaded.exists, where.shown)
            backup = None
            if loaded.error is not None:
                if not force:
                    raise loaded.error
                backup = backup_file(where, loaded, self.temps)
                loaded = Loaded(loaded.exists, {}, loaded.etag, b"", loaded.mode)
            new = self._new_document(profile, where, part, value, loaded)
            changes = [Change(where, loaded, render(fmt, loaded, new))]
            if trust:
                servers = new.get(profile.mcp_key, {}) if part != "hooks" else self._project_native_servers(profile)
                change = self._stage_trust(profile, scope, servers if isinstance(servers, dict) else {})
                if change is not None:
                    changes.append(change)
            try:
                commit_all(changes, conditions, self.temps)
            except ChangedMeanwhile:
                continue
            fresh = Loaded(True, new, file_etag(changes[0].landed)) if changes[0].landed else loaded
            answer = self._answer(profile, where, part, fresh)
            if backup is not None:
                answer["backup"] = backup
            return answer, fresh.etag, changes
        raise ApiError(409, "settings_file_busy", "The settings file kept changing while it was written; try again")

    def _new_document(
        self, profile: AgentProfile, where: Location, part: str, value: dict[str, Any], loaded: Loaded
    ) -> dict[str, Any]:
        if part == "settings":
            return value
        if part == "hooks":
            return {**loaded.data, "hooks": value}
        current = extract(loaded.data, where.keys, where.shown)
        return {**loaded.data, profile.mcp_key: self._native_servers(profile, current, value)}

    @staticmethod
    def _native_servers(profile: AgentProfile, current: dict[str, Any], servers: dict[str, Any]) -> dict[str, Any]:
        """``servers`` (API shape) in the agent's format; an entry that reads back the same is kept as it is."""
        native = {}
        for name, server in servers.items():
            old = current.get(name)
            if isinstance(old, dict) and profile.from_native(old) == server:
                native[name] = old
            else:
                native[name] = profile.to_native(server)
        return native

    # -- every agent at once -----------------------------------------------------------

    async def read_all(self, scope: str) -> dict[str, Any]:
        """``GET …/mcp?agent=all``: each agent's servers (API shape) and trust in ``scope``."""
        agents: dict[str, Any] = {}
        claude, _ = await self.claude.read(scope, "mcpServers")
        # Claude Code's approval of project servers is not modelled here: true means "nothing recorded blocks it".
        agents[CLAUDE] = {"path": claude["path"], "exists": claude["exists"], "mcpServers": claude["mcpServers"]}
        agents[CLAUDE]["trusted"] = True
        for agent in PROFILES:
            answer, _ = await self.read(agent, scope, "mcpServers")
            agents[agent] = {k: answer[k] for k in ("path", "exists", "mcpServers", "trusted")}
        return {"agent": "all", "scope": scope, "agents": agents}

    async def patch_all(self, scope: str, servers: Any, trust: bool = False) -> dict[str, Any]:
        """Add, replace or (``None``) remove ``servers`` for every agent, all or nothing."""
        try:
            self.validate_servers(None, servers, "$.mcpServers", allow_null=True)
            for profile in PROFILES.values():
                present = {n: s for n, s in servers.items() if s is not None}
                self.validate_servers(profile, present, "$.mcpServers")
                if profile.format == "toml":
                    _no_nulls(present, "$.mcpServers")
        except SettingsInvalid as exc:
            raise invalid_settings(exc.path, exc.message) from None
        async with self._lock:
            await self.run_blocking(self._patch_all, scope, servers, trust)
            await self.run_blocking(self.refresh_files)
        return await self.read_all(scope)

    def _patch_all(self, scope: str, servers: dict[str, Any], trust: bool) -> None:
        for _attempt in range(WRITE_ATTEMPTS):
            changes = []
            where = self.claude.location(scope, "mcpServers")
            loaded = self._load(where, "json")
            current = extract(loaded.data, where.keys, where.shown)
            updated = {**current}
            for name, server in servers.items():
                if server is None:
                    updated.pop(name, None)
                else:
                    updated[name] = server
            if updated != current:
                changes.append(Change(where, loaded, json_bytes(_replace(loaded.data, where.keys, updated))))
            for profile in PROFILES.values():
                where, fmt = self._where(profile, scope, "mcpServers")
                loaded = self._load(where, fmt)
                native = extract(loaded.data, where.keys, where.shown)
                new_native = dict(native)
                for name, server in servers.items():
                    if server is None:
                        new_native.pop(name, None)
                    else:
                        new_native.update(self._native_servers(profile, native, {name: server}))
                if new_native != native:
                    changes.append(
                        Change(where, loaded, render(fmt, loaded, {**loaded.data, profile.mcp_key: new_native}))
                    )
                if trust:
                    change = self._stage_trust(profile, scope, new_native)
                    if change is not None:
                        changes.append(change)
            try:
                commit_all(changes, Conditions(), self.temps)
            except ChangedMeanwhile:
                continue
            return
        raise ApiError(409, "settings_file_busy", "A settings file kept changing while it was written; try again")


def _replace(document: dict[str, Any], keys: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    if not keys:
        return value
    inner = document.get(keys[0], {})
    return {**document, keys[0]: _replace(inner if isinstance(inner, dict) else {}, keys[1:], value)}


def _hooks_unsupported(agent: str) -> ApiError:
    return ApiError(
        422,
        "hooks_unsupported",
        f"{agent} has no command hooks (opencode uses JS plugins instead)",
        agent=agent,
    )
