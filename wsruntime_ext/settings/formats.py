"""The file formats of the agents' settings: TOML (Codex, through tomlkit: comments, order and tables kept),
JSON with comments (jsonc.py) and JSON — read, and rewritten changing only what differs."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Callable

import tomlkit
import tomlkit.exceptions

from wsruntime_ext.settings import jsonc
from wsruntime_ext.settings.service import Loaded


def plain(value: Any) -> Any:
    """tomlkit's values as JSON's (dates and times become ISO strings)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def parse_toml(text: str) -> dict[str, Any]:
    try:
        return plain(tomlkit.parse(text).unwrap())  # type: ignore[no-any-return]
    except tomlkit.exceptions.ParseError as exc:
        raise FormatError(str(exc).split(" at line ")[0], exc.line, exc.col + 1) from None


class FormatError(ValueError):
    def __init__(self, msg: str, line: int, column: int) -> None:
        super().__init__(msg)
        self.msg, self.lineno, self.colno = msg, line, column


def toml_edit(container: Any, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Change a tomlkit container from ``old`` to ``new`` key by key; untouched keys keep their text."""
    for key in list(old):
        if key not in new:
            del container[key]
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        was_table = key in old and isinstance(old[key], dict)
        if was_table and isinstance(value, dict) and value and hasattr(container[key], "items"):
            toml_edit(container[key], old[key], value)
            continue
        if was_table:
            # A table becoming a value (or empty) is added anew: in place, tomlkit would leave a key under the
            # table header before it, or an emptied super-table would vanish.
            del container[key]
        container[key] = tomlkit.table() if value == {} and was_table else value


def render(fmt: str, loaded: Loaded, new: dict[str, Any]) -> bytes:
    """The new text of a file that held ``loaded`` and now holds ``new``, changing only what differs."""
    text = loaded.raw.decode("utf-8") if loaded.exists and loaded.error is None else ""
    if fmt == "toml":
        doc = tomlkit.parse(text) if text.strip() else tomlkit.document()
        toml_edit(doc, loaded.data if text.strip() else {}, new)
        return tomlkit.dumps(doc).encode("utf-8")
    if fmt == "jsonc":
        return jsonc.edit(text, new).encode("utf-8") if text.strip() else json_bytes(new)
    return json_bytes(new)


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parser_for(fmt: str) -> Callable[[str], Any]:
    return parse_toml if fmt == "toml" else jsonc.parse if fmt == "jsonc" else json.loads


def qwen_approval_hash(entry: dict[str, Any]) -> str:
    """Qwen Code's approval hash of a server entry (AGENT-SETTINGS.md §3): sorted, compact JSON, sha256."""
    config = {k: v for k, v in entry.items() if k not in ("scope", "description", "extensionName")}
    text = json.dumps(config, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
