"""Which paths the watcher leaves out (API.md "WebSocket events": noise is left out by default).

Defaults: ``.git`` (its internals are followed separately, for ``git_changed``),
``node_modules`` at any depth, and the state directory. ``--watch-ignore``
adds patterns:

- a pattern without a ``/`` (``*.log``, ``__pycache__``) matches a file or
  directory of that name at any depth; a trailing ``/`` (``build/``) limits it
  to directories;
- a pattern with a ``/`` (``docs/_build``, ``/dist``, ``out/**/*.map``) is
  anchored at the workspace root; ``*`` and ``?`` stay within one path
  segment, ``**`` crosses segments;
- ``!node_modules`` removes that default, so it is reported again.

The runtime's own temporary files (``.<name>.<hex>.wsrt-tmp``, a write in
progress) are always left out: the write reports its target once it lands.

Ignoring a directory ignores everything below it, and the watcher does not
even look inside it (no inotify watch, no polling).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator

from wsruntime_ext.globs import escape_glob, glob_to_regex
from wsruntime_ext.temps import is_temp_name

log = logging.getLogger("wsruntime.watch")

DEFAULT_IGNORES = (".git", "node_modules")
REMOVABLE_DEFAULTS = frozenset({"node_modules"})  # .git must stay: its internals are followed another way


class IgnoreRules:
    """Decides, for a workspace-relative POSIX path, whether its changes are left out."""

    def __init__(self, patterns: Iterable[str] = (), state_dir_rel: str | None = None) -> None:
        names = dict.fromkeys(DEFAULT_IGNORES, False)  # name glob → directories only
        anchored: list[tuple[str, bool]] = []
        self.patterns: list[str] = list(DEFAULT_IGNORES)
        for raw in patterns:
            pattern = raw.strip()
            if pattern.startswith("!"):
                name = pattern[1:].strip("/")
                if name in REMOVABLE_DEFAULTS:
                    names.pop(name, None)
                    self.patterns.remove(name)
                else:
                    log.warning("--watch-ignore %s: only %s can be reported again", raw, ", ".join(REMOVABLE_DEFAULTS))
                continue
            dir_only = pattern.endswith("/")
            pattern = pattern.rstrip("/")
            if "/" in pattern:
                anchored.append((pattern.lstrip("/"), dir_only))
            else:
                names[pattern] = names.get(pattern, True) and dir_only
            self.patterns.append(raw)
        if state_dir_rel:
            anchored.append((escape_glob(state_dir_rel), False))
            self.patterns.append(state_dir_rel + "/")
        self._names = self._compile([n for n, d in names.items() if not d])
        self._dir_names = self._compile([n for n, d in names.items() if d])
        # An anchored pattern matches the path itself or anything below it.
        self._anchored = self._compile([p for p, d in anchored if not d], below=True)
        self._dir_anchored = self._compile([p for p, d in anchored if d], below=False)
        self._dir_anchored_below = self._compile([p for p, d in anchored if d], below=True, strict_below=True)

    @staticmethod
    def _compile(globs: list[str], below: bool = False, strict_below: bool = False) -> re.Pattern[str] | None:
        if not globs:
            return None
        tail = "/.+" if strict_below else "(?:/.*)?" if below else ""
        return re.compile("(?:" + "|".join(glob_to_regex(g) for g in globs) + ")" + tail, re.DOTALL)

    def ignored_entry(self, rel: str, name: str, is_dir: bool) -> bool:
        """For a directory walk: is this entry left out, given that its parent was not?"""
        if not is_dir and is_temp_name(name):
            return True
        if self._names is not None and self._names.fullmatch(name):
            return True
        if is_dir and self._dir_names is not None and self._dir_names.fullmatch(name):
            return True
        if self._anchored is not None and self._anchored.fullmatch(rel):
            return True
        return is_dir and self._dir_anchored is not None and self._dir_anchored.fullmatch(rel) is not None

    def entries(self, path: str, rel: str) -> Iterator[tuple[str, str, bool]]:
        """(name, relative path, is_dir) of what a directory holds that is not ignored; OSError when unreadable.

        Names that are not UTF-8 are left out too: no JSON string can name them for a client.
        """
        with os.scandir(path) as listing:
            for entry in listing:
                child = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if _utf8(entry.name) and not self.ignored_entry(child, entry.name, is_dir):
                    yield entry.name, child, is_dir

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Is this path left out, looking at every segment (for events, which may come from anywhere)?"""
        if rel == "":
            return False
        if not is_dir and is_temp_name(rel.rpartition("/")[2]):
            return True  # a write in progress: its target's change is what gets reported
        parts = rel.split("/")
        last = len(parts) - 1
        for i, name in enumerate(parts):
            if self._names is not None and self._names.fullmatch(name):
                return True
            if (i < last or is_dir) and self._dir_names is not None and self._dir_names.fullmatch(name):
                return True
        if self._anchored is not None and self._anchored.fullmatch(rel):
            return True
        if self._dir_anchored_below is not None and self._dir_anchored_below.fullmatch(rel):
            return True
        return is_dir and self._dir_anchored is not None and self._dir_anchored.fullmatch(rel) is not None


def state_dir_rel(workspace: str, state_dir: str) -> str | None:
    """The state directory relative to the workspace, or None when it lies outside."""
    real = os.path.realpath(state_dir)
    if real == workspace or not real.startswith(workspace.rstrip(os.sep) + os.sep):
        return None
    return os.path.relpath(real, workspace).replace(os.sep, "/")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
