"""Agent sessions on disk (API.md "Agent sessions": kept in the state directory, they survive a restart).

Each session has a directory ``<state_dir>/agent-sessions/<id>/`` holding
``session.json`` (the session object, replaced atomically) and
``messages.jsonl`` (every AgentMessage, one JSON line each, appended as it
arrives). A line cut short by a crash is dropped when read back.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import IO, Any

from wsruntime_ext.paths import atomic_write
from wsruntime_ext.temps import TempRegistry

log = logging.getLogger("wsruntime.agents")

SESSION_ID = re.compile(r"^as_[0-9a-z]{6,40}$")


class MessageLog:
    """One session's ``messages.jsonl``, open for appending; ``flush`` after each batch of lines."""

    def __init__(self, path: str) -> None:
        # Buffered: a write is a memory copy; the kernel sees it at flush, once per batch read from the agent.
        self._file: IO[bytes] | None = open(path, "ab", buffering=1 << 16)

    def append(self, data: bytes) -> None:
        if self._file is not None:
            self._file.write(data + b"\n")

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                log.error("cannot write agent messages: %s", exc)

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


class SessionStore:
    """Reads and writes the records and message logs under the state directory (blocking: off the IOLoop)."""

    def __init__(self, state_dir: str, temps: TempRegistry | None = None) -> None:
        self.root = os.path.join(state_dir, "agent-sessions")
        self.temps = temps

    def directory(self, session_id: str) -> str:
        return os.path.join(self.root, session_id)

    def create(self, record: dict[str, Any]) -> MessageLog:
        """Make the session's directory, write its record, open its message log."""
        os.makedirs(self.directory(record["id"]), exist_ok=True)
        self.save(record)
        return self.open_log(record["id"])

    def open_log(self, session_id: str) -> MessageLog:
        """The message log, for appending; a line torn by a crash is cut off first, so appends start clean."""
        path = os.path.join(self.directory(session_id), "messages.jsonl")
        try:
            with open(path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size:
                    f.seek(max(0, size - (1 << 20)))
                    tail = f.read()
                    if not tail.endswith(b"\n"):
                        cut = tail.rfind(b"\n")
                        f.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 1 << 20 else size))
        except FileNotFoundError:
            pass
        return MessageLog(path)

    def save(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8")
        atomic_write(os.path.join(self.directory(record["id"]), "session.json"), data, temps=self.temps)

    def load_all(self) -> list[dict[str, Any]]:
        """Every stored session record (unreadable ones are skipped and logged)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        records = []
        for name in names:
            if not SESSION_ID.match(name):
                continue
            try:
                with open(os.path.join(self.root, name, "session.json"), encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError) as exc:
                log.warning("skipping agent session %s: %s", name, exc)
                continue
            if isinstance(record, dict) and record.get("id") == name:
                records.append(record)
        return records

    def read_messages(self, session_id: str) -> list[bytes]:
        """The stored messages as UTF-8 JSON, in order; a torn last line is dropped."""
        path = os.path.join(self.directory(session_id), "messages.jsonl")
        try:
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        texts: list[bytes] = []
        for line in lines:
            if not line:
                continue
            try:
                seq = json.loads(line)["seq"]
            except (ValueError, KeyError, TypeError):
                log.warning("agent session %s: dropping a damaged message line", session_id)
                continue
            if seq == len(texts) + 1:
                texts.append(line)
        return texts
