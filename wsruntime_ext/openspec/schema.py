"""Workflow schemas (OPENSPEC.md §3.5): the built-in ``spec-driven``, project-local ``openspec/schemas/<name>/``,
and the artifact graph's build order (§4.5).

User-level schemas (``$XDG_DATA_HOME/openspec/schemas``) are deliberately not read: the server reports
the workspace, and what one user's home holds is no part of it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

from wsruntime_ext.openspec.yamlish import YamlError, parse

BUILTIN = "spec-driven"


@dataclasses.dataclass(frozen=True)
class Artifact:
    id: str
    generates: str
    requires: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Schema:
    """A resolved workflow schema: artifacts in declaration order, the build order, the apply rule."""

    name: str
    artifacts: tuple[Artifact, ...]
    apply_requires: tuple[str, ...] | None  # None: every artifact
    tracks: str | None  # apply.tracks (None: no tracking declared)
    source: str  # "package" or "project"
    description: str = ""

    @property
    def by_id(self) -> dict[str, Artifact]:
        return {a.id: a for a in self.artifacts}

    def build_order(self) -> list[Artifact]:
        """Kahn's algorithm, ties broken by declaration order."""
        remaining = list(self.artifacts)
        placed: set[str] = set()
        order: list[Artifact] = []
        while remaining:
            for artifact in remaining:
                if all(r in placed for r in artifact.requires):
                    order.append(artifact)
                    placed.add(artifact.id)
                    remaining.remove(artifact)
                    break
            else:  # a cycle: validation refuses these, so this is only a guard
                order.extend(remaining)
                break
        return order

    def applies_to(self) -> list[str]:
        return list(self.apply_requires) if self.apply_requires is not None else [a.id for a in self.artifacts]

    def tracked_artifact(self) -> Artifact | None:
        """The artifact whose ``generates`` is ``apply.tracks`` (or the one called ``tasks``), §4.2."""
        if self.tracks is not None:
            return next((a for a in self.artifacts if a.generates == self.tracks), None)
        return next((a for a in self.artifacts if a.id == "tasks"), None)


SPEC_DRIVEN = Schema(
    name=BUILTIN,
    artifacts=(
        Artifact("proposal", "proposal.md", ()),
        Artifact("specs", "specs/**/*.md", ("proposal",)),
        Artifact("design", "design.md", ("proposal",)),
        Artifact("tasks", "tasks.md", ("specs", "design")),
    ),
    apply_requires=("tasks",),
    tracks="tasks.md",
    source="package",
    description="Default OpenSpec workflow - proposal → specs → design → tasks",
)


class SchemaError(Exception):
    """A schema that cannot be resolved or is invalid; the message is what the CLI reports."""


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _validate(doc: Any, source: str) -> Schema:
    if not isinstance(doc, dict):
        raise SchemaError("schema.yaml must be a mapping")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError("schema.yaml needs a name")
    version = doc.get("version")
    if type(version) is not int or version < 1:
        raise SchemaError("schema.yaml needs a positive integer version")
    raw = doc.get("artifacts")
    if not isinstance(raw, list) or not 1 <= len(raw) <= 1000:
        raise SchemaError("schema.yaml needs 1 to 1000 artifacts")
    artifacts: list[Artifact] = []
    for item in raw:
        if not isinstance(item, dict):
            raise SchemaError("every artifact must be a mapping")
        aid, generates, requires = item.get("id"), item.get("generates"), item.get("requires", [])
        if not isinstance(aid, str) or not aid or not isinstance(generates, str) or not generates:
            raise SchemaError("every artifact needs an id and generates")
        if not isinstance(item.get("description", ""), str) or not isinstance(item.get("template", ""), str):
            raise SchemaError(f"artifact {aid}: description and template must be text")
        if generates.startswith("/") or ".." in generates.split("/"):
            raise SchemaError(f"artifact {aid}: generates must be a relative path inside the change")
        if requires is None:
            requires = []
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise SchemaError(f"artifact {aid}: requires must be a list of ids")
        artifacts.append(Artifact(aid, generates, tuple(requires)))
    ids = [a.id for a in artifacts]
    if len(set(ids)) != len(ids):
        raise SchemaError("artifact ids must be unique")
    for a in artifacts:
        for r in a.requires:
            if r not in ids:
                raise SchemaError(f"artifact {a.id} requires unknown artifact {r}")
    apply = doc.get("apply")
    apply_requires: tuple[str, ...] | None = None
    tracks: str | None = None
    if apply is not None:
        if not isinstance(apply, dict):
            raise SchemaError("apply must be a mapping")
        req = apply.get("requires")
        if req is not None:
            if not isinstance(req, list) or not all(isinstance(r, str) and r in ids for r in req):
                raise SchemaError("apply.requires must name artifacts")
            apply_requires = tuple(req)
        tr = apply.get("tracks")
        if tr is not None and not isinstance(tr, str):
            raise SchemaError("apply.tracks must be a path")
        tracks = tr
    schema = Schema(name, tuple(artifacts), apply_requires, tracks, source, str(doc.get("description") or ""))
    if len(schema.build_order()) != len(artifacts) or _has_cycle(schema):
        raise SchemaError("the artifact graph has a cycle")
    return schema


def _has_cycle(schema: Schema) -> bool:
    placed: set[str] = set()
    for artifact in schema.build_order():
        if not all(r in placed for r in artifact.requires):
            return True
        placed.add(artifact.id)
    return False


class SchemaCatalog:
    """Project schemas of one workspace, parsed once per file version (thread-safe)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int], Schema | SchemaError]] = {}
        self._lock = threading.Lock()

    def _project(self, root: str, name: str) -> Schema | SchemaError | None:
        path = os.path.join(root, "openspec", "schemas", name, "schema.yaml")
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not os.path.isfile(path):
            return None
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        result: Schema | SchemaError
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                result = _validate(parse(f.read()), "project")
        except (OSError, YamlError) as exc:
            result = SchemaError(f"Failed to parse schema '{name}': {exc}")
        except SchemaError as exc:
            result = exc
        with self._lock:
            self._cache[path] = (key, result)
        return result

    def names(self, root: str) -> list[str]:
        """Every available schema name (valid project schemas and the built-in), plain sorted."""
        names = {BUILTIN}
        folder = os.path.join(root, "openspec", "schemas")
        try:
            entries = os.listdir(folder)
        except OSError:
            entries = []
        for entry in entries:
            if _valid_name(entry) and isinstance(self._project(root, entry), Schema):
                names.add(entry)
        return sorted(names)

    def resolve(self, root: str, name: str) -> Schema:
        """The schema called ``name``: project first, then the built-in; SchemaError otherwise."""
        if _valid_name(name):
            found = self._project(root, name)
            if isinstance(found, Schema):
                return found
            if isinstance(found, SchemaError):
                raise found
            if name == BUILTIN:
                return SPEC_DRIVEN
        raise SchemaError(f"Unknown schema '{name}'. Available: {', '.join(self.names(root))}")
