"""The OpenSpec state of one workspace, read from disk without Node (OPENSPEC.md §2–§5).

Pure functions from a folder to data, no HTTP. :func:`read_workspace` computes in
one pass what ``openspec list --json``, ``list --specs --json``, ``status --all
--json`` and ``instructions apply --json`` (its ``state`` and ``progress``) report,
in the CLI's own JSON shapes, so tests can compare them field by field with the
real CLI. The root is the workspace itself: unlike the CLI, the reader never
looks above it for an ``openspec/`` folder.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import os
import re
from typing import Any

from wsruntime_ext.openspec.schema import BUILTIN, Schema, SchemaCatalog, SchemaError
from wsruntime_ext.openspec.yamlish import YamlError, parse

# JavaScript's \s (ECMAScript WhiteSpace + LineTerminator): Python's differs (\x1c-\x1f, U+FEFF).
_WS = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
TASK_LINE = re.compile(
    rf"^[{_WS}]*(?:[-*+]|[0-9]{{1,9}}[.)])[{_WS}]*\[(?:[{_WS}]*([^\]{_WS}]?)[{_WS}]*\](?![(\[])|[{_WS}]+\])"
    rf"[{_WS}]*([^\n\r\u2028\u2029]*)"
)
_HEADER = re.compile(r"^(#{1,6})[" + _WS + r"]+([^\n\r\u2028\u2029]+)$")
_FENCE_OPEN = re.compile(rf"^[{_WS}]*(`{{3,}}|~{{3,}})")
_FENCE_CLOSE = re.compile(rf"^[{_WS}]*(`{{3,}}|~{{3,}})[{_WS}]*$")
_ARCHIVED = re.compile(r"^(\d{4}-\d{2}-\d{2})-(.+)$")
_GLOB_CHARS = set("*?[{")

NESTED_MESSAGE = (
    '"{name}" is not a change: it is a folder wrapping {paths}. A change must be a directory directly under '
    "openspec/changes/, so those nested directories are invisible to OpenSpec while the folder around them is "
    "reported as a change. Nested paths are supported under openspec/specs/ only. Rename each nested change "
    'to a flat name (for example "{example}").'
)
NO_ROOT = {
    "severity": "error",
    "code": "no_openspec_root",
    "message": "No OpenSpec root found from the current directory.",
    "target": "openspec.root",
    "fix": "Run openspec init to create a root here.",
}

_ORDER = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz"


def locale_key(s: str) -> tuple[list[int], list[bool]]:
    """ICU ``localeCompare`` order for ASCII (OPENSPEC.md §4.9)."""
    return (
        [_ORDER.find(c.lower()) if c.lower() in _ORDER else 1000 + ord(c) for c in s],
        [c.isupper() for c in s],
    )


def iso_ms(mtime_ns: int) -> str:
    """``Date.toISOString()`` of an mtime: UTC, milliseconds truncated."""
    ms = mtime_ns // 1_000_000
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def read_text(path: str) -> str | None:
    """A file as the CLI reads it (UTF-8, no newline translation), None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            return f.read()
    except OSError:
        return None


# -- files and globs -------------------------------------------------------------------


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except OSError:
        return False


def _dir_entries(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError:
        return []


def resolve_outputs(change_dir: str, generates: str) -> list[str]:
    """Existing files an artifact's ``generates`` names (fast-glob semantics: dot entries skipped,
    ``**/`` zero or more directories, symlinks followed), realpath'd and plain sorted."""
    if not (_GLOB_CHARS & set(generates)):
        path = os.path.join(change_dir, generates)
        return [os.path.realpath(path)] if os.path.isfile(path) else []
    found: set[str] = set()
    _glob(change_dir, [s for s in generates.split("/") if s], found, set())
    return sorted(found)


def _glob(folder: str, segments: list[str], found: set[str], seen: set[str]) -> None:
    if not segments:
        return
    real = os.path.realpath(folder)
    key = f"{real}\0{len(segments)}"
    if key in seen:
        return
    seen.add(key)
    seg, rest = segments[0], segments[1:]
    if seg == "**":
        _glob(folder, rest, found, seen)
        for entry in _dir_entries(folder):
            if not entry.name.startswith(".") and _is_dir(entry.path):
                _glob(entry.path, segments, found, seen)
        return
    for entry in _dir_entries(folder):
        if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name, seg):
            continue
        if not rest:
            if os.path.isfile(entry.path):
                found.add(os.path.realpath(entry.path))
        elif _is_dir(entry.path):
            _glob(entry.path, rest, found, seen)


def last_modified_ns(change_dir: str) -> int:
    """Newest mtime of any file below the change (recursive, dot files too), else the dir's own (§4.4)."""
    newest: int | None = None
    stack = [change_dir]
    while stack:
        folder = stack.pop()
        for entry in _dir_entries(folder):
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                mtime = entry.stat(follow_symlinks=True).st_mtime_ns
            except OSError:
                continue
            if newest is None or mtime > newest:
                newest = mtime
    if newest is None:
        try:
            newest = os.stat(change_dir).st_mtime_ns
        except OSError:
            newest = 0
    return newest


def _has_file_under(folder: str) -> bool:
    """Any non-dot file anywhere below ``folder`` (dot entries skipped)."""
    for entry in _dir_entries(folder):
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if _has_file_under(entry.path):
                    return True
            elif entry.is_file():
                return True
        except OSError:
            continue
    return False


# -- tasks and markdown --------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    done: bool
    description: str


def parse_tasks(text: str) -> list[Task]:
    """Every checkbox line (§4.2), in document order."""
    tasks = []
    for line in text.split("\n"):
        match = TASK_LINE.match(line)
        if match:
            tasks.append(Task(match.group(1) in ("x", "X"), match.group(2).strip(_WS_CHARS)))
    return tasks


_WS_CHARS = (
    "\t\n\x0b\x0c\r \xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


@dataclasses.dataclass
class _Section:
    level: int
    title: str
    lines: list[str]
    children: list[_Section]


def requirement_count(text: str) -> int:
    """Direct children of the ``Requirements`` section; 0 when Purpose or Requirements is missing (§3.2, §4.7)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    root = _Section(0, "", [], [])
    stack = [root]
    fence: tuple[str, int] | None = None
    for line in lines:
        if fence is None:
            opened = _FENCE_OPEN.match(line)
            if opened:
                fence = (opened.group(1)[0], len(opened.group(1)))
                for s in stack[1:]:
                    s.lines.append(line)
                continue
        else:
            closed = _FENCE_CLOSE.match(line)
            if closed and closed.group(1)[0] == fence[0] and len(closed.group(1)) >= fence[1]:
                fence = None
            for s in stack[1:]:
                s.lines.append(line)
            continue
        header = _HEADER.match(line)
        if header:
            level = len(header.group(1))
            while len(stack) > 1 and stack[-1].level >= level:
                stack.pop()
            for s in stack[1:]:
                s.lines.append(line)
            section = _Section(level, header.group(2).strip(_WS_CHARS), [], [])
            stack[-1].children.append(section)
            stack.append(section)
        else:
            for s in stack[1:]:
                s.lines.append(line)
    purpose = _find(root, "purpose")
    requirements = _find(root, "requirements")
    if purpose is None or not "\n".join(purpose.lines).strip(_WS_CHARS) or requirements is None:
        return 0
    return len(requirements.children)


def _find(section: _Section, title: str) -> _Section | None:
    for child in section.children:
        if child.title.lower() == title:
            return child
        found = _find(child, title)
        if found is not None:
            return found
    return None


# -- the workspace ---------------------------------------------------------------------------


def find_root(workspace: str) -> str | None:
    """The workspace if its ``openspec/`` qualifies as a root (§2), else None (never an ancestor)."""
    folder = os.path.join(workspace, "openspec")
    if not _is_dir(folder):
        return None
    if _is_dir(os.path.join(folder, "specs")) or _is_dir(os.path.join(folder, "changes")):
        return workspace
    if any(os.path.isfile(os.path.join(folder, n)) for n in ("config.yaml", "config.yml")):
        return workspace
    return None


_YAML_CACHE: dict[str, tuple[tuple[int, int, int], Any]] = {}
_YAML_CACHE_SIZE = 4096


def read_yaml_file(path: str) -> tuple[bool, Any]:
    """(exists, value); an unparseable file is (True, YamlError). Parsed once per file version."""
    try:
        st = os.stat(path)
    except OSError:
        return False, None
    if not os.path.isfile(path):
        return False, None
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _YAML_CACHE.get(path)
    if hit is not None and hit[0] == key:
        return True, hit[1]
    text = read_text(path)
    value: Any
    if text is None:
        value = YamlError("unreadable")
    else:
        try:
            value = parse(text)
        except YamlError as exc:
            value = exc
    if len(_YAML_CACHE) >= _YAML_CACHE_SIZE:
        _YAML_CACHE.clear()
    _YAML_CACHE[path] = (key, value)
    return True, value


def read_config(root: str) -> dict[str, Any]:
    """``openspec/config.yaml`` (or ``.yml``), each field validated on its own; unparseable → {}."""
    for name in ("config.yaml", "config.yml"):
        exists, doc = read_yaml_file(os.path.join(root, "openspec", name))
        if exists:
            return doc if isinstance(doc, dict) else {}
    return {}


def default_schema(config: dict[str, Any]) -> str:
    schema = config.get("schema")
    return schema if isinstance(schema, str) and schema.strip() else BUILTIN


class ChangeError(Exception):
    """A change that ``status`` cannot load; the message is the CLI's."""


def change_schema_name(change_dir: str, config: dict[str, Any]) -> str:
    """``.openspec.yaml`` ``schema`` › config ``schema`` › ``spec-driven``; ChangeError on bad metadata."""
    meta = read_metadata(change_dir)
    if meta is not None:
        return str(meta["schema"])
    return default_schema(config)


def read_metadata(change_dir: str) -> dict[str, Any] | None:
    """The validated ``.openspec.yaml`` (None when absent); ChangeError when it is invalid."""
    path = os.path.join(change_dir, ".openspec.yaml")
    exists, doc = read_yaml_file(path)
    if not exists:
        return None
    if isinstance(doc, YamlError):
        raise ChangeError(f"Failed to parse {path}: {doc}")
    if not isinstance(doc, dict):
        raise ChangeError(f"Invalid metadata in {path}: expected a mapping")
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema:
        raise ChangeError(f"Invalid metadata in {path}: schema: Required")
    created = doc.get("created")
    if created is not None and (not isinstance(created, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", created)):
        raise ChangeError(f"Invalid metadata in {path}: created must be YYYY-MM-DD")
    for flag in ("skip_specs", "retire_capabilities"):
        if flag in doc and doc[flag] is not None and not isinstance(doc[flag], bool):
            raise ChangeError(f"Invalid metadata in {path}: {flag} must be a boolean")
    return doc


def task_files(change_dir: str, schema: Schema | None) -> list[str]:
    """The tracked task files (§4.2), falling back to ``tasks.md``."""
    files: list[str] = []
    if schema is not None:
        tracked = schema.tracked_artifact()
        if tracked is not None:
            files = resolve_outputs(change_dir, tracked.generates)
    return files or [os.path.join(change_dir, "tasks.md")]


def count_tasks(change_dir: str, schema: Schema | None) -> tuple[int, int]:
    """(completed, total) over the tracked task files."""
    completed = total = 0
    for path in task_files(change_dir, schema):
        text = read_text(path)
        if text is None:
            continue
        for task in parse_tasks(text):
            total += 1
            completed += task.done
    return completed, total


def _looks_like_change(folder: str, root: str, catalog: SchemaCatalog, config: dict[str, Any]) -> bool:
    if any(os.path.isfile(os.path.join(folder, m)) for m in (".openspec.yaml", "proposal.md", "tasks.md", "design.md")):
        return True
    if _has_file_under(os.path.join(folder, "specs")):
        return True
    try:
        schema = catalog.resolve(root, change_schema_name(folder, config))
    except (ChangeError, SchemaError):
        return False
    return any(resolve_outputs(folder, a.generates) for a in schema.artifacts)


def nested_changes(changes_dir: str, name: str, root: str, catalog: SchemaCatalog, config: dict[str, Any]) -> list[str]:
    """The nested changes a namespace folder wraps (§4.8); [] for an ordinary change."""
    if name == "archive" or name.startswith("."):
        return []
    folder = os.path.join(changes_dir, name)
    if _looks_like_change(folder, root, catalog, config):
        return []
    if any(not e.name.startswith(".") and not _is_dir(e.path) for e in _dir_entries(folder)):
        return []
    found: list[str] = []

    def collect(current: str, prefix: str, depth: int) -> None:
        if depth > 3:
            return
        for entry in _dir_entries(current):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            child_id = f"{prefix}/{entry.name}"
            if _looks_like_change(entry.path, root, catalog, config):
                found.append(child_id)
            else:
                collect(entry.path, child_id, depth + 1)

    collect(folder, name, 1)
    return sorted(found)


def nested_message(name: str, nested: list[str]) -> str:
    paths = ", ".join(f"openspec/changes/{n}/" for n in nested)
    return NESTED_MESSAGE.format(name=name, paths=paths, example=nested[0].replace("/", "-"))


# -- status of one change ---------------------------------------------------------------------


def change_status(root: str, name: str, config: dict[str, Any], catalog: SchemaCatalog) -> dict[str, Any]:
    """``openspec status --change <name> --json`` without ``root``, plus the apply state under ``_apply``.

    Raises ChangeError for what the CLI reports as ``change_error``."""
    changes_dir = os.path.join(root, "openspec", "changes")
    change_dir = os.path.join(changes_dir, name)
    meta = read_metadata(change_dir)
    schema_name = str(meta["schema"]) if meta is not None else default_schema(config)
    try:
        schema = catalog.resolve(root, schema_name)
    except SchemaError as exc:
        raise ChangeError(str(exc)) from None
    skip_specs = bool(meta is not None and meta.get("skip_specs") is True)
    outputs = {a.id: resolve_outputs(change_dir, a.generates) for a in schema.artifacts}
    completed: set[str] = set()
    skipped: set[str] = set()
    for a in schema.artifacts:
        if outputs[a.id]:
            completed.add(a.id)
        elif skip_specs and a.generates.startswith("specs/"):
            skipped.add(a.id)
            completed.add(a.id)
    order = schema.build_order()
    artifacts = []
    for a in order:
        entry: dict[str, Any] = {"id": a.id, "outputPath": a.generates}
        if a.id in skipped:
            entry["status"] = "skipped"
        elif a.id in completed:
            entry["status"] = "done"
        elif all(r in completed for r in a.requires):
            entry["status"] = "ready"
        else:
            entry["status"] = "blocked"
        entry["requires"] = list(a.requires)
        if entry["status"] == "blocked":
            entry["missingDeps"] = [r for r in a.requires if r not in completed]
        artifacts.append(entry)
    complete = all(a.id in completed for a in schema.artifacts)
    ready = next((e["id"] for e in artifacts if e["status"] == "ready"), None)
    if ready is not None:
        next_steps = [f'Run openspec instructions {ready} --change "{name}" --json before writing that artifact.']
    elif complete:
        next_steps = [
            "All planning artifacts are complete. Run openspec instructions apply --change "
            f'"{name}" --json to inspect implementation progress.'
        ]
    else:
        next_steps = []
    status: dict[str, Any] = {
        "changeName": name,
        "schemaName": schema.name,
        "planningHome": {
            "kind": "repo",
            "root": root,
            "changesDir": changes_dir,
            "defaultSchema": default_schema(config),
        },
        "changeRoot": change_dir,
        "artifactPaths": {
            a.id: {
                "outputPath": a.generates,
                "resolvedOutputPath": os.path.join(change_dir, a.generates),
                "existingOutputPaths": outputs[a.id],
            }
            for a in schema.artifacts
        },
        "isPlanningComplete": complete,
        "isComplete": complete,
        "applyRequires": schema.applies_to(),
        "nextSteps": next_steps,
        "actionContext": {
            "mode": "repo-local",
            "sourceOfTruth": "repo",
            "planningArtifacts": [a.id for a in schema.artifacts],
            "linkedContext": [],
            "allowedEditRoots": [root],
            "requiresAffectedAreaSelection": False,
            "constraints": ["Repo-local change artifacts and implementation edits are scoped to this project."],
        },
        "artifacts": artifacts,
    }
    status["_apply"] = apply_state(change_dir, schema, completed, skipped)
    return status


def apply_state(change_dir: str, schema: Schema, completed: set[str], skipped: set[str]) -> dict[str, Any]:
    """``instructions apply``'s ``state``, ``progress`` and ``missingArtifacts`` (§4.6)."""
    missing = [a for a in schema.applies_to() if a not in completed and a not in skipped]
    tasks: list[Task] = []  # every checkbox line: the progress counts them all
    unreadable = False
    files: list[str] = []
    if schema.tracks is not None:
        files = resolve_outputs(change_dir, schema.tracks)
        for path in files:
            text = read_text(path)
            if text is None:
                unreadable = True
                continue
            tasks.extend(parse_tasks(text))
    listed = [t for t in tasks if t.description]  # the tasks an agent can work on
    total = len(tasks)
    done = sum(t.done for t in tasks)
    if missing:
        state = "blocked"
    elif schema.tracks is not None and not files:
        state = "blocked"
    elif schema.tracks is not None and unreadable and not listed:
        state = "blocked"
    elif schema.tracks is not None and not listed:
        state = "blocked"
    elif schema.tracks is not None and not unreadable and total > 0 and done == total:
        state = "all_done"
    else:
        state = "ready"
    result: dict[str, Any] = {
        "state": state,
        "progress": {"total": total, "complete": done, "remaining": total - done},
    }
    if missing:
        result["missingArtifacts"] = missing
    return result


# -- the whole workspace ------------------------------------------------------------------------


def read_workspace(workspace: str, catalog: SchemaCatalog | None = None) -> dict[str, Any]:
    """Everything the endpoint reports, in the CLI's shapes: ``list``, ``specs``, ``status``, ``apply``,
    plus ``archived``, ``schema``, ``schemas`` and whether the root qualifies."""
    catalog = catalog or SchemaCatalog()
    root = find_root(workspace)
    legacy = os.path.isfile(os.path.join(workspace, "openspec", "project.md"))
    state: dict[str, Any] = {"workspace": workspace, "initialized": root is not None, "legacy": legacy}
    if root is None:
        root_obj = {"path": workspace, "source": "implicit"}
        list_doc: dict[str, Any] = {"changes": [], "root": None, "status": [NO_ROOT]}
        if legacy:  # `list` accepts a cwd with only openspec/project.md as an implicit root
            list_doc = {"changes": [], "root": root_obj}
        state.update(
            list=list_doc,
            specs={"specs": [], "root": None, "status": [NO_ROOT]},
            status={"changes": [], "message": "No active changes.", "root": root_obj},
            apply={},
            archived=[],
            schema=BUILTIN,
            schemas=[BUILTIN],
            config={},
        )
        return state
    root_obj = {"path": root, "source": "nearest"}
    config = read_config(root)
    changes_dir = os.path.join(root, "openspec", "changes")
    entries = [e for e in _dir_entries(changes_dir) if e.name != "archive" and e.is_dir(follow_symlinks=False)]

    listed: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    mtimes: dict[str, int] = {}
    for entry in entries:
        name = entry.name
        change_dir = entry.path
        try:
            schema: Schema | None = catalog.resolve(root, change_schema_name(change_dir, config))
        except (ChangeError, SchemaError):
            schema = None
        completed, total = count_tasks(change_dir, schema)
        mtime = last_modified_ns(change_dir)
        mtimes[name] = mtime
        item: dict[str, Any] = {
            "name": name,
            "completedTasks": completed,
            "totalTasks": total,
            "lastModified": iso_ms(mtime),
            "status": "no-tasks" if total == 0 else "complete" if completed == total else "in-progress",
        }
        nested = nested_changes(changes_dir, name, root, catalog, config)
        if nested:
            item["nested"] = nested
            warnings.append(
                {
                    "code": "nested_change_directory",
                    "name": name,
                    "nested": nested,
                    "message": nested_message(name, nested),
                }
            )
        listed.append(item)
    listed.sort(key=lambda c: -(mtimes[c["name"]] // 1_000_000))  # stable: ties keep byte order
    list_doc = {"changes": listed}
    if warnings:
        list_doc["warnings"] = warnings
    list_doc["root"] = root_obj

    statuses: list[dict[str, Any]] = []
    apply: dict[str, Any] = {}
    for item in sorted((c for c in listed if not c["name"].startswith(".")), key=lambda c: locale_key(c["name"])):
        name = item["name"]
        if "nested" in item:
            message = nested_message(name, item["nested"])
            statuses.append({"changeName": name, "status": [_change_error(message)]})
            continue
        try:
            status = change_status(root, name, config, catalog)
        except ChangeError as exc:
            statuses.append({"changeName": name, "status": [_change_error(str(exc))]})
            continue
        apply[name] = status.pop("_apply")
        statuses.append(status)
    status_doc: dict[str, Any] = {"changes": statuses}
    if not statuses:
        status_doc["message"] = "No active changes."
    status_doc["root"] = root_obj

    state.update(
        list=list_doc,
        specs={"specs": read_specs(root), "root": root_obj},
        status=status_doc,
        apply=apply,
        archived=read_archived(changes_dir),
        schema=default_schema(config),
        schemas=catalog.names(root),
        config=config,
    )
    return state


def _change_error(message: str) -> dict[str, Any]:
    return {"severity": "error", "code": "change_error", "message": message}


def read_specs(root: str) -> list[dict[str, Any]]:
    """``list --specs``: every ``specs/<id>/spec.md`` (§3.2) with its requirement count, locale-sorted."""
    specs_dir = os.path.join(root, "openspec", "specs")
    found: list[dict[str, Any]] = []

    def walk(folder: str, prefix: str) -> None:
        for entry in _dir_entries(folder):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, f"{prefix}/{entry.name}" if prefix else entry.name)
                elif entry.name == "spec.md" and prefix and entry.is_file():
                    text = read_text(entry.path)
                    count = requirement_count(text) if text is not None else 0
                    found.append({"id": prefix, "requirementCount": count})
            except OSError:
                continue

    walk(specs_dir, "")
    found.sort(key=lambda s: locale_key(s["id"]))
    return found


def read_archived(changes_dir: str) -> list[dict[str, Any]]:
    """Archived changes: ``changes/archive/<YYYY-MM-DD>-<change>/``, newest name first."""
    archived = []
    for entry in _dir_entries(os.path.join(changes_dir, "archive")):
        if entry.name.startswith(".") or not _is_dir(entry.path):
            continue
        match = _ARCHIVED.match(entry.name)
        archived.append(
            {
                "name": entry.name,
                "change": match.group(2) if match else entry.name,
                "date": match.group(1) if match else None,
            }
        )
    archived.sort(key=lambda a: str(a["name"]), reverse=True)
    return archived
