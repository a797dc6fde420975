"""OpenSpec differential test against the real ``openspec`` CLI on randomly generated workspaces.

Each workspace gets random main specs (with and without requirements, Purpose
missing or empty, fenced headers, CRLF, BOM), random changes (every checkbox form
of OPENSPEC.md §4.2 and lines that only look like tasks, artifacts present or
missing, ``skip_specs``, misplaced deltas, hidden and namespace folders) and
archived changes, every file at a random mtime. The CLI's ``list --json``,
``list --specs --json`` and ``status --all --json`` (and, for some, ``instructions
apply``) must equal the reader's output after normalising the root path.

Seed: ``OPENSPEC_DIFF_SEED`` (default fixed), count: ``OPENSPEC_DIFF_COUNT`` (default 50).

The profile test sets the global profile the way a user does (``openspec config
set``, ``openspec config profile core``, a broken file), lets the runtime's
``init`` action and then ``openspec update`` install the workflows, and checks
that the ``/opsx:`` commands and skills the CLI put under ``.claude/`` are exactly
the workflows the runtime reports for that profile.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import subprocess
import tempfile
from typing import Any

import pytest

from tests.conftest import ServerPool, ServerThread
from tests.openspec_support import cli_env, make_home, normalize, openspec_bin, pin_config_home, run_cli
from wsruntime_ext.openspec.actions import SKILLS
from wsruntime_ext.openspec.profile import CORE_WORKFLOWS
from wsruntime_ext.openspec.reader import read_workspace

SEED = int(os.environ.get("OPENSPEC_DIFF_SEED", "20261128"))
COUNT = int(os.environ.get("OPENSPEC_DIFF_COUNT", "50"))
WORKERS = 4

pytestmark = [
    pytest.mark.openspec_cli,
    pytest.mark.skipif(openspec_bin() is None, reason="the openspec CLI is not installed (.ci/run)"),
]

WORDS = ["auth", "notes", "export", "search", "tags", "sync", "login", "dark", "mode", "api", "cache", "x", "a1"]
TASK_FORMS = [
    "- [ ] {t}",
    "- [x] {t}",
    "- [X] {t}",
    "* [x] {t}",
    "+ [ ] {t}",
    "1. [ ] {t}",
    "2) [x] {t}",
    "  - [x] {t}",
    "\t- [ ] {t}",
    "- [ x ] {t}",
    "- [] {t}",
    "- [~] {t}",
    "- [-] {t}",
    "-[x] {t}",
    "- [x]{t}",
    "- [x]",
    "- [ ]",
    "- [ ](./{t}.md)",
    "- [Design notes](./d.md)",
    "- [A](http://x)",
    "- [1](./one)",
    "- [WIP] {t}",
    "1234567890. [ ] {t}",
    "> - [x] {t}",
    "- {t}",
    "## 1. Group {t}",
    "```",
    "",
]


def kebab(rng: random.Random, parts: int = 2) -> str:
    return "-".join(rng.choice(WORDS) for _ in range(rng.randint(1, parts)))


def write(path: str, text: str, newline: str = "\n") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text.replace("\n", newline))


def spec_text(rng: random.Random, name: str) -> str:
    lines = [f"# {name} Specification", ""]
    purpose = rng.random()
    if purpose < 0.75:
        lines += ["## Purpose", "The system keeps notes for its users, reliably and quickly.", ""]
    elif purpose < 0.85:
        lines += ["## Purpose", ""]
    if rng.random() < 0.9:
        lines.append(rng.choice(["## Requirements", "## requirements", "## REQUIREMENTS"]))
        for i in range(rng.randint(0, 4)):
            lines += [f"### Requirement: R{i}", "The system SHALL work.", "", "#### Scenario: ok", "- **WHEN** x"]
            if rng.random() < 0.2:
                lines += ["```", "### Requirement: fenced, not counted", "```"]
        if rng.random() < 0.2:
            lines += ["### Notes", "A non-requirement child still counts."]
        if rng.random() < 0.2:
            lines += ["#### Deep", "skipped level"]
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.1:
        text = "\ufeff" + text
    return text


def tasks_text(rng: random.Random) -> str:
    lines = []
    for i in range(rng.randint(0, 10)):
        form = rng.choice(TASK_FORMS)
        lines.append(form.format(t=f"{i}.{rng.randint(1, 9)} {rng.choice(WORDS)} task"))
    return "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")


def generate(rng: random.Random, root: str) -> None:
    """One random workspace at ``root``."""
    base = os.path.join(root, "openspec")
    os.makedirs(base)
    if rng.random() < 0.7:
        write(os.path.join(base, "config.yaml"), "schema: spec-driven\n\n# context: |\n#   example\n")
    os.makedirs(os.path.join(base, "specs"), exist_ok=True)
    for _ in range(rng.randint(0, 4)):
        cap = kebab(rng) + (f"/{rng.choice(WORDS)}" if rng.random() < 0.2 else "")
        write(os.path.join(base, "specs", cap, "spec.md"), spec_text(rng, cap), rng.choice(["\n", "\n", "\r\n"]))
    if rng.random() < 0.1:
        write(os.path.join(base, "specs", "spec.md"), "# stray\n")
    if rng.random() < 0.1:
        write(os.path.join(base, "specs", ".hidden", "spec.md"), spec_text(rng, "hidden"))
    changes = os.path.join(base, "changes")
    os.makedirs(os.path.join(changes, "archive"), exist_ok=True)
    names: set[str] = set()
    for _ in range(rng.randint(0, 6)):
        name = kebab(rng, 3)
        if name in names:
            continue
        names.add(name)
        folder = os.path.join(changes, name)
        os.makedirs(folder)
        if rng.random() < 0.7:
            meta = "schema: spec-driven\ncreated: 2026-11-28\n"
            if rng.random() < 0.2:
                meta += "skip_specs: true\n"
            write(os.path.join(folder, ".openspec.yaml"), meta)
        if rng.random() < 0.7:
            write(os.path.join(folder, "proposal.md"), "## Why\nBecause.\n\n## What Changes\n- x\n")
        if rng.random() < 0.4:
            write(os.path.join(folder, "design.md"), "## Context\nx\n")
        if rng.random() < 0.7:
            write(os.path.join(folder, "tasks.md"), tasks_text(rng), rng.choice(["\n", "\n", "\r\n"]))
        delta = rng.random()
        if delta < 0.4:
            cap = kebab(rng)
            write(os.path.join(folder, "specs", cap, "spec.md"), "## ADDED Requirements\n### Requirement: X\n")
        elif delta < 0.5:
            write(os.path.join(folder, "specs", "misplaced.md"), "## ADDED Requirements\n")
        elif delta < 0.55:
            write(os.path.join(folder, "specs", ".hidden.md"), "x\n")
        if rng.random() < 0.1:
            write(os.path.join(folder, ".notes"), "dot file\n")
    if rng.random() < 0.15:
        write(os.path.join(changes, ".draft", "proposal.md"), "draft\n")
    if rng.random() < 0.1:
        write(os.path.join(changes, "area", "nested-one", "proposal.md"), "nested\n")
    if rng.random() < 0.1:
        os.makedirs(os.path.join(changes, "empty-change"))
    for i in range(rng.randint(0, 2)):
        archived = os.path.join(changes, "archive", f"2026-01-0{i + 1}-{kebab(rng)}")
        write(os.path.join(archived, "tasks.md"), "- [x] done\n")
        write(os.path.join(archived, "proposal.md"), "archived\n")
    # Random mtimes (whole milliseconds, deepest first so a file's dir keeps its own).
    paths = []
    for folder, dirs, files in os.walk(root):
        paths += [os.path.join(folder, n) for n in dirs + files]
    for path in sorted(paths, key=lambda p: -p.count(os.sep)):
        ms = 1_740_000_000_000 + rng.randint(0, 30 * 86_400_000)
        os.utime(path, ns=(ms * 1_000_000,) * 2)


def compare(index: int, root: str, home: str) -> list[str]:
    """Run the CLI on one workspace; the differences from the reader (empty when equal)."""
    state = read_workspace(root)
    problems = []
    for key, args in (
        ("list", ["list", "--json"]),
        ("specs", ["list", "--specs", "--json"]),
        ("status", ["status", "--all", "--json"]),
    ):
        _, cli = run_cli(args, root, home)
        ours = normalize(state[key], root)
        theirs = normalize(cli, root)
        if ours != theirs:
            problems.append(
                f"workspace {index} `{' '.join(args)}`:\n  cli:  {json.dumps(theirs)[:3000]}\n"
                f"  ours: {json.dumps(ours)[:3000]}"
            )
    if index % 5 == 0 and state["apply"]:
        name = sorted(state["apply"])[0]
        _, cli = run_cli(["instructions", "apply", "--change", name, "--json"], root, home)
        theirs = {"state": cli["state"], "progress": cli["progress"]}
        if "missingArtifacts" in cli:
            theirs["missingArtifacts"] = cli["missingArtifacts"]
        if state["apply"][name] != theirs:
            problems.append(f"workspace {index} apply {name}: cli {theirs} ours {state['apply'][name]}")
    return problems


def test_reader_equals_the_real_cli_on_random_workspaces(tmp_path: Any) -> None:
    rng = random.Random(SEED)
    home = str(tmp_path / "home")
    os.makedirs(home)
    roots = []
    for i in range(COUNT):
        root = os.path.realpath(tempfile.mkdtemp(prefix=f"ws{i}-", dir=str(tmp_path)))
        generate(random.Random(rng.getrandbits(64)), root)
        roots.append(root)
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda item: compare(item[0], item[1], home), enumerate(roots)))
    problems = [p for r in results for p in r]
    assert not problems, f"OPENSPEC_DIFF_SEED={SEED}: {len(problems)} differences\n" + "\n".join(problems[:5])


# -- profiles: what the CLI installs is what the runtime reports ---------------------------------


def run_plain(args: list[str], cwd: str, home: str) -> subprocess.CompletedProcess[str]:
    """``openspec <args>`` (not JSON) with the oracle's environment; it must succeed."""
    done = subprocess.run(
        [openspec_bin() or "openspec", *args],
        cwd=cwd,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"openspec {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def installed_by_cli(workspace: str) -> tuple[set[str], set[str]]:
    """The workflows of ``.claude/commands/opsx/*.md`` and of ``.claude/skills/*/SKILL.md`` (by skill name)."""
    commands_dir = os.path.join(workspace, ".claude", "commands", "opsx")
    skills_dir = os.path.join(workspace, ".claude", "skills")
    commands = {n[:-3] for n in os.listdir(commands_dir) if n.endswith(".md")} if os.path.isdir(commands_dir) else set()
    by_skill = {skill: workflow for workflow, skill in SKILLS.items()}
    skills = set()
    for name in os.listdir(skills_dir) if os.path.isdir(skills_dir) else []:
        assert name in by_skill, f"a skill the runtime does not know: {name}"
        assert os.path.isfile(os.path.join(skills_dir, name, "SKILL.md"))
        skills.add(by_skill[name])
    return commands, skills


async def reported(server: ServerThread) -> dict[str, Any]:
    response = await server.request("GET", f"/api/v1/workspaces/{server.config.workspace_id}/openspec")
    assert response.status == 200, response.raw
    return dict(response.body)


async def test_the_cli_installs_the_workflows_the_runtime_reports(servers: ServerPool, tmp_path: Any) -> None:
    home = make_home(str(tmp_path))
    workspace = os.path.realpath(tempfile.mkdtemp(prefix="profile-", dir=str(tmp_path)))
    server = servers.fresh("--home", home, workspace=workspace)
    try:
        pin_config_home(server, home)
        config_path = os.path.join(home, ".config", "openspec", "config.json")

        async def check(name: str, source: str, warning: bool = False) -> list[str]:
            state = await reported(server)
            profile = state["profile"]
            assert (profile["name"], profile["source"], profile["config_path"]) == (name, source, config_path)
            assert (profile["warning"] is not None) is warning, profile
            commands, skills = installed_by_cli(workspace)
            assert commands == skills == set(profile["workflows"]), (commands, skills, profile)
            assert state["installed"] == sorted(profile["workflows"])
            offered = {a["id"] for a in state["actions"]} | {a["id"] for c in state["changes"] for a in c["actions"]}
            assert offered <= set(profile["workflows"])
            return list(profile["workflows"])

        # A custom subset, set as a user does without the interactive picker; the runtime's init action runs the
        # CLI in the agent sessions' environment (HOME is --home), so it installs that subset.
        run_plain(["config", "set", "profile", "custom"], workspace, home)
        run_plain(["config", "set", "workflows", '["ff", "bulk-archive", "verify", "onboard"]'], workspace, home)
        r = await server.request("POST", f"/api/v1/workspaces/{server.config.workspace_id}/openspec/actions/init")
        assert r.status == 201, r.raw
        assert await check("custom", config_path) == ["ff", "sync", "bulk-archive", "verify", "onboard"]

        # The core preset; `openspec update` applies it.
        run_plain(["config", "profile", "core"], workspace, home)
        run_plain(["update"], workspace, home)
        assert await check("core", config_path) == list(CORE_WORKFLOWS)

        # No global config at all: core, by default (what is installed is core's six).
        os.remove(config_path)
        assert await check("core", "default") == list(CORE_WORKFLOWS)
        # With no profile in the global config, `openspec update` migrates (migration.ts): it writes a custom
        # profile of the workflows installed here. The runtime reads what it wrote.
        done = run_plain(["update"], workspace, home)
        assert "Migrated: custom profile with 6 workflows" in done.stdout
        assert await check("custom", config_path) == list(CORE_WORKFLOWS)

        # A custom profile again, then the file breaks: the CLI warns and installs core; so does the runtime.
        run_plain(["config", "set", "profile", "custom"], workspace, home)
        run_plain(["config", "set", "workflows", '["new", "continue"]'], workspace, home)
        run_plain(["update"], workspace, home)
        assert await check("custom", config_path) == ["new", "continue"]
        with open(config_path, "a", encoding="utf-8") as f:
            f.write("{ not json")
        done = run_plain(["update"], workspace, home)
        assert f"Invalid JSON in {config_path}" in done.stderr
        assert await check("core", "default", warning=True) == list(CORE_WORKFLOWS)
    finally:
        server.stop()
