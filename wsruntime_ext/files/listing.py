"""Directory listings (API.md "Files", List): directories first, then by name, one bad entry never
fails the whole. Blocking: runs on the FileService's walker threads."""

from __future__ import annotations

import json
import mimetypes
import os
import stat
import time
from typing import Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.files.errors import os_error
from wsruntime_ext.paths import WorkspacePath, fd_inside_workspace, is_within, outside_workspace

DIR_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)

# Names Python's built-in table misses or gets wrong for a code workspace (.ts is not an MPEG stream here).
_MIME_OVERRIDES = {
    ".ts": "text/x-typescript",
    ".tsx": "text/x-typescript",
    ".mts": "text/x-typescript",
    ".cts": "text/x-typescript",
    ".jsx": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".rs": "text/x-rust",
    ".go": "text/x-go",
    ".java": "text/x-java",
    ".kt": "text/x-kotlin",
    ".rb": "text/x-ruby",
    ".php": "text/x-php",
    ".sh": "text/x-shellscript",
    ".bash": "text/x-shellscript",
    ".zsh": "text/x-shellscript",
    ".vue": "text/x-vue",
    ".svelte": "text/x-svelte",
    ".scss": "text/x-scss",
    ".sql": "application/sql",
    ".ipynb": "application/x-ipynb+json",
    ".lock": "text/plain",
    ".log": "text/plain",
    ".ini": "text/plain",
    ".cfg": "text/plain",
    ".env": "text/plain",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
}
# Python's built-in table only: the answer must not depend on the machine's /etc/mime.types.
_MIME_TABLE = mimetypes.MimeTypes(filenames=())
_MIME_CACHE: dict[str, str | None] = {}
_SECONDS_CACHE: dict[int, str] = {}


def guess_mime(name: str) -> str | None:
    """The media type for a file name, None when unknown (cached by suffix: listings ask 100k times)."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    before = name.rfind(".", 0, dot)
    key = name[before if before > 0 else dot :].lower()  # the last two suffixes decide (".tar.gz")
    try:
        return _MIME_CACHE[key]
    except KeyError:
        pass
    mime = _MIME_OVERRIDES.get(name[dot:].lower()) or _MIME_TABLE.guess_type("x" + key, strict=False)[0]
    if len(_MIME_CACHE) > 4096:
        _MIME_CACHE.clear()
    _MIME_CACHE[key] = mime
    return mime


def iso_time(seconds: float) -> str:
    """API.md's timestamp: ISO 8601 UTC with milliseconds."""
    whole = int(seconds // 1)
    millis = int((seconds - whole) * 1000)
    prefix = _SECONDS_CACHE.get(whole)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        if len(_SECONDS_CACHE) > 65536:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[whole] = prefix
    return f"{prefix}.{millis:03d}Z"


def list_directory(root: str, wp: WorkspacePath, hidden: bool = True, limit: int | None = None) -> bytes:
    """The listing as JSON bytes: directories first, then by name; ``limit`` cuts it (``truncated``).

    One entry that cannot be read (vanished, unreadable, a broken link,
    a name that is not UTF-8) never fails the whole listing.
    """
    try:
        st = os.stat(wp.real)
    except OSError as exc:
        raise os_error(exc, wp.rel) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ApiError(400, "not_a_directory", f"{wp.rel} is not a directory", path=wp.rel)
    items: list[tuple[bool, str, os.DirEntry[str]]] = []
    try:
        fd = os.open(wp.real, DIR_FLAGS)
    except OSError as exc:
        raise os_error(exc, wp.rel) from None
    try:
        if not fd_inside_workspace(fd, root):
            raise outside_workspace(wp.rel)
        # Through the checked descriptor: entries are stat'ed relative to it (fstatat), never by a path
        # that a concurrent rename could send elsewhere.
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    name = entry.name
                    if not hidden and name[:1] == ".":
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    items.append((not is_dir, name, entry))
        except OSError as exc:
            raise os_error(exc, wp.rel) from None
        items.sort(key=lambda item: (item[0], item[1]))
        total = len(items)
        truncated = limit is not None and total > limit
        if truncated:
            items = items[:limit]
        prefix = f"{wp.rel}/" if wp.rel else ""
        entries = [_entry(root, entry, prefix, fd, wp.real) for _, _, entry in items]
    finally:
        os.close(fd)
    body = {"path": wp.rel, "entries": entries, "total": total, "truncated": truncated}
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def _entry(root: str, item: os.DirEntry[str], prefix: str, dir_fd: int, directory: str) -> dict[str, Any]:
    name = item.name
    shown = name
    bad_name = False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8: shown, but cannot be named in a request
        shown = os.fsencode(name).decode("utf-8", "replace")
        bad_name = True
    try:
        st = item.stat(follow_symlinks=False)
    except OSError:
        entry: dict[str, Any] = {
            "name": shown,
            "path": prefix + shown,
            "type": "other",
            "size": 0,
            "modified": None,
        }
        return entry
    mode = st.st_mode
    if stat.S_ISREG(mode):
        entry = {
            "name": shown,
            "path": prefix + shown,
            "type": "file",
            "size": st.st_size,
            "modified": iso_time(st.st_mtime),
            "mime": guess_mime(name),
        }
    elif stat.S_ISDIR(mode):
        entry = {
            "name": shown,
            "path": prefix + shown,
            "type": "directory",
            "size": 0,
            "modified": iso_time(st.st_mtime),
        }
    elif stat.S_ISLNK(mode):
        entry = {"name": shown, "path": prefix + shown, "type": "symlink", "size": st.st_size}
        entry["modified"] = iso_time(st.st_mtime)
        try:
            entry["target"] = os.fsencode(os.readlink(name, dir_fd=dir_fd)).decode("utf-8", "replace")
        except OSError:
            entry["target"] = None
        entry["target_type"] = _target_type(root, os.path.join(directory, name))
    else:
        entry = {"name": shown, "path": prefix + shown, "type": "other", "size": st.st_size}
        entry["modified"] = iso_time(st.st_mtime)
    if bad_name:
        entry["invalid_name"] = True
    return entry


def _target_type(root: str, link: str) -> str | None:
    """What a symlink leads to — only when that is inside the workspace (None: broken or outside)."""
    real = os.path.realpath(link)
    if not is_within(root, real):
        return None
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return None
    return "directory" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
