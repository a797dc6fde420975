"""Build ``dist/wsruntime.pyz``: our code, every runtime dependency and their licences in one file.

Standard library only, so that an air-gapped build machine needs nothing but
Python and a copied wheelhouse::

    python zipapp/build.py --fetch                      # download the locked wheels, then build
    python zipapp/build.py --wheelhouse DIR             # build offline from a copied wheelhouse
    python zipapp/build.py --lock                       # re-pin the wheels after pyproject.toml changed

``zipapp/requirements.lock`` pins every wheel by sha256 in pip's own format
(``pip download --require-hashes`` checks them during ``--fetch``; the build
checks them again). It must name exactly pyproject.toml's ``dependencies``, at
versions those admit, and be closed under the wheels' own ``Requires-Dist``;
otherwise the build refuses. A package with native code needs one wheel for
each platform in :data:`PLATFORMS` (manylinux/musllinux × x86_64/aarch64; abi3
only, so one file serves CPython 3.9–3.13), a pure-Python one a single
``py3-none-any`` wheel. A missing platform refuses the build.

The output is byte-for-byte reproducible from the same inputs: sorted entries,
no directory entries, fixed permissions, one timestamp (``SOURCE_DATE_EPOCH``,
clamped to 1980, the zip format's first year; 1980-01-01 by default) and
deflate level 9 (another zlib may compress differently: compare the
``build_id``, a hash of the uncompressed contents, across build machines).

Layout of the pyz (the bootstrap, ``wsruntime_pyz.py``, reads it)::

    __main__.py  wsruntime_pyz.py  manifest.json   the version gate, the bootstrap, what is inside
    wsruntime_ext/ tornado/ psutil/ ...            pure-Python files, importable straight from the zip
    _native/<platform>/psutil/_psutil_linux.abi3.so, _native/<platform>/tornado/speedups.abi3.so
    LICENSES/<project>-<version>/...               every bundled project's licence files, README.txt indexes them
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "wsruntime_ext"
LOCK = os.path.join("zipapp", "requirements.lock")
DEFAULT_WHEELHOUSE = os.path.join("zipapp", "wheelhouse")
DEFAULT_OUT = os.path.join("dist", "wsruntime.pyz")
NEWEST_PYTHON = (3, 13)  # every wheel must admit each minor from requires-python's floor up to this one
SHEBANG = b"#!/usr/bin/env python3\n"
EPOCH_1980 = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can carry

# Our platform tag → (pip download --platform, the wheel platform tags that serve it).
PLATFORMS: dict[str, tuple[str, re.Pattern[str]]] = {
    "manylinux_x86_64": ("manylinux2014_x86_64", re.compile(r"^manylinux(1|2010|2014|_\d+_\d+)_x86_64$")),
    "manylinux_aarch64": ("manylinux2014_aarch64", re.compile(r"^manylinux(2014|_\d+_\d+)_aarch64$")),
    "musllinux_x86_64": ("musllinux_1_2_x86_64", re.compile(r"^musllinux_1_[0-2]_x86_64$")),
    "musllinux_aarch64": ("musllinux_1_2_aarch64", re.compile(r"^musllinux_1_[0-2]_aarch64$")),
}
PURE = "any"
_WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)
_NATIVE_SUFFIXES = (".so", ".pyd", ".dylib")
_LICENCE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)


class BuildError(Exception):
    """Why the build refuses; printed without a traceback, exit status 1."""


# -- names, versions and specifiers (PEP 503, PEP 440: the subset wheels and pins use) ----


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_VERSION = re.compile(
    r"^v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|rc|alpha|beta|c|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:(?:-(?P<post_implicit>\d+))|(?:[-_.]?(?:post|rev|r)[-_.]?(?P<post>\d*)))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d*))?$",
    re.IGNORECASE,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key that orders versions the way PEP 440 does (local versions are not supported)."""
    match = _VERSION.match(version.strip())
    if match is None:
        raise BuildError(f"not a version pip would accept: {version!r}")
    release = [int(part) for part in match.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre_tag, dev = match.group("pre"), match.group("dev")
    post = match.group("post") if match.group("post") is not None else match.group("post_implicit")
    if pre_tag is not None:
        pre: tuple[float, int] = (_PRE_RANK[pre_tag.lower()], int(match.group("pre_n") or 0))
    elif dev is not None and post is None:
        pre = (-1, 0)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (float("inf"), 0)
    return (
        int(match.group("epoch") or 0),
        tuple(release),
        pre,
        int(post or 0) if post is not None else -1,
        int(dev or 0) if dev is not None else float("inf"),
    )


def _release(version: str) -> list[int]:
    match = _VERSION.match(version.strip())
    if match is None:
        raise BuildError(f"not a version: {version!r}")
    return [int(part) for part in match.group("release").split(".")]


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a comma-separated specifier such as ``>=6.5,<6.6`` or ``==7.*``."""
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = re.match(r"^(~=|===|==|!=|<=|>=|<|>)\s*(\S+)$", clause)
        if match is None:
            raise BuildError(f"cannot read the version specifier {clause!r}")
        op, wanted = match.groups()
        if op in ("==", "!=") and wanted.endswith(".*"):
            prefix = _release(wanted[:-2])
            equal = _release(version)[: len(prefix)] + [0] * max(0, len(prefix) - len(_release(version))) == prefix
            ok = equal if op == "==" else not equal
        elif op == "===":
            ok = version == wanted
        elif op == "~=":
            prefix = _release(wanted)[:-1]
            ok = version_key(version) >= version_key(wanted) and _release(version)[: len(prefix)] == prefix
        else:
            have, want = version_key(version), version_key(wanted)
            ok = {
                "==": have == want,
                "!=": have != want,
                "<=": have <= want,
                ">=": have >= want,
                "<": have < want,
                ">": have > want,
            }[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Requirement:
    """A PEP 508 requirement reduced to what the lock check needs."""

    name: str  # normalized
    specifier: str
    marker: str

    @classmethod
    def parse(cls, text: str) -> Requirement:
        requirement, _, marker = text.partition(";")
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*\(?([^()]*)\)?\s*$", requirement)
        if match is None or "@" in requirement:
            raise BuildError(f"cannot read the requirement {text!r} (direct URLs cannot be bundled)")
        return cls(normalize(match.group(1)), match.group(3).replace(" ", ""), marker.strip())

    @property
    def only_for_extra(self) -> bool:
        return bool(re.search(r"\bextra\s*==", self.marker))


# -- pyproject.toml -----------------------------------------------------------------------


def read_toml(path: str) -> dict[str, Any]:
    """pyproject.toml through tomllib (3.11+), else the small reader below (the builder runs on 3.9)."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    if sys.version_info >= (3, 11):
        import tomllib

        parsed: dict[str, Any] = tomllib.loads(text)
        return parsed
    return read_toml_subset(text)


def read_toml_subset(text: str) -> dict[str, Any]:
    """Tables, and keys whose values are strings or arrays of strings: all the builder reads."""
    document: dict[str, Any] = {}
    table = document
    lines = iter(text.splitlines())
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = re.match(r"^\[([A-Za-z0-9_.\-\"]+)\]\s*(#.*)?$", stripped)
        if header:
            table = document
            for part in header.group(1).split("."):
                table = table.setdefault(part.strip('"'), {})
            continue
        key, sep, value = stripped.partition("=")
        if not sep or stripped.startswith("[["):
            continue
        value = value.strip()
        if value.startswith("["):
            while _strip_toml_comments(value).count("[") > _strip_toml_comments(value).count("]"):
                value += "\n" + next(lines)
        try:
            table[key.strip().strip('"')] = ast.literal_eval(_strip_toml_comments(value).strip())
        except (ValueError, SyntaxError):
            continue  # numbers, booleans, inline tables: nothing the builder reads
    return document


def _strip_toml_comments(value: str) -> str:
    """Drop ``# comments`` outside strings (arrays may carry them on every line)."""
    out, quote = [], ""
    for line in value.split("\n"):
        kept = []
        for char in line:
            if quote:
                quote = "" if char == quote else quote
            elif char in "\"'":
                quote = char
            elif char == "#":
                break
            kept.append(char)
        out.append("".join(kept))
    return "\n".join(out)


@dataclass
class Project:
    """What the build needs from the checkout."""

    root: str
    version: str
    dependencies: list[Requirement]
    python_floor: tuple[int, int]

    @classmethod
    def read(cls, root: str) -> Project:
        pyproject = read_toml(os.path.join(root, "pyproject.toml"))
        project = pyproject.get("project", {})
        floor = re.match(r"^\s*>=\s*(\d+)\.(\d+)", project.get("requires-python", ""))
        if floor is None:
            raise BuildError("pyproject.toml's requires-python must start with >=X.Y")
        with open(os.path.join(root, PACKAGE, "__init__.py"), encoding="utf-8") as f:
            version = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", f.read(), re.MULTILINE)
        if version is None:
            raise BuildError(f"no __version__ in {PACKAGE}/__init__.py")
        return cls(
            root,
            version.group(1),
            [Requirement.parse(d) for d in project.get("dependencies", [])],
            (int(floor.group(1)), int(floor.group(2))),
        )

    def pythons(self) -> list[str]:
        return [f"3.{minor}" for minor in range(self.python_floor[1], NEWEST_PYTHON[1] + 1)]


# -- the lock -----------------------------------------------------------------------------


@dataclass
class Pin:
    name: str  # as written
    version: str
    hashes: set[str]

    @property
    def key(self) -> str:
        return normalize(self.name)


def read_lock(path: str) -> list[Pin]:
    """``name==version --hash=sha256:…`` entries in pip's requirements format (comments allowed)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BuildError(f"{path} is missing: run python zipapp/build.py --lock") from None
    pins: list[Pin] = []
    for logical in re.sub(r"\\\n", " ", text).splitlines():
        tokens = logical.split("#", 1)[0].split()
        if not tokens:
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$", tokens[0])
        hashes = {t[len("--hash=sha256:") :] for t in tokens[1:] if t.startswith("--hash=sha256:")}
        if match is None or len(hashes) != len(tokens) - 1 or not hashes:
            raise BuildError(f"{path}: every entry must be name==version with --hash=sha256:… options: {logical!r}")
        pins.append(Pin(match.group(1), match.group(2), hashes))
    if len({p.key for p in pins}) != len(pins):
        raise BuildError(f"{path} names a package twice")
    return pins


def check_lock_matches(project: Project, pins: Sequence[Pin]) -> None:
    """Every dependency of pyproject.toml is locked, at a version it admits.

    The other direction (nothing locked that no dependency needs) is checked by
    :func:`check_wheels`, which reads the wheels' own requirements.
    """
    wanted = {r.name: r for r in project.dependencies}
    locked = {p.key: p for p in pins}
    problems = [f"{n} is in pyproject.toml's dependencies but not in {LOCK}" for n in sorted(set(wanted) - set(locked))]
    for name in sorted(set(wanted) & set(locked)):
        if not satisfies(locked[name].version, wanted[name].specifier):
            problems.append(
                f"{name} is locked at {locked[name].version}, which pyproject.toml's {wanted[name].specifier} excludes"
            )
    if problems:
        raise BuildError(disagreement(problems))


def disagreement(problems: Sequence[str]) -> str:
    return (
        "pyproject.toml and the lock disagree:\n  "
        + "\n  ".join(problems)
        + f"\nRun python zipapp/build.py --lock (network needed) and commit the new {LOCK}."
    )


def write_lock(path: str, wheels: Mapping[str, list[Wheel]]) -> None:
    """The lock, sorted, with each wheel's file name and platform above its entry."""
    out = [
        "# The wheels bundled into dist/wsruntime.pyz, pinned by sha256 (pip's requirements format).",
        "# Generated by `python zipapp/build.py --lock` from pyproject.toml's dependencies; do not edit by hand.",
        "# `python zipapp/build.py --fetch` downloads them into zipapp/wheelhouse/ and checks every hash.",
    ]
    for key in sorted(wheels):
        group = sorted(wheels[key], key=lambda w: w.platform)
        out.append("")
        out += [f"#   {w.platform:<18} {w.filename}" for w in group]
        out.append(f"{group[0].name}=={group[0].version} \\")
        hashes = sorted({w.sha256 for w in group})
        out += [f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "") for i, h in enumerate(hashes)]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    os.replace(path + ".tmp", path)


# -- wheels -------------------------------------------------------------------------------


@dataclass
class Wheel:
    path: str
    name: str  # as the METADATA spells it
    version: str
    platform: str  # one of PLATFORMS, or PURE
    sha256: str
    metadata: email.message.Message = field(repr=False)

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)

    @property
    def key(self) -> str:
        return normalize(self.name)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_platform(filename: str, floor: tuple[int, int]) -> str | None:
    """Which of our platforms a wheel serves (PURE for py3-none-any); None for others; refuses misfits."""
    match = _WHEEL_NAME.match(filename)
    if match is None:
        raise BuildError(f"not a wheel file name: {filename}")
    pythons, abi, plats = match.group("py").split("."), match.group("abi"), match.group("plat").split(".")
    if abi == "none" and plats == ["any"]:
        if not any(p in ("py3", "py2.py3") or p.startswith("py3") for p in pythons):
            raise BuildError(f"{filename} is not for Python 3")
        return PURE
    ours = [name for name, (_, pattern) in PLATFORMS.items() if any(pattern.match(p) for p in plats)]
    if not ours:
        return None
    if abi != "abi3":
        raise BuildError(
            f"{filename} is built for one CPython version ({abi}); one pyz serves CPython "
            f"{floor[0]}.{floor[1]}–{NEWEST_PYTHON[0]}.{NEWEST_PYTHON[1]}, so only abi3 or pure wheels fit"
        )
    minors = [int(m.group(1)) for m in (re.match(r"^cp3(\d+)$", p) for p in pythons) if m]
    if not minors or (3, min(minors)) > floor:
        needs = f"CPython ≥ 3.{min(minors)}" if minors else f"an interpreter tagged {'.'.join(pythons)}"
        raise BuildError(f"{filename} needs {needs}, but pyproject.toml supports {floor[0]}.{floor[1]}")
    return ours[0]


def read_wheel_metadata(path: str) -> email.message.Message:
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n)]
        if len(names) != 1:
            raise BuildError(f"{path} has no (or several) .dist-info/METADATA")
        return email.parser.BytesParser().parsebytes(zf.read(names[0]), headersonly=True)


def find_locked_wheels(wheelhouse: str, pins: Sequence[Pin], floor: tuple[int, int]) -> dict[str, list[Wheel]]:
    """The wheelhouse's files that match the lock, per package; refuses when anything is missing or altered."""
    if not os.path.isdir(wheelhouse):
        raise BuildError(f"no wheelhouse at {wheelhouse}: run with --fetch, or pass --wheelhouse DIR")
    files = sorted(f for f in os.listdir(wheelhouse) if f.endswith(".whl"))
    found: dict[str, list[Wheel]] = {}
    problems: list[str] = []
    for pin in pins:
        prefix = f"{pin.key.replace('-', '_')}-{pin.version}-"
        wheels: dict[str, Wheel] = {}
        for filename in files:
            if not filename.lower().startswith(prefix.lower()):
                continue
            plat = wheel_platform(filename, floor)
            if plat is None:
                continue  # a platform we do not bundle (Windows, macOS, i686 ...)
            path = os.path.join(wheelhouse, filename)
            digest = sha256_file(path)
            if digest not in pin.hashes:
                problems.append(f"{filename}: sha256 {digest} is not in the lock (tampered with, or a stale download)")
                continue
            wheels[plat] = Wheel(path, pin.name, pin.version, plat, digest, read_wheel_metadata(path))
        if PURE in wheels:
            found[pin.key] = [wheels[PURE]]
            continue
        missing = [p for p in PLATFORMS if p not in wheels]
        if missing:
            problems.append(
                f"{pin.name} {pin.version}: no locked wheel for {', '.join(missing)} in {wheelhouse}"
                + (" (the lock has no pure-Python wheel either)" if not wheels else "")
            )
            continue
        found[pin.key] = [wheels[p] for p in PLATFORMS]
    if problems:
        raise BuildError(
            "the wheelhouse does not hold every locked wheel:\n  "
            + "\n  ".join(problems)
            + "\nRun python zipapp/build.py --fetch, or copy a complete wheelhouse."
        )
    return found


def runtime_requirements(wheel: Wheel) -> list[Requirement]:
    """What a wheel needs at run time; one under a marker other than an extra counts too (never missing)."""
    found = [Requirement.parse(text) for text in wheel.metadata.get_all("Requires-Dist") or []]
    return [r for r in found if not r.only_for_extra]


def check_wheels(project: Project, wheels: Mapping[str, list[Wheel]]) -> None:
    """Every wheel admits each supported Python; the lock is exactly pyproject's dependencies and what they need."""
    problems = []
    reachable = {r.name for r in project.dependencies}
    todo = list(reachable)
    while todo:
        group = wheels.get(todo.pop())
        for requirement in runtime_requirements(group[0]) if group else []:
            if requirement.name not in reachable:
                reachable.add(requirement.name)
                todo.append(requirement.name)
    for name in sorted(set(wheels) - reachable):
        problems.append(f"{name} is in {LOCK} but neither pyproject.toml's dependencies nor they require it")
    for group in wheels.values():
        wheel = group[0]
        requires_python = wheel.metadata.get("Requires-Python", "")
        if requires_python:
            refused = [v for v in project.pythons() if not satisfies(v, requires_python)]
            if refused:
                problems.append(
                    f"{wheel.name} {wheel.version} requires Python {requires_python}, "
                    f"which excludes {', '.join(refused)}"
                )
        for requirement in runtime_requirements(wheel):
            if requirement.name not in wheels:
                problems.append(f"{wheel.name} requires {requirement.name}, which is not in {LOCK}")
            elif not satisfies(wheels[requirement.name][0].version, requirement.specifier):
                locked = wheels[requirement.name][0].version
                problems.append(
                    f"{wheel.name} requires {requirement.name}{requirement.specifier}, but {locked} is locked"
                )
    if problems:
        raise BuildError(disagreement(problems))


# -- what goes into the pyz ---------------------------------------------------------------


@dataclass
class Contents:
    files: dict[str, bytes] = field(default_factory=dict)  # pure files, at the zip's root
    native: dict[str, dict[str, bytes]] = field(default_factory=lambda: {p: {} for p in PLATFORMS})
    licences: dict[str, bytes] = field(default_factory=dict)  # LICENSES/...
    bundled: list[dict[str, Any]] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # path → the project that brought it

    def add(self, path: str, data: bytes, owner: str) -> None:
        if path in self.owners and self.owners[path] != owner:
            raise BuildError(f"{path} comes from both {self.owners[path]} and {owner}")
        self.owners[path] = owner
        self.files[path] = data


def wheel_members(path: str) -> dict[str, bytes]:
    """The files a wheel installs into site-packages (purelib/platlib data included), by path."""
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            parts = name.split("/")
            if parts[0].endswith(".data"):  # <name>.data/purelib/... installs into site-packages too
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            elif parts[0].endswith(".dist-info"):
                continue
            members[name] = zf.read(info)
    return members


def is_excluded(path: str) -> bool:
    """Not shipped: test suites, type stubs, bytecode."""
    parts = path.split("/")
    return (
        (len(parts) > 2 and parts[1] in ("test", "tests"))
        or path.endswith((".pyi", ".pyc", ".pyo"))
        or "__pycache__" in parts
    )


def licence_files(path: str) -> dict[str, bytes]:
    """A wheel's licence files: PEP 639 ``licenses/`` or the classic LICENSE/COPYING/NOTICE at dist-info's top."""
    found: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if not parts[0].endswith(".dist-info") or name.endswith("/"):
                continue
            if len(parts) >= 3 and parts[1] == "licenses":
                found["/".join(parts[2:])] = zf.read(name)
            elif len(parts) == 2 and _LICENCE_FILE.match(parts[1]):
                found[parts[1]] = zf.read(name)
    return found


def licence_name(metadata: email.message.Message) -> str:
    expression = metadata.get("License-Expression")
    if expression:
        return str(expression)
    classifiers = [c.split(" :: ")[-1] for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    short = metadata.get("License", "")
    if short and "\n" not in short and len(short) < 60:
        return str(short)
    return ", ".join(classifiers) or "see the licence files"


def add_dependencies(contents: Contents, wheels: Mapping[str, list[Wheel]]) -> None:
    for key in sorted(wheels):
        group = wheels[key]
        first = group[0]
        pure_by_platform = []
        for wheel in group:
            members = wheel_members(wheel.path)
            pure = {p: d for p, d in members.items() if not p.endswith(_NATIVE_SUFFIXES) and not is_excluded(p)}
            native = {p: d for p, d in members.items() if p.endswith(_NATIVE_SUFFIXES)}
            if wheel.platform == PURE and native:
                raise BuildError(f"{wheel.filename} claims to be pure Python but holds {sorted(native)[0]}")
            for path, data in native.items():
                contents.native[wheel.platform][path] = data
            pure_by_platform.append(pure)
        for other, wheel in zip(pure_by_platform[1:], group[1:]):
            if other != pure_by_platform[0]:
                raise BuildError(f"the Python files of {wheel.filename} differ from {first.filename}'s")
        for path, data in pure_by_platform[0].items():
            contents.add(path, data, first.name)
        licences = licence_files(first.path)
        if not licences:
            raise BuildError(f"{first.filename} carries no licence file; refusing to bundle it without one")
        folder = f"LICENSES/{first.name}-{first.version}"
        for name, data in licences.items():
            contents.licences[f"{folder}/{name}"] = data
        contents.bundled.append(
            {
                "name": first.name,
                "version": first.version,
                "license": licence_name(first.metadata),
                "licence_files": sorted(f"{folder}/{n}" for n in licences),
                "wheels": {w.platform: {"file": w.filename, "sha256": w.sha256} for w in group},
            }
        )


def add_own_code(contents: Contents, root: str) -> None:
    """Every file of the package (its modules and resources) except bytecode, caches and editor droppings."""
    base = os.path.join(root, PACKAGE)
    for directory, subdirs, files in os.walk(base):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.endswith((".pyc", ".pyo", "~", ".swp", ".orig", ".rej")):
                continue
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            with open(full, "rb") as f:
                contents.add(rel, f.read(), "wsruntime")
    for name in ("__main__.py", "wsruntime_pyz.py"):
        with open(os.path.join(HERE, name), "rb") as f:
            contents.add(name, f.read(), "wsruntime")


def top_level_imports(tree: ast.AST) -> set[str]:
    """Top-level modules a file imports, leaving out ``if TYPE_CHECKING:`` and ``try: … except ImportError:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for part in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(part)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = {n.id for n in ast.walk(handler.type) if isinstance(n, ast.Name)} if handler.type else {"Exception"}
    return bool(names & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def stdlib_names() -> frozenset[str]:
    """The standard library's top-level modules (Python 3.9 has no ``sys.stdlib_module_names``: list its folder)."""
    names: frozenset[str] | None = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return names
    stdlib = os.path.dirname(os.__file__)
    found = set(sys.builtin_module_names)
    for folder in (stdlib, os.path.join(stdlib, "lib-dynload")):
        for entry in os.listdir(folder):
            if entry.endswith((".py", ".so")) or os.path.isfile(os.path.join(folder, entry, "__init__.py")):
                found.add(entry.split(".")[0])
    return frozenset(found - {"site-packages", "dist-packages"})


def check_imports(contents: Contents, floor: tuple[int, int]) -> None:
    """Refuse when our code does not parse on the oldest supported Python, or imports what the pyz lacks.

    Caught here rather than by a user: a dependency added to the code but not to
    pyproject.toml would otherwise work wherever it happens to be installed.
    """
    stdlib = stdlib_names()
    provided = {path.split("/")[0].split(".")[0] for path in contents.files}
    problems = []
    for path in sorted(p for p, owner in contents.owners.items() if owner == "wsruntime" and p.endswith(".py")):
        if path == "__main__.py":
            continue  # the version gate: written for Python 2.7 and up on purpose
        try:
            tree = ast.parse(contents.files[path], path, feature_version=floor)
        except SyntaxError as exc:
            problems.append(f"{path}:{exc.lineno}: {exc.msg} (on Python {floor[0]}.{floor[1]})")
            continue
        for name in sorted(top_level_imports(tree) - provided - set(stdlib)):
            problems.append(f"{path} imports {name}, which is neither in the standard library nor bundled")
    if problems:
        advice = ""
        if any(" imports " in p for p in problems):
            advice = "\nAdd what is missing to pyproject.toml's dependencies, then run python zipapp/build.py --lock."
        raise BuildError("\n  ".join(["our code does not fit the pyz:", *problems]) + advice)


def licences_index(contents: Contents) -> bytes:
    lines = [
        "Third-party software bundled in wsruntime.pyz",
        "",
        "Each project's licence files are in the folder named after it. Swagger UI, which serves /docs,",
        "is part of wsruntime_ext: see wsruntime_ext/docs_assets/LICENSE and NOTICE. The console at /ui",
        "bundles npm packages: wsruntime_ext/ui_assets/vendor/VERSIONS names them, LICENSES/ beside it",
        "has their texts.",
        "",
    ]
    for entry in contents.bundled:
        lines.append(f"{entry['name']} {entry['version']}  ({entry['license']})")
        lines += [f"    {path}" for path in entry["licence_files"]]
    return ("\n".join(lines) + "\n").encode("utf-8")


def assemble(
    project: Project, wheels: Mapping[str, list[Wheel]], epoch: int
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every member of the pyz by name, and the manifest (also among the members)."""
    contents = Contents()
    add_own_code(contents, project.root)
    add_dependencies(contents, wheels)
    check_imports(contents, project.python_floor)
    contents.licences["LICENSES/README.txt"] = licences_index(contents)
    members: dict[str, bytes] = dict(contents.files)
    members.update(contents.licences)
    for platform, files in contents.native.items():
        for path, data in files.items():
            members[f"_native/{platform}/{path}"] = data
    digest = hashlib.sha256()
    for name in sorted(members):  # the build id: a hash of every name and content, nothing else
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(members[name]).digest())
    manifest = {
        "name": "wsruntime",
        "version": project.version,
        "build_id": digest.hexdigest()[:16],
        "requires_python": f">={project.python_floor[0]}.{project.python_floor[1]}",
        "source_date_epoch": epoch,
        "platforms": list(PLATFORMS),
        "bundled": contents.bundled,
        # What the bootstrap extracts: every member but the gate, the native code of other platforms.
        "files": [*sorted(n for n in members if n != "__main__.py" and not n.startswith("_native/")), "manifest.json"],
        "native": {p: sorted(contents.native[p]) for p in PLATFORMS},
    }
    members["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    return members, manifest


def source_date_epoch(environ: Mapping[str, str]) -> int:
    value = environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return EPOCH_1980
    try:
        epoch = int(value)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH must be a number of seconds, not {value!r}") from None
    return min(max(epoch, EPOCH_1980), 4354819199)  # the zip format ends in 2107


def write_pyz(members: Mapping[str, bytes], out: str, epoch: int) -> None:
    """A shebang, then a zip whose bytes depend on nothing but the members and the epoch."""
    date_time = time.gmtime(epoch)[:6]
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so that external_attr carries the mode
            info.external_attr = (0o100755 if name.endswith(_NATIVE_SUFFIXES) else 0o100644) << 16
            zf.writestr(info, members[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    # A temp name in the same directory, then a rename: a running pyz is never overwritten in place.
    fd, tmp = tempfile.mkstemp(prefix=".wsruntime-", suffix=".pyz.tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        os.chmod(tmp, 0o755)  # noqa: S103  # executable with its shebang; public code, readable by all
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- network steps (pip) ------------------------------------------------------------------


def run_pip(args: Sequence[str]) -> None:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", *args]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"pip failed ({result.returncode}): {' '.join(command)}\n{result.stdout}")


def pip_platform_args(platform: str, floor: tuple[int, int]) -> list[str]:
    args = ["--no-deps", "--only-binary=:all:", "--python-version", f"{floor[0]}.{floor[1]}", "--implementation", "cp"]
    return [*args, "--platform", PLATFORMS[platform][0]]


def fetch(project: Project, lock: str, wheelhouse: str) -> None:
    """Download every locked wheel that the wheelhouse lacks; pip checks each hash against the lock."""
    pins = read_lock(lock)
    check_lock_matches(project, pins)
    try:
        find_locked_wheels(wheelhouse, pins, project.python_floor)
        print(f"wheelhouse {wheelhouse}: complete, nothing to fetch")
        return
    except BuildError:
        pass
    os.makedirs(wheelhouse, exist_ok=True)
    for platform in PLATFORMS:
        print(f"fetching the locked wheels for {platform} ...", flush=True)
        run_pip([*pip_platform_args(platform, project.python_floor), "--require-hashes", "-r", lock, "-d", wheelhouse])


def download_one(project: Project, requirement: str, folder: str) -> dict[str, str]:
    """Download one requirement for every platform into ``folder/<platform>``; the version each got."""
    versions = {}
    for platform in PLATFORMS:
        target = os.path.join(folder, platform)
        run_pip([*pip_platform_args(platform, project.python_floor), "-d", target, requirement])
        (filename,) = os.listdir(target)
        match = _WHEEL_NAME.match(filename)
        assert match is not None, filename
        versions[platform] = match.group("version")
    return versions


def update_lock(project: Project, lock: str) -> None:
    """Pin pyproject.toml's dependencies and everything they require: one version, a wheel per platform."""
    specifiers = {r.name: r.specifier for r in project.dependencies}
    pool: dict[str, Pin] = {}
    with tempfile.TemporaryDirectory(prefix="wsruntime-lock-") as tmp:
        todo = sorted(specifiers)
        while todo:
            name = todo.pop(0)
            print(f"resolving {name}{specifiers[name]} for {', '.join(PLATFORMS)} ...", flush=True)
            folder = os.path.join(tmp, name)
            versions = download_one(project, f"{name}{specifiers[name]}", folder)
            if len(set(versions.values())) > 1:
                # The newest release lacks a platform: take the newest that every platform offers.
                oldest = min(versions.values(), key=version_key)
                shutil.rmtree(folder)
                versions = download_one(project, f"{name}=={oldest}", folder)
            paths = [os.path.join(folder, p, f) for p in PLATFORMS for f in os.listdir(os.path.join(folder, p))]
            match = _WHEEL_NAME.match(os.path.basename(paths[0]))
            assert match is not None
            metadata = read_wheel_metadata(paths[0])
            version = versions[next(iter(PLATFORMS))]
            pool[name] = Pin(str(metadata.get("Name", match.group("name"))), version, {sha256_file(p) for p in paths})
            wheel = Wheel(paths[0], name, version, PURE, "", metadata)
            for requirement in runtime_requirements(wheel):
                if requirement.name not in specifiers:
                    specifiers[requirement.name] = requirement.specifier
                    todo.append(requirement.name)
        house = os.path.join(tmp, "wheelhouse")
        os.makedirs(house)
        for name in pool:
            for platform in PLATFORMS:
                for filename in os.listdir(os.path.join(tmp, name, platform)):
                    shutil.copy(os.path.join(tmp, name, platform, filename), os.path.join(house, filename))
        wheels = find_locked_wheels(house, list(pool.values()), project.python_floor)
        check_wheels(project, wheels)
        write_lock(lock, wheels)
    print(f"wrote {lock}: " + ", ".join(f"{g[0].name} {g[0].version}" for g in wheels.values()))


# -- the command --------------------------------------------------------------------------


def build(project: Project, lock: str, wheelhouse: str, out: str, environ: Mapping[str, str]) -> dict[str, Any]:
    pins = read_lock(lock)
    check_lock_matches(project, pins)
    wheels = find_locked_wheels(wheelhouse, pins, project.python_floor)
    check_wheels(project, wheels)
    epoch = source_date_epoch(environ)
    members, manifest = assemble(project, wheels, epoch)
    write_pyz(members, out, epoch)
    return manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python zipapp/build.py",
        description="Build dist/wsruntime.pyz from this checkout and the locked wheels (standard library only).",
    )
    parser.add_argument("--fetch", action="store_true", help="download the locked wheels first (pip, network)")
    parser.add_argument("--wheelhouse", help=f"the wheels to build from (default: {DEFAULT_WHEELHOUSE})")
    parser.add_argument("--out", help=f"where to write the pyz (default: {DEFAULT_OUT})")
    parser.add_argument("--lock", action="store_true", help=f"re-resolve and rewrite {LOCK} (pip, network), then exit")
    parser.add_argument("--project", default=ROOT, help="the checkout to build (default: this one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = os.path.abspath(args.project)
    lock = os.path.join(root, LOCK)
    wheelhouse = os.path.abspath(args.wheelhouse or os.path.join(root, DEFAULT_WHEELHOUSE))
    out = os.path.abspath(args.out or os.path.join(root, DEFAULT_OUT))
    try:
        project = Project.read(root)
        if args.lock:
            update_lock(project, lock)
            return 0
        if args.fetch:
            fetch(project, lock, wheelhouse)
        manifest = build(project, lock, wheelhouse, out, os.environ)
    except BuildError as exc:
        print(f"build.py: refusing to build: {exc}", file=sys.stderr)
        return 1
    size = os.path.getsize(out)
    bundled = ", ".join(f"{b['name']} {b['version']}" for b in manifest["bundled"])
    print(f"built {out}: {size:,} bytes ({size / (1 << 20):.2f} MiB), build id {manifest['build_id']}")
    print(f"  wsruntime {manifest['version']} with {bundled}; platforms {', '.join(manifest['platforms'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
