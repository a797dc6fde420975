"""Which version of a CLI is installed, read from its npm package where it has one: no Node is started.

An npm-installed CLI's executable is a symlink into its package
(``/usr/bin/openspec`` → ``…/node_modules/@fission-ai/openspec/bin/openspec.js``),
and that package's ``package.json`` holds the version: reading it takes
microseconds, where ``openspec --version`` starts Node (about a second on two
busy cores). Everything else — native binaries, scripts, a package.json that
does not plainly own the executable — is probed with ``--version``
(:func:`wsruntime_ext.procs.version_output`, cached per installed file).

Checked against the CLIs' own ``--version`` (claude 2.1.197, openspec 1.13.2,
codex 0.171.0, gemini 0.61.0, qwen 0.24.4, opencode 1.18.33): every wrapper
package's version is what its CLI prints. ``claude`` and ``opencode`` are
native binaries, but their install scripts copy the platform package's binary
over ``bin/claude.exe`` / ``bin/opencode.exe`` of the wrapper, whose
``optionalDependencies`` pin that platform package to the wrapper's own
version; ``codex.js`` runs ``@openai/codex-linux-x64``, installed under an npm
alias (its package.json says ``0.171.0-linux-x64``): the wrapper's version
is the one printed, and the alias is never read (its name does not match).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

# The longest an endpoint that reports versions waits for a running ``--version`` probe before it answers
# with what it knows (and ``detecting: true``); /health never waits.
DETECTION_WAIT_S = 5.0

_MANIFEST_LIMIT = 1 << 20
_SEMVER = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?\Z")


def package_root(path: str) -> tuple[str, str] | None:
    """(folder, npm name) of the package ``path`` lies in: the innermost ``node_modules/[@scope/]name``."""
    parts = path.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] != "node_modules":
            continue
        size = 2 if parts[i + 1].startswith("@") else 1
        if i + size + 1 >= len(parts) or not all(parts[i + 1 : i + size + 1]):
            return None  # the path is the package folder itself, or a bare scope
        return os.sep.join(parts[: i + size + 1]), "/".join(parts[i + 1 : i + size + 1])
    return None


def _manifest(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(_MANIFEST_LIMIT + 1)[:_MANIFEST_LIMIT])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def npm_package_version(executable: str) -> str | None:
    """The version of the npm package whose ``bin`` is ``executable`` (after symlinks), or None.

    The nearest ``package.json`` above the resolved file, never above the package's own folder, counts only
    when its ``name`` is the folder's npm name and its ``bin`` maps a command to that very file: a
    package.json that merely sits above it says nothing of what the file prints.
    """
    real = os.path.realpath(executable)
    found = package_root(real)
    if found is None:
        return None
    root, name = found
    folder = os.path.dirname(real)
    while True:
        manifest = _manifest(os.path.join(folder, "package.json"))
        if manifest is not None and "name" in manifest:
            break  # a package.json without a name (``{"type": "module"}``) only sets how its folder loads
        if folder == root:
            return None
        folder = os.path.dirname(folder)
    if folder != root or manifest.get("name") != name:
        return None
    bin_field = manifest.get("bin")  # "bin/cli.js" (the command is the package's name) or {command: file}
    if isinstance(bin_field, str):
        targets = [bin_field]
    elif isinstance(bin_field, dict):
        targets = list(bin_field.values())
    else:
        targets = []
    owned = any(isinstance(t, str) and os.path.realpath(os.path.join(root, t)) == real for t in targets)
    version = manifest.get("version")
    if not owned or not isinstance(version, str) or not _SEMVER.match(version) or not interpreter_found(real):
        return None
    return version


def interpreter_found(path: str) -> bool:
    """Whether the interpreter of a ``#!`` script is there (Node may be missing: then only a probe can tell)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return True  # a native binary
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-") and "=" not in w]  # env -S node --flag, VAR=1
        return bool(words) and shutil.which(words[0]) is not None
    return bool(words) and os.access(words[0], os.X_OK)
