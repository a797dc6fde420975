"""The OpenSpec workflow actions and when each applies (OPENSPEC.md §7, API.md "OpenSpec").

Each action is carried out by an agent with the slash command ``openspec init
--tools claude`` installs (``/opsx:<id>``), except ``init``, which is the CLI's.
Only the workflows of the profile in effect exist (:mod:`profile`).
:func:`workspace_actions` and :func:`change_actions` list what applies now;
:func:`workspace_reason` and :func:`change_reason` say why one does not.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from wsruntime_ext.openspec.profile import ALL_WORKFLOWS

ACTIONS = ("init", *ALL_WORKFLOWS)  # init is the CLI's; the rest are the workflows of profiles.ts
WORKSPACE_ACTIONS = ("propose", "explore", "new", "ff", "onboard", "bulk-archive")
CHANGE_ACTIONS = ("explore", "continue", "apply", "update", "verify", "sync", "archive")
# What the action's free text must say (the slash command's argument); explore's topic is optional.
NEEDS = {"propose": ["description"], "new": ["name"], "ff": ["name"]}
INIT_COMMAND = ["openspec", "init", "--tools", "claude"]


def slash(action: str, change: str | None = None) -> str:
    """How Claude Code (and the other ``/opsx:`` agents) invoke a workflow."""
    return f"/opsx:{action}" + (f" {change}" if change else "")


def installed_commands(workspace: str) -> list[str]:
    """The workflows with a command in ``.claude/commands/opsx/`` (or a skill) — blocking."""
    folder = os.path.join(workspace, ".claude", "commands", "opsx")
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    found = {n[:-3] for n in names if n.endswith(".md")}
    skills = os.path.join(workspace, ".claude", "skills")
    for action, skill in SKILLS.items():
        if os.path.isfile(os.path.join(skills, skill, "SKILL.md")):
            found.add(action)
    return sorted(a for a in found if a in ALL_WORKFLOWS)


SKILLS = {
    "propose": "openspec-propose",
    "explore": "openspec-explore",
    "apply": "openspec-apply-change",
    "update": "openspec-update-change",
    "sync": "openspec-sync-specs",
    "archive": "openspec-archive-change",
    "new": "openspec-new-change",
    "continue": "openspec-continue-change",
    "ff": "openspec-ff-change",
    "bulk-archive": "openspec-bulk-archive-change",
    "verify": "openspec-verify-change",
    "onboard": "openspec-onboard",
}


def _entry(action: str, installed: list[str], change: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": action, "command": slash(action, change), "kind": "slash"}
    if action in NEEDS:
        entry["needs"] = NEEDS[action]
    entry["installed"] = action in installed
    return entry


def workspace_actions(
    initialized: bool, changes: list[dict[str, Any]], installed: list[str], workflows: Collection[str]
) -> list[dict[str, Any]]:
    """The workspace-wide actions that apply now, among ``workflows`` (the profile's)."""
    if not initialized:
        return [{"id": "init", "command": " ".join(INIT_COMMAND), "kind": "cli", "installed": True}]
    return [_entry(a, installed) for a in WORKSPACE_ACTIONS if a in workflows and workspace_reason(a, changes) is None]


def workspace_reason(action: str, changes: list[dict[str, Any]]) -> str | None:
    """Why a workspace action does not apply now (None: it does)."""
    if action == "onboard" and changes:
        return "onboard guides a first change; this workspace has active changes already"
    if action == "bulk-archive":
        complete = sum(1 for c in changes if c["status"] == "complete")
        if complete < 2:
            return f"bulk-archive needs at least two complete changes ({complete} now)"
    return None


def change_actions(change: dict[str, Any], installed: list[str], workflows: Collection[str]) -> list[dict[str, Any]]:
    """The actions on one change that apply now, among ``workflows`` (the profile's)."""
    return [
        _entry(a, installed, change["name"])
        for a in CHANGE_ACTIONS
        if a in workflows and change_reason(a, change) is None
    ]


def change_reason(action: str, change: dict[str, Any]) -> str | None:
    """Why an action on ``change`` (the endpoint's change object) does not apply now (None: it does)."""
    name = change["name"]
    if action == "explore":
        return None
    if change.get("error") is not None:
        return f"Change {name!r} cannot be loaded: {change['error']['message']}"
    artifacts = change["artifacts"]
    apply_state = change.get("apply_state")
    if action == "continue":
        if any(a["status"] == "ready" for a in artifacts):
            return None
        if change["planning_complete"]:
            return f"Every planning artifact of {name!r} is done already"
        return f"No artifact of {name!r} is ready: each waits for another"
    if action == "apply":
        if apply_state == "ready":
            return None
        if apply_state == "all_done":
            return f"Every task of {name!r} is done already"
        missing = change.get("missing_artifacts") or []
        if missing:
            return f"{name!r} cannot be implemented before these artifacts exist: {', '.join(missing)}"
        return f"{name!r} has no tasks to work on"
    if action == "update":
        if any(a["status"] == "done" for a in artifacts):
            return None
        return f"No artifact of {name!r} is done yet: there is nothing to revise"
    if action == "verify":
        if apply_state in ("ready", "all_done"):
            return None
        return f"{name!r} has no tasks to verify yet"
    if action == "sync":
        if any(a.get("specs") and a["status"] == "done" for a in artifacts):
            return None
        return f"{name!r} has no delta specs to sync into openspec/specs/"
    if action == "archive":
        if change["status"] == "complete":
            return None
        tasks = change["tasks"]
        return f"Only a change whose tasks are all done is archived ({tasks['completed']} of {tasks['total']} done)"
    return f"{action!r} is not an action on a change"
