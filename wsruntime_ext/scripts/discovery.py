"""What the workspace offers to run (API.md "Scripts"): package.json, Makefile, scripts/, scripts.json.

Each source yields :class:`Script` entries named ``<prefix>:<name>``; a source
that cannot be read (malformed JSON, make missing or failing) yields a
*problem* instead, so that the listing always answers. The file reads are
blocking (run them off the IOLoop); the makefile is read by ``make -pRrq``
through the process registry, with a timeout. Make targets are listed and run
as API.md shows them, ``make <target>`` in the workspace (the makefile's
folder), with no ``-f``: the targets listed are those of the file make itself
picks there (``GNUmakefile``, then ``makefile``, then ``Makefile``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from typing import TYPE_CHECKING, Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.paths import is_within, resolve_in_workspace

if TYPE_CHECKING:
    from wsruntime_ext.procs import ProcessRegistry

# Lock file → package manager, first match wins (npm when there is none).
LOCK_FILES = (
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("bun.lockb", "bun"),
    ("bun.lock", "bun"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
)
MAKEFILES = ("GNUmakefile", "makefile", "Makefile")  # the order GNU make itself looks for them
MAKE_TIMEOUT_S = 10.0
MANIFEST_LIMIT = 4 << 20  # a package.json or scripts.json larger than this is a problem, not a read
CUSTOM_FILE = os.path.join(".wsruntime", "scripts.json")
MAX_NAME = 200
# make's fatal errors: "Makefile:3: *** missing separator.  Stop.", "make: *** GNUmakefile: Is a directory.  Stop."
_MAKE_FATAL = re.compile(r"^[^:]+:(?:\d+:)? \*\*\* ")
# The goal make is asked for never exists: expected (make before 4.0 quotes it `:').
_NO_RULE_FOR_PROBE = re.compile(r"No rule to make target [`']:'")
_MAKE_TARGET = re.compile(r"^([^#\s.:=%][^:=%]*?)::?(?:\s|$)(?!\s*=)")


@dataclasses.dataclass
class Script:
    """One runnable entry: its listed name and command, and how to run it (cwd and env of custom ones)."""

    name: str  # "npm:build"
    source: str  # "package.json", "Makefile", "scripts/", "scripts.json"
    command: list[str]
    description: str | None = None
    cwd: str = ""  # workspace-relative
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    manager: str | None = None  # npm scripts: the package manager that runs them

    @property
    def short_name(self) -> str:
        return self.name.split(":", 1)[1]

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "source": self.source, "command": self.command}
        if self.description is not None:
            entry["description"] = self.description
        if self.manager is not None:
            entry["manager"] = self.manager
        if self.source == "scripts.json":
            entry["cwd"] = self.cwd
        return entry

    def argv(self, args: list[str]) -> list[str]:
        """The command with ``args`` appended as separate arguments (npm needs ``--`` before them)."""
        if args and self.manager == "npm":
            return [*self.command, "--", *args]
        return [*self.command, *args]


@dataclasses.dataclass
class Discovery:
    scripts: list[Script]
    problems: list[dict[str, str]]

    def as_json(self) -> dict[str, Any]:
        return {"scripts": [s.as_json() for s in self.scripts], "problems": self.problems}

    def resolve(self, name: str) -> Script:
        """``npm:build`` exactly, or a bare ``build`` that one script alone has; 404 / 409 otherwise."""
        for script in self.scripts:
            if script.name == name:
                return script
        candidates = [s for s in self.scripts if s.short_name == name]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise ApiError(
                409,
                "ambiguous_script",
                f"Several scripts are called {name[:MAX_NAME]!r}: use one of the prefixed names",
                candidates=[s.name for s in candidates],
            )
        raise ApiError(
            404, "script_not_found", f"No script {name[:MAX_NAME]!r} in this workspace", name=name[:MAX_NAME]
        )


def _problem(source: str, message: str) -> dict[str, str]:
    return {"source": source, "message": message}


def _usable_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def _read_json(path: str) -> Any:
    """A manifest's JSON; ValueError with a readable reason when it is not usable."""
    with open(path, "rb") as f:
        data = f.read(MANIFEST_LIMIT + 1)
    if len(data) > MANIFEST_LIMIT:
        raise ValueError(f"larger than {MANIFEST_LIMIT} bytes")
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def package_manager(workspace: str) -> str:
    for lock, manager in LOCK_FILES:
        if os.path.isfile(os.path.join(workspace, lock)):
            return manager
    return "npm"


def package_scripts(workspace: str) -> tuple[list[Script], list[dict[str, str]]]:
    """``package.json`` ``scripts``, run with the manager its lock file names."""
    path = os.path.join(workspace, "package.json")
    if not os.path.isfile(path):
        return [], []
    if not is_within(workspace, os.path.realpath(path)):
        return [], [_problem("package.json", "package.json points outside the workspace")]
    try:
        manifest = _read_json(path)
    except (OSError, ValueError) as exc:
        return [], [_problem("package.json", f"package.json is unusable: {exc}")]
    if not isinstance(manifest, dict):
        return [], [_problem("package.json", "package.json is not a JSON object")]
    entries = manifest.get("scripts", {})
    if not isinstance(entries, dict):
        return [], [_problem("package.json", "package.json 'scripts' is not an object")]
    manager = package_manager(workspace)
    scripts, problems = [], []
    for name, line in entries.items():
        if not isinstance(line, str) or not _usable_name(name):
            problems.append(_problem("package.json", f"script {name[:MAX_NAME]!r} is not a name and a command string"))
            continue
        if name.startswith("-"):
            # `npm run -x` reads it as an option of npm's (and runs nothing): it cannot be run by its name.
            message = f"script {name[:MAX_NAME]!r} starts with '-': {manager} run would read it as an option"
            problems.append(_problem("package.json", message))
            continue
        scripts.append(Script(f"npm:{name}", "package.json", [manager, "run", name], line, manager=manager))
    return scripts, problems


def makefile_name(workspace: str) -> str | None:
    """The makefile plain ``make`` reads in ``workspace``: the first name that exists in make's order.

    Any directory entry counts, as it does for make: a dangling ``GNUmakefile`` link or a directory of
    that name hides a ``Makefile`` beside it (make then fails, and so is the listing's problem).
    """
    for name in MAKEFILES:
        if os.path.lexists(os.path.join(workspace, name)):
            return name
    return None


def _points_outside(workspace: str, name: str) -> bool:
    """Whether ``name`` in the workspace is a link that leads out of it (a few lstat calls)."""
    return not is_within(workspace, os.path.realpath(os.path.join(workspace, name)))


def parse_make_database(text: str) -> list[str]:
    """Real targets from ``make -pRrq`` output: no special (``.X``) or pattern targets, no variables."""
    targets: set[str] = set()
    in_files = False
    not_a_target = False
    for line in text.splitlines():
        if line.startswith("# Files"):
            in_files = True
            continue
        if line.startswith("# Finished Make data base"):
            break
        if not in_files:
            continue
        if line.startswith("# Not a target:"):
            not_a_target = True
            continue
        match = _MAKE_TARGET.match(line)
        if match is not None:
            if not not_a_target:
                name = match.group(1).strip()
                # A name starting with "-" would be an option on make's command line, not a goal.
                if name and " " not in name and not name.startswith("-") and _usable_name(name):
                    targets.add(name)
            not_a_target = False
        elif line and not line.startswith("#"):
            not_a_target = False
    return sorted(targets)


async def make_targets(workspace: str, procs: ProcessRegistry) -> tuple[list[Script], list[dict[str, str]]]:
    """Makefile targets from make's own database (``make -pRrq :``), with a timeout.

    make is not told which file to read: it reads the one it would run, so the listing and the runs
    (``make <target>`` in the same folder) cannot disagree.
    """
    makefile = makefile_name(workspace)
    if makefile is None:
        return [], []
    if _points_outside(workspace, makefile):
        # make would follow the link: neither its targets nor its errors (lines of that file) are shown
        return [], [_problem("Makefile", f"{makefile} points outside the workspace")]
    try:
        done = await procs.run(
            ["make", "-pRrq", ":"],
            cwd=workspace,
            env={**os.environ, "LC_ALL": "C", "MAKEFLAGS": "", "MFLAGS": ""},
            timeout=MAKE_TIMEOUT_S,
            output_limit=8 << 20,
        )
    except OSError as exc:
        return [], [_problem("Makefile", f"cannot read the {makefile} targets: make is not available ({exc.strerror})")]
    if done.timed_out:
        return [], [_problem("Makefile", f"make took longer than {MAKE_TIMEOUT_S:g} s to read {makefile}")]
    text = done.stdout.decode("utf-8", "replace")
    errors = done.stderr.decode("utf-8", "replace").strip().splitlines()
    # The goal ":" never exists ("No rule to make target ':'"); any other fatal error means make could not
    # read the makefile (it prints the half-read database even then).
    broken = [line for line in errors if _MAKE_FATAL.match(line) and not _NO_RULE_FOR_PROBE.search(line)]
    if broken or "# Files" not in text:
        reason = (broken or errors or [f"make exited with {done.returncode}"])[-1]
        return [], [_problem("Makefile", f"make cannot read {makefile}: {reason[:500]}")]
    return [Script(f"make:{t}", "Makefile", ["make", t]) for t in parse_make_database(text)], []


def directory_scripts(workspace: str) -> list[Script]:
    """Executable regular files directly in ``scripts/`` (inside the workspace)."""
    folder = os.path.join(workspace, "scripts")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    if not is_within(workspace, os.path.realpath(folder)):
        return []
    scripts = []
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(".") or not _usable_name(name):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK) and is_within(workspace, os.path.realpath(path)):
            scripts.append(Script(f"scripts:{name}", "scripts/", [f"scripts/{name}"]))
    return scripts


def _str_map(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    if not all(usable_env_name(k) and "\x00" not in v for k, v in value.items()):
        return None
    return dict(value)


def usable_env_name(name: str) -> bool:
    return name != "" and "=" not in name and "\x00" not in name


def custom_scripts(workspace: str) -> tuple[list[Script], list[dict[str, str]]]:
    """Entries of ``<workspace>/.wsruntime/scripts.json``; a bad entry is a problem, the others still count."""
    source = "scripts.json"
    path = os.path.join(workspace, CUSTOM_FILE)
    if not os.path.lexists(path):
        return [], []
    try:
        resolve_in_workspace(workspace, CUSTOM_FILE)
        manifest = _read_json(path)
    except ApiError:
        return [], [_problem(source, f"{CUSTOM_FILE} points outside the workspace")]
    except (OSError, ValueError) as exc:
        return [], [_problem(source, f"{CUSTOM_FILE} is unusable: {exc}")]
    if not isinstance(manifest, dict):
        return [], [_problem(source, f"{CUSTOM_FILE} is not a JSON object of name → {{command, cwd, env}}")]
    scripts, problems = [], []
    for name, entry in manifest.items():
        label = f"entry {name[:MAX_NAME]!r}"
        if not _usable_name(name):
            problems.append(_problem(source, f"{label}: not a usable name"))
            continue
        if not isinstance(entry, dict):
            problems.append(_problem(source, f"{label}: not an object"))
            continue
        command = entry.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and "\x00" not in a for a in command)
            or command[0] == ""
        ):
            problems.append(_problem(source, f"{label}: 'command' must be a non-empty list of strings"))
            continue
        cwd = entry.get("cwd", "")
        if not isinstance(cwd, str):
            problems.append(_problem(source, f"{label}: 'cwd' must be a string"))
            continue
        try:
            where = resolve_in_workspace(workspace, cwd)
        except ApiError as exc:
            problems.append(_problem(source, f"{label}: cwd {cwd[:200]!r} is refused ({exc.code})"))
            continue
        env = _str_map(entry.get("env", {}))
        if env is None:
            problems.append(_problem(source, f"{label}: 'env' must map names (no '=' or NUL) to strings"))
            continue
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            problems.append(_problem(source, f"{label}: 'description' must be a string"))
            continue
        scripts.append(Script(f"custom:{name}", source, list(command), description, where.rel, env))
    return scripts, problems


def read_files(workspace: str) -> tuple[list[Script], list[dict[str, str]]]:
    """Every source but the Makefile (blocking: run it off the IOLoop)."""
    npm, npm_problems = package_scripts(workspace)
    custom, custom_problems = custom_scripts(workspace)
    return [*npm, *directory_scripts(workspace), *custom], [*npm_problems, *custom_problems]
