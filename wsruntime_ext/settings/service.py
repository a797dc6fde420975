"""Where each settings scope lives, and reading, merging and writing its parts safely.

No HTTP here: the handlers parse requests and call :class:`SettingsService`.
A write re-reads the file, replaces only its part (every other key keeps its
value and its place) and lands the new version with :class:`AtomicWriter`;
just before the rename it checks that the file is still the version it read,
so a concurrent writer (the ``claude`` CLI rewrites ``~/.claude.json`` often)
is never clobbered: with ``If-Match`` that is a 412, without it the write is
redone on top of the new version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import os
import re
import stat
from collections.abc import Awaitable, Mapping
from typing import Any, Callable, Protocol, TypeVar

from wsruntime_ext.base import ApiError
from wsruntime_ext.paths import AtomicWriter, atomic_write, file_etag, nearest_existing_directory, resolve_in_workspace
from wsruntime_ext.settings.schema import (
    SettingsInvalid,
    check_depth,
    validate_hooks,
    validate_mcp_servers,
    validate_settings,
)
from wsruntime_ext.temps import TempRegistry

SCOPES = ("project", "local", "user")
READ_SCOPES = (*SCOPES, "effective")
PARTS = ("settings", "hooks", "mcpServers")
MAX_FILE_BYTES = 64 << 20  # ~/.claude.json grows with history; anything bigger is not a settings file
WRITE_ATTEMPTS = 8  # re-done writes when another writer keeps changing the file (no If-Match given)
ABSENT_ETAG = '"absent"'  # the ETag of a file that does not exist (If-Match with it: "still absent")
_ETAG_TOKEN = re.compile(r'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')

T = TypeVar("T")


class RunBlocking(Protocol):
    """``Context.run_blocking``: run a blocking call in the thread pool."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


@dataclasses.dataclass(frozen=True)
class Location:
    """One scope's file for one part: where it is, how it is shown, and where the part sits inside it."""

    scope: str
    file: str  # absolute, symlinks resolved (a dotfile manager's link is written through, not replaced)
    shown: str  # workspace-relative, or ~/… for files in the home directory
    keys: tuple[str, ...]  # the part's place in the file's object; () is the whole object
    new_mode: int | None  # the mode of a file created here (None: the umask's default)


@dataclasses.dataclass(frozen=True)
class Conditions:
    """``If-Match`` / ``If-None-Match`` of a PUT, as entity-tag lists (None: absent)."""

    if_match: list[str] | None = None
    if_none_match: list[str] | None = None

    def check(self, etag: str, exists: bool, shown: str) -> None:
        if self.if_match is not None and not (("*" in self.if_match and exists) or etag in self.if_match):
            raise ApiError(
                412,
                "precondition_failed",
                "If-Match failed: the settings file changed since you read it",
                path=shown,
                current_etag=etag,
            )
        if self.if_none_match is not None and exists and ("*" in self.if_none_match or etag in self.if_none_match):
            raise ApiError(412, "precondition_failed", "If-None-Match failed: the file exists", path=shown)


def parse_etags(header: str | None) -> list[str] | None:
    """A conditional header as a list of entity tags (``["*"]`` for a star); None when absent or empty."""
    if header is None or not header.strip():
        return None
    tags = [m.group(1) for m in _ETAG_TOKEN.finditer(header)]
    if not tags:
        raise ApiError(400, "invalid_header", "Conditional header is not a list of entity tags", header=header)
    return tags


@dataclasses.dataclass
class Loaded:
    """A settings file as read: its object (``{}`` when absent), ETag, raw bytes and mode."""

    exists: bool
    data: dict[str, Any]
    etag: str
    raw: bytes = b""
    mode: int | None = None
    error: ApiError | None = None  # set when the file is not a JSON object (GET: 422; PUT: only with force)


class SettingsService:
    """Claude Code's settings, hooks and MCP servers in the three scopes (API.md "Claude Code settings")."""

    def __init__(
        self,
        workspace: str,
        home: str,
        run_blocking: RunBlocking,
        environ: Mapping[str, str] | None = None,
        temps: TempRegistry | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.workspace = workspace
        self.temps = temps  # where every temporary file is recorded (temps.py)
        self.home = os.path.abspath(home)
        self.run_blocking = run_blocking
        # CLAUDE_CONFIG_DIR moves both ~/.claude/ and ~/.claude.json (checked with the 2.1.197 CLI).
        config_dir = environ.get("CLAUDE_CONFIG_DIR", "")
        self.user_dir = os.path.abspath(config_dir) if config_dir else os.path.join(self.home, ".claude")
        self.claude_json = os.path.join(config_dir or self.home, ".claude.json")
        self._locks: dict[str, asyncio.Lock] = {}

    # -- where things are ---------------------------------------------------------------

    def location(self, scope: str, part: str) -> Location:
        """The file (and the place in it) of ``part`` in ``scope``; 403 if a workspace file leads outside."""
        if part == "mcpServers":
            if scope == "project":
                return self._workspace_location(scope, ".mcp.json", ("mcpServers",))
            keys: tuple[str, ...] = ("mcpServers",) if scope == "user" else ("projects", self.workspace, "mcpServers")
            return Location(scope, os.path.realpath(self.claude_json), self._shown(self.claude_json), keys, 0o600)
        keys = ("hooks",) if part == "hooks" else ()
        if scope == "user":
            target = os.path.join(self.user_dir, "settings.json")
            return Location(scope, os.path.realpath(target), self._shown(target), keys, None)
        name = ".claude/settings.json" if scope == "project" else ".claude/settings.local.json"
        return self._workspace_location(scope, name, keys)

    def _workspace_location(self, scope: str, rel: str, keys: tuple[str, ...]) -> Location:
        resolved = resolve_in_workspace(self.workspace, rel)
        return Location(scope, resolved.real, rel, keys, None)

    def _shown(self, path: str) -> str:
        rel = os.path.relpath(path, self.home)
        return path if rel.startswith("..") else "~/" + rel.replace(os.sep, "/")

    # -- reading -----------------------------------------------------------------------

    async def read(self, scope: str, part: str) -> tuple[dict[str, Any], str]:
        """What GET answers for ``part`` in ``scope`` (``effective``: the merged view), and its ETag."""
        if scope == "effective":
            return await self.run_blocking(self._read_effective, part)
        return await self.run_blocking(self._read_scope, scope, part)

    def _read_scope(self, scope: str, part: str) -> tuple[dict[str, Any], str]:
        where = self.location(scope, part)
        loaded = load(where)
        if loaded.error is not None:
            raise loaded.error
        return self._answer(where, part, loaded), loaded.etag

    def _answer(self, where: Location, part: str, loaded: Loaded, **extra: Any) -> dict[str, Any]:
        value = extract(loaded.data, where.keys, where.shown)
        return {"scope": where.scope, "path": where.shown, "exists": loaded.exists, part: value, **extra}

    def _read_effective(self, part: str) -> tuple[dict[str, Any], str]:
        merged: dict[str, Any] = {}
        sources = []
        etags = []
        for scope in ("user", "project", "local"):  # later scopes win
            where = self.location(scope, part)
            loaded = load(where)
            if loaded.error is not None:
                raise loaded.error
            value = extract(loaded.data, where.keys, where.shown)
            # MCP servers: a name in a later scope replaces the whole server; settings merge deeply.
            merged = {**merged, **value} if part == "mcpServers" else deep_merge(merged, value)
            sources.append({"scope": scope, "path": where.shown, "exists": loaded.exists})
            etags.append(loaded.etag)
        digest = hashlib.sha256("|".join(etags).encode()).hexdigest()[:32]
        answer = {
            "scope": "effective",
            "path": None,
            "exists": any(s["exists"] for s in sources),
            part: merged,
            "sources": sources,
        }
        return answer, f'W/"{digest}"'

    # -- writing -----------------------------------------------------------------------

    async def write(
        self, scope: str, part: str, value: Any, conditions: Conditions, force: bool = False
    ) -> tuple[dict[str, Any], str]:
        """Validate ``value``, put it in place of ``part`` in ``scope``'s file, keep the rest; the answer and ETag.

        Writes of this runtime to one file take turns (the local and user MCP servers share
        ``~/.claude.json``), so only writers outside it make a write start over.
        """
        target = self.location(scope, part).file  # a few lstat calls, like the jail of every files request
        async with self._locks.setdefault(target, asyncio.Lock()):  # five files at most: kept
            return await self.run_blocking(self._write, scope, part, value, conditions, force)

    def _write(
        self, scope: str, part: str, value: Any, conditions: Conditions, force: bool
    ) -> tuple[dict[str, Any], str]:
        validate(part, value)
        where = self.location(scope, part)
        for _attempt in range(WRITE_ATTEMPTS):
            loaded = load(where)
            conditions.check(loaded.etag, loaded.exists, where.shown)
            backup = None
            if loaded.error is not None:
                if not force:
                    raise loaded.error
                backup = backup_file(where, loaded, self.temps)
            # Unparsable: {}; an object with a non-object on the part's way: kept, that one key replaced.
            document = replace_part(loaded.data, where.keys, value, where.shown)
            data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
            try:
                landed = land(where, data, loaded, conditions, self.temps)
            except ChangedMeanwhile:
                continue  # redone on top of the new version (the next check answers 412 if it must)
            extra = {"backup": backup} if backup is not None else {}
            fresh = Loaded(True, document, file_etag(landed))
            return self._answer(where, part, fresh, **extra), fresh.etag
        raise ApiError(
            409,
            "settings_file_busy",
            "The settings file kept changing while it was written; try again",
            path=where.shown,
        )


def land(
    where: Location, data: bytes, loaded: Loaded, conditions: Conditions, temps: TempRegistry | None
) -> os.stat_result:
    """Replace ``where``'s file with ``data`` atomically, only if it is still the version ``loaded`` (blocking).

    A change meanwhile answers 412 when the client's condition fails, else raises ``ChangedMeanwhile`` (the
    write starts over on top of the new version). The temporary file is recorded in ``temps`` (temps.py).
    """

    def unchanged(old: os.stat_result | None) -> None:
        current = file_etag(old) if old is not None else ABSENT_ETAG
        if current != loaded.etag:
            conditions.check(current, old is not None, where.shown)
            raise ChangedMeanwhile()

    mode = where.new_mode if not loaded.exists else None
    temp_dir = nearest_existing_directory(os.path.dirname(where.file))
    try:
        with AtomicWriter(where.file, mode=mode, temp_dir=temp_dir, temps=temps) as writer:
            writer.write(data)
            return writer.commit(check=unchanged)
    except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise unusable(where, exc) from None


def backup_file(where: Location, loaded: Loaded, temps: TempRegistry | None) -> str:
    """Keep the unreadable file beside itself before ``force`` replaces it; returns where (as shown)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    atomic_write(f"{where.file}.bak-{stamp}", loaded.raw, mode=loaded.mode, temps=temps)
    return f"{where.shown}.bak-{stamp}"


class ChangedMeanwhile(Exception):
    """The file changed between our read and our rename."""


# -- pure helpers ---------------------------------------------------------------------


def invalid_settings(path: str, message: str, **details: Any) -> ApiError:
    """API.md's one answer to a bad settings body: 400 ``invalid_settings``, ``details.path`` its JSON path."""
    return ApiError(400, "invalid_settings", f"{path} {message}", path=path, **details)


def part_of_body(body: Any, part: str, scope: str) -> Any:
    """The part a PUT body carries (``{"hooks": {...}}``, as GET returns it), the body around it checked.

    ``scope`` may come back too (a GET answer sent back); to another scope's URL it would overwrite another
    file, so it must name the scope written.
    """
    if not isinstance(body, dict):
        raise invalid_settings("$", f"must be a JSON object {{{json.dumps(part)}: {{...}}}}, as GET returns it")
    if part not in body:
        raise invalid_settings(f"$.{part}", "is required (the body is what GET returns)")
    claimed = body.get("scope")
    if claimed is not None and claimed != scope:
        shown = json.dumps(claimed, ensure_ascii=False)[:80]
        raise invalid_settings("$.scope", f"is {shown} but the request writes scope {scope!r} (?scope=)", scope=scope)
    return body[part]


def validate(part: str, value: Any) -> None:
    """400 ``invalid_settings`` with the JSON path of the first problem, in the body (``$.settings.env.A``)."""
    path = f"$.{part}"
    try:
        check_depth(value, path)
        if part == "settings":
            validate_settings(value, path)
        elif part == "hooks":
            validate_hooks(value, path)
        else:
            validate_mcp_servers(value, path)
    except SettingsInvalid as exc:
        raise invalid_settings(exc.path, exc.message) from None
    except RecursionError:
        raise invalid_settings(path, "is nested too deeply") from None


def parse_json(text: str) -> Any:
    """Strict JSON (Claude Code's files); other formats pass their own parser to :func:`load`."""
    return json.loads(text)


def load(where: Location, parser: Callable[[str], Any] = parse_json) -> Loaded:
    """Read and parse a settings file; a missing one is ``{}``. Unparsable content sets ``error`` (422).

    ``parser`` raises an error with ``msg``, ``lineno`` and ``colno`` (as ``json.JSONDecodeError`` does) on a
    text that is not its format."""
    try:
        fd = os.open(where.file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return Loaded(False, {}, ABSENT_ETAG)
    except OSError as exc:
        raise unusable(where, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise unusable(where, IsADirectoryError(21, "not a regular file"))
        if st.st_size > MAX_FILE_BYTES:
            raise ApiError(
                422, "settings_file_too_large", f"{where.shown} is larger than {MAX_FILE_BYTES} bytes", path=where.shown
            )
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise unusable(where, exc) from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    loaded = Loaded(True, {}, file_etag(st), raw, stat.S_IMODE(st.st_mode))
    if not raw.strip():
        return loaded  # an empty file reads as {} (the CLI treats it the same)
    try:
        data = parser(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        loaded.error = invalid_file(where, f"not UTF-8 ({exc.reason} at byte {exc.start})")
        return loaded
    except ValueError as exc:  # JSONDecodeError, JsoncError, tomlkit's ParseError
        msg = getattr(exc, "msg", None) or str(exc)
        line, column = getattr(exc, "lineno", getattr(exc, "line", 1)), getattr(exc, "colno", getattr(exc, "col", 1))
        loaded.error = invalid_file(where, msg, line=line, column=column)
        return loaded
    except RecursionError:
        loaded.error = invalid_file(where, "nested too deeply")
        return loaded
    if not isinstance(data, dict):
        loaded.error = invalid_file(where, "the top level is not a JSON object", line=1, column=1)
        return loaded
    loaded.data = data
    try:
        extract(data, where.keys, where.shown)
    except ApiError as exc:
        loaded.error = exc
    return loaded


def invalid_file(where: Location, problem: str, **position: Any) -> ApiError:
    at = f" (line {position['line']}, column {position['column']})" if "line" in position else ""
    return ApiError(
        422,
        "settings_file_invalid",
        f"{where.shown} is not a valid settings file: {problem}{at}; PUT with ?force=true replaces it "
        "(keeping a backup)",
        path=where.shown,
        error=problem,
        **position,
    )


def unusable(where: Location, exc: OSError) -> ApiError:
    return ApiError(
        409, "settings_file_unusable", f"{where.shown} cannot be used: {exc.strerror or exc}", path=where.shown
    )


def extract(data: dict[str, Any], keys: tuple[str, ...], shown: str) -> dict[str, Any]:
    """The part at ``keys`` (``{}`` when missing); an object expected on the way that is not one → 422."""
    current: Any = data
    walked = "$"
    for key in keys:
        current = current.get(key, {})
        walked = f"{walked}[{json.dumps(key)}]" if "/" in key else f"{walked}.{key}"
        if not isinstance(current, dict):
            raise ApiError(
                422,
                "settings_file_invalid",
                f"{shown}: {walked} is not a JSON object; PUT with ?force=true replaces the file (keeping a backup)",
                path=shown,
                error=f"{walked} is not an object",
            )
    return current  # type: ignore[no-any-return]


def replace_part(document: dict[str, Any], keys: tuple[str, ...], value: dict[str, Any], shown: str) -> dict[str, Any]:
    """``document`` with the part at ``keys`` replaced; every other key keeps its value and its place."""
    if not keys:
        return value
    head, rest = keys[0], keys[1:]
    inner = document.get(head, {})
    if not isinstance(inner, dict):
        inner = {}
    updated = dict(document)
    updated[head] = replace_part(inner, rest, value, shown) if rest else value
    return updated


def deep_merge(base: Any, over: Any) -> Any:
    """Objects merge key by key, arrays concatenate (without repeating an equal item), scalars: ``over`` wins.

    That is how the CLI combines its scopes: hooks and permission rules of every scope apply.
    """
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(over, list):
        result = list(base)
        for item in over:
            if item not in result:
                result.append(item)
        return result
    return over
