"""The OpenSpec profile in effect: which ``/opsx:`` workflows exist (OPENSPEC.md §7.1).

``openspec init`` and ``openspec update`` install the workflows of the profile the
global config names: ``$XDG_CONFIG_HOME/openspec/config.json``, else
``~/.config/openspec/config.json``. The rules are the CLI 1.13.2's
(``core/global-config.ts``, ``core/profiles.ts``):

- no file, a profile other than ``custom``, or no profile at all → **core**;
- ``{"profile": "custom", "workflows": [...]}`` → exactly the listed workflows,
  with ``sync`` put in before ``archive``/``bulk-archive`` when either is listed
  without it; names the CLI does not know are dropped; no list → no workflow;
- a file that is not JSON, not an object, or cannot be read → core (the CLI warns
  ``Invalid JSON in <path>, using defaults``). A ``workflows`` that is not a list
  makes the CLI itself fail (``workflows.findIndex is not a function``); core here.

Whatever falls back says why in :attr:`Profile.warning`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

CORE_WORKFLOWS = ("propose", "explore", "apply", "update", "sync", "archive")
ALL_WORKFLOWS = (
    "propose",
    "explore",
    "new",
    "continue",
    "apply",
    "update",
    "ff",
    "sync",
    "archive",
    "bulk-archive",
    "verify",
    "onboard",
)
DEFAULT_SOURCE = "default"
CONFIG_LIMIT = 1 << 20  # a config.json past 1 MiB is not a config: not read


@dataclasses.dataclass(frozen=True)
class Profile:
    """The profile in effect and where it came from."""

    name: str  # "core" or "custom"
    workflows: tuple[str, ...]  # in ALL_WORKFLOWS order
    source: str  # DEFAULT_SOURCE, or the config file that chose it
    config_path: str  # where the global config is looked for
    warning: str | None = None  # why the config file was not used (it exists but is not a valid config)

    def view(self) -> dict[str, Any]:
        """The ``profile`` object of ``GET .../openspec``."""
        return {
            "name": self.name,
            "workflows": list(self.workflows),
            "source": self.source,
            "config_path": self.config_path,
            "warning": self.warning,
        }


def config_path(environ: Mapping[str, str], home: str) -> str:
    """The global config file: ``$XDG_CONFIG_HOME/openspec/config.json`` (when set), else under ``~/.config``."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "openspec", "config.json")


def profile_workflows(name: str, custom: list[Any]) -> tuple[str, ...]:
    """The workflows a profile installs (profiles.ts ``getProfileWorkflows``, unknown names dropped)."""
    if name != "custom":
        return CORE_WORKFLOWS
    chosen = set(custom)
    if chosen & {"archive", "bulk-archive"}:
        chosen.add("sync")
    return tuple(w for w in ALL_WORKFLOWS if w in chosen)


def read_profile(path: str) -> Profile:
    """The profile the config file at ``path`` puts in effect (blocking: a stat and a small read)."""

    def core(source: str = DEFAULT_SOURCE, warning: str | None = None) -> Profile:
        return Profile("core", CORE_WORKFLOWS, source, path, warning)

    fallback = "the core profile is used, as the openspec CLI does"
    if not os.path.exists(path):
        return core()
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_LIMIT + 1)
        if len(data) > CONFIG_LIMIT:
            return core(warning=f"{path} is larger than 1 MiB: {fallback}")
        config = json.loads(data.decode("utf-8", "replace"), parse_constant=_reject_constant)
    except OSError as exc:
        return core(warning=f"Cannot read {path} ({exc.strerror or exc}): {fallback}")
    except (ValueError, RecursionError) as exc:
        return core(warning=f"Invalid JSON in {path} ({exc}): {fallback}")
    if not isinstance(config, dict):
        return core(warning=f"{path} is not a JSON object: {fallback}")
    name = config.get("profile")
    if name is None:
        return core()
    if name == "core":
        return core(path)
    if name != "custom":
        return core(warning=f"Unknown profile {str(name)[:80]!r} in {path} (core or custom): {fallback}")
    workflows = config.get("workflows")
    if workflows is None:
        workflows = []
    if not isinstance(workflows, list):
        return core(warning=f"'workflows' in {path} is not a list (the openspec CLI fails on it): core is used")
    names = [w for w in workflows if isinstance(w, str)]  # the CLI drops what it does not know, numbers too
    return Profile("custom", profile_workflows("custom", names), path, path)


def not_in_profile(profile: Mapping[str, Any], action: str) -> str | None:
    """Why workflow ``action`` does not exist under ``profile`` (:meth:`Profile.view`); None: it does."""
    if action in profile["workflows"]:
        return None
    if profile["name"] == "core":
        return (
            f"{action!r} is not in the core profile ({', '.join(CORE_WORKFLOWS)}): add it with "
            "`openspec config profile`, then run `openspec update`"
        )
    return f"{action!r} is not among the custom profile's workflows in {profile['config_path']}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity; JSON.parse does not
