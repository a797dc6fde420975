"""Parsers for git's machine-readable output, and the validation of names given to git.

Pure functions over bytes: no subprocess, no I/O. Everything is read from
NUL-separated formats (``status --porcelain=v2 -z``, ``log -z`` with
``%x00`` fields, ``for-each-ref`` with ``%00`` fields, ``diff --raw
--numstat -z``), so file names with spaces, quotes, tabs, newlines or
non-ASCII characters and commit messages with any text come back exactly.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

# Porcelain v2 letters → API.md's status words.
STATUS_WORDS = {
    "M": "modified",
    "A": "added",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type_changed",
    "U": "conflicted",
}
# The XY of an unmerged ("u") entry → which side did what.
CONFLICT_KINDS = {
    "DD": "both_deleted",
    "AU": "added_by_us",
    "UD": "deleted_by_them",
    "UA": "added_by_them",
    "DU": "deleted_by_us",
    "AA": "both_added",
    "UU": "both_modified",
}

# A branch name git accepts (``git check-ref-format --branch``), that ``git branch`` accepts
# (not ``HEAD``) and that no git command can read as an option (no leading ``-``). The same
# expression is the ``pattern`` of the OpenAPI schema, so the document and the server agree.
BRANCH_NAME_PATTERN = (
    r"^(?!-)(?!HEAD$)(?!@$)(?!/)(?!.*/$)(?!.*\.$)(?!.*\.\.)(?!.*//)(?!.*@\{)"
    r"(?!\.)(?!.*/\.)(?!.*\.lock/)(?!.*\.lock$)[^\x00-\x20\x7f~^:?*\[\\]+$"
)
_BRANCH_NAME = re.compile(BRANCH_NAME_PATTERN)
# A revision (a ref, a hash, ``HEAD~2``, ``main@{1}``): anything without control characters
# or spaces that does not start with ``-`` — git itself then says whether it names a commit.
REVISION_PATTERN = r"^(?!-)[^\x00-\x20\x7f]+$"
_REVISION = re.compile(REVISION_PATTERN)
# A remote's name: remote names may hold slashes; whether it exists is checked against ``git remote``.
REMOTE_NAME_PATTERN = REVISION_PATTERN
_REMOTE_NAME = _REVISION
# An author's name or email: no angle brackets or control characters, and something left once git
# strips its "crud" (spaces and . , : ; < > " ' \\ at either end) — else git refuses the identity.
PERSON_PATTERN = r"^[^<>\x00-\x1f\x7f]*[^<>\x00-\x20\x7f.,:;\"'\\][^<>\x00-\x1f\x7f]*$"
# A commit message: something besides the white space git strips, and no NUL (git refuses it).
MESSAGE_PATTERN = r"^[^\x00]*[^\x00 \t\n\r][^\x00]*$"


def is_branch_name(name: str) -> bool:
    return bool(_BRANCH_NAME.fullmatch(name))


def is_revision(text: str) -> bool:
    return bool(_REVISION.fullmatch(text))


def is_remote_name(name: str) -> bool:
    return bool(_REMOTE_NAME.fullmatch(name))


def decode(raw: bytes) -> str:
    """Bytes from git as text; names that are not UTF-8 keep a replacement character rather than fail."""
    return raw.decode("utf-8", "replace")


def iso_from_unix(seconds: str) -> str | None:
    """``1700000000`` → ``2023-11-14T22:13:20.000Z`` (API.md's timestamp format)."""
    try:
        stamp = datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- status ---------------------------------------------------------------------------


@dataclasses.dataclass
class StatusEntry:
    """One changed path of ``git status --porcelain=v2``, paths relative to the repository's top."""

    path: str
    index: str
    worktree: str
    orig_path: str | None = None
    kind: str = "changed"  # changed, renamed, unmerged, untracked, ignored
    submodule: bool = False  # a gitlink: a submodule or a nested repository committed as one

    @property
    def status(self) -> str:
        if self.kind == "untracked":
            return "untracked"
        if self.kind == "ignored":
            return "ignored"
        if self.kind == "unmerged":
            return "conflicted"
        letter = self.index if self.index != "." else self.worktree
        return STATUS_WORDS.get(letter, "modified")

    @property
    def staged(self) -> bool:
        return self.kind in ("changed", "renamed") and self.index != "."

    @property
    def conflict(self) -> str | None:
        return CONFLICT_KINDS.get(self.index + self.worktree) if self.kind == "unmerged" else None


@dataclasses.dataclass
class Status:
    """The branch headers and the entries of one ``git status --porcelain=v2 --branch -z``."""

    oid: str | None = None  # None before the first commit
    head: str | None = None  # None when detached
    upstream: str | None = None
    ahead: int = 0
    behind: int = 0
    upstream_gone: bool = False
    stashes: int = 0
    entries: list[StatusEntry] = dataclasses.field(default_factory=list)


def parse_status(raw: bytes) -> Status:
    """Parse ``git status --porcelain=v2 --branch --show-stash -z``."""
    status = Status()
    tokens = raw.split(b"\0")
    has_ab = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token:
            continue
        kind = token[:2]
        if kind == b"# ":
            key, _, value_raw = token[2:].partition(b" ")
            value = decode(value_raw)
            if key == b"branch.oid":
                status.oid = None if value == "(initial)" else value
            elif key == b"branch.head":
                status.head = None if value == "(detached)" else value
            elif key == b"branch.upstream":
                status.upstream = value
            elif key == b"branch.ab":
                has_ab = True
                ahead, _, behind = value.partition(" ")
                status.ahead, status.behind = abs(int(ahead or 0)), abs(int(behind or 0))
            elif key == b"stash":
                status.stashes = int(value or 0)
        elif kind == b"1 ":
            fields = token.split(b" ", 8)
            xy, sub = decode(fields[1]), fields[2]
            status.entries.append(
                StatusEntry(decode(fields[8]), xy[0], xy[1], submodule=sub.startswith(b"S"), kind="changed")
            )
        elif kind == b"2 ":
            fields = token.split(b" ", 9)
            xy, sub = decode(fields[1]), fields[2]
            orig = decode(tokens[i]) if i < len(tokens) else None
            i += 1
            status.entries.append(
                StatusEntry(decode(fields[9]), xy[0], xy[1], orig, kind="renamed", submodule=sub.startswith(b"S"))
            )
        elif kind == b"u ":
            fields = token.split(b" ", 10)
            xy, sub = decode(fields[1]), fields[2]
            status.entries.append(
                StatusEntry(decode(fields[10]), xy[0], xy[1], kind="unmerged", submodule=sub.startswith(b"S"))
            )
        elif kind == b"? ":
            status.entries.append(StatusEntry(decode(token[2:]), "?", "?", kind="untracked"))
        elif kind == b"! ":
            status.entries.append(StatusEntry(decode(token[2:]), "!", "!", kind="ignored"))
    # An upstream without ahead/behind counts is configured but its remote branch is gone.
    status.upstream_gone = status.upstream is not None and not has_ab
    return status


# -- log --------------------------------------------------------------------------------

# Fields of one commit, each followed by NUL; with -z every commit is followed by one more NUL.
LOG_FIELDS = ("%H", "%h", "%an", "%ae", "%at", "%cn", "%ce", "%ct", "%P", "%D", "%s", "%b")
LOG_FORMAT = "tformat:" + "%x00".join(LOG_FIELDS)


def parse_log(raw: bytes) -> list[dict[str, Any]]:
    """Parse ``git log -z --format=LOG_FORMAT`` into API.md's commit objects."""
    tokens = raw.split(b"\0")
    width = len(LOG_FIELDS)
    commits = []
    for start in range(0, len(tokens) - width + 1, width):
        f = [decode(t) for t in tokens[start : start + width]]
        h, short, an, ae, at, cn, ce, ct, parents, refs, subject, body = f
        commits.append(
            {
                "hash": h.lstrip("\n"),
                "short_hash": short,
                "author_name": an,
                "author_email": ae,
                "date": iso_from_unix(at),
                "committer_name": cn,
                "committer_email": ce,
                "committer_date": iso_from_unix(ct),
                "subject": subject,
                "body": body.rstrip("\n"),
                "parents": parents.split(),
                "refs": [r for r in refs.split(", ") if r],
            }
        )
    return commits


# -- refs -------------------------------------------------------------------------------

REF_FIELDS = (
    "%(refname)",
    "%(objectname)",
    "%(upstream)",
    "%(upstream:short)",
    "%(upstream:track,nobracket)",
    "%(HEAD)",
    "%(symref)",
    "%(committerdate:unix)",
    "%(subject)",
)
REF_FORMAT = "%00".join(REF_FIELDS) + "%00"


@dataclasses.dataclass
class Ref:
    """One line of ``git for-each-ref --format=REF_FORMAT``."""

    refname: str
    commit: str
    upstream_ref: str
    upstream: str
    track: str
    head: bool
    symref: str
    date: str | None
    subject: str

    @property
    def ahead_behind(self) -> tuple[int, int, bool]:
        """(ahead, behind, gone) from ``ahead 1, behind 2`` / ``gone`` / ``""``."""
        if self.track == "gone":
            return 0, 0, True
        ahead = re.search(r"ahead (\d+)", self.track)
        behind = re.search(r"behind (\d+)", self.track)
        return int(ahead.group(1)) if ahead else 0, int(behind.group(1)) if behind else 0, False


def parse_refs(raw: bytes) -> list[Ref]:
    tokens = raw.split(b"\0")
    width = len(REF_FIELDS)  # each field ends with NUL; git's newline after a record starts the next one
    refs = []
    for start in range(0, len(tokens) - width + 1, width):
        f = [decode(t) for t in tokens[start : start + width]]
        refs.append(
            Ref(
                refname=f[0].lstrip("\n"),
                commit=f[1],
                upstream_ref=f[2],
                upstream=f[3],
                track=f[4],
                head=f[5] == "*",
                symref=f[6],
                date=iso_from_unix(f[7]) if f[7] else None,
                subject=f[8],
            )
        )
    return refs


# -- diff -------------------------------------------------------------------------------


def parse_raw_numstat(raw: bytes) -> list[dict[str, Any]]:
    """Parse ``git diff --raw --numstat -z -M``: the raw records first, then one numstat record per file."""
    tokens = raw.split(b"\0")
    files: list[dict[str, Any]] = []
    i = 0
    # Raw records: ":mode mode sha sha STATUS" then one path, or two for renames and copies.
    while i < len(tokens) and tokens[i].startswith(b":"):
        meta = decode(tokens[i]).split()
        letter = meta[4][:1] if len(meta) > 4 else "M"
        entry: dict[str, Any]
        if letter in ("R", "C"):
            entry = {"path": decode(tokens[i + 2]), "orig_path": decode(tokens[i + 1])}
            i += 3
        else:
            entry = {"path": decode(tokens[i + 1])}
            i += 2
        entry["status"] = STATUS_WORDS.get(letter, "modified")
        entry.update(additions=0, deletions=0, binary=False)
        files.append(entry)
    # Numstat records, in the same order: "added\tdeleted\tpath", or "added\tdeleted\t" + two paths.
    n = 0
    while i < len(tokens) and n < len(files):
        token = tokens[i]
        if not token:
            i += 1
            continue
        added, deleted, path = token.split(b"\t", 2)
        i += 1 if path else 3
        entry = files[n]
        n += 1
        if added == b"-" and deleted == b"-":
            entry["binary"] = True
        else:
            entry["additions"], entry["deletions"] = int(added), int(deleted)
    return files


# -- push and progress ------------------------------------------------------------------


@dataclasses.dataclass
class PushedRef:
    """One ref line of ``git push --porcelain``."""

    flag: str  # " " fast-forward, "+" forced, "-" deleted, "*" new, "!" rejected, "=" up to date
    source: str
    destination: str
    summary: str

    @property
    def result(self) -> str:
        return {
            " ": "fast_forward",
            "+": "forced",
            "-": "deleted",
            "*": "created",
            "!": "rejected",
            "=": "up_to_date",
        }.get(self.flag, "unknown")


def parse_push_porcelain(raw: bytes) -> list[PushedRef]:
    refs = []
    for line in decode(raw).splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and len(parts[0]) == 1:
            source, _, destination = parts[1].partition(":")
            refs.append(PushedRef(parts[0], source, destination, parts[2]))
    return refs


_PROGRESS = re.compile(
    r"^(?:remote: )?(?P<phase>[A-Za-z][A-Za-z ]*?):\s+(?P<percent>\d{1,3})%(?: \((?P<done>\d+)/(?P<total>\d+)\))?"
)


def parse_progress(line: str) -> dict[str, Any]:
    """``Writing objects:  45% (9/20)`` → phase, percent, done, total (what is there)."""
    event: dict[str, Any] = {"line": line}
    match = _PROGRESS.match(line)
    if match:
        event["phase"] = match.group("phase")
        event["percent"] = int(match.group("percent"))
        if match.group("total"):
            event["done"], event["total"] = int(match.group("done")), int(match.group("total"))
    return event
