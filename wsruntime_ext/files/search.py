"""``GET /api/v1/search`` (API.md "Files", Search — an extension): contents and names, bounded.

Content search runs ripgrep when it is installed and a Python walk
otherwise; both give the same answers for the same workspace: every file
under the directory (hidden ones too, ``.gitignore`` not applied), never
following symlinks, skipping ``.git/``, ``node_modules/``, the runtime's
state directory, binary files (a NUL byte) and files over 50 MiB, in path
order (siblings by name, depth first), at most ``limit`` matches and
``timeout`` seconds. ``glob`` uses ripgrep's (gitignore) syntax: without a
``/`` it matches the file name anywhere, with one the path below the
searched directory; ``*`` stops at ``/``, ``**`` does not, ``{a,b}``
alternates, a leading ``!`` excludes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from typing import Any, Callable

from wsruntime_ext.base import ApiError, log
from wsruntime_ext.globs import glob_to_regex
from wsruntime_ext.paths import WorkspacePath, is_within
from wsruntime_ext.procs import child_environment

SKIPPED_DIRS = (".git", "node_modules")
MAX_FILE_SIZE = 50 << 20
MAX_TEXT = 500  # characters of a matching line returned
MAX_JSON_LINE = 4 << 20  # longer rg messages (a match in a huge minified line) are read by their two ends
LONG_HEAD = 64 << 10  # what is kept of the start of such a message: its path and the start of its line
LONG_TAIL = 4 << 10  # ... and of its end: the line number
BINARY_SNIFF = 8192


@dataclasses.dataclass(frozen=True)
class SearchQuery:
    """What to look for, where, and the bounds."""

    base: WorkspacePath
    text: str | None
    glob: str | None
    regex: bool = False
    ignore_case: bool = False
    limit: int = 200
    timeout: float = 20.0


class GlobFilter:
    """One glob as ripgrep applies it to the files below the searched directory."""

    def __init__(self, glob: str) -> None:
        self.negated = glob.startswith("!")
        pattern = glob[1:] if self.negated else glob
        self.anchored = "/" in pattern.rstrip("/")
        pattern = pattern.lstrip("/") if self.anchored else pattern
        if not pattern:
            raise ApiError(400, "invalid_glob", "Empty glob", glob=glob)
        try:
            self.regex = re.compile(glob_to_regex(pattern) + r"\Z", re.DOTALL)
        except (ValueError, re.error) as e:  # an open { / what re refuses
            raise ApiError(400, "invalid_glob", f"Invalid glob: {e}", glob=glob) from None

    def accepts(self, rel: str, name: str) -> bool:
        matched = bool(self.regex.match(rel if self.anchored else name))
        return not matched if self.negated else matched


class SearchService:
    """Runs searches: ripgrep (``rg``) when installed, else a Python walk in the thread pool."""

    def __init__(self, root: str, state_dir: str, run_blocking: Callable[..., Any], rg: str | None = None) -> None:
        self.root = root
        self.state_dir = state_dir
        self.run_blocking = run_blocking
        self.rg = rg if rg is not None else shutil.which("rg")
        self.state_rel = os.path.relpath(state_dir, root) if is_within(root, state_dir) else None

    @property
    def backend(self) -> str:
        return "rg" if self.rg else "python"

    def _pattern(self, query: SearchQuery) -> re.Pattern[str] | None:
        if query.text is None:
            return None
        source = query.text if query.regex else re.escape(query.text)
        try:
            pattern = re.compile(source, re.IGNORECASE if query.ignore_case else 0)
        except re.error as exc:
            raise ApiError(400, "invalid_regex", f"Invalid regular expression: {exc}") from None
        if query.regex:
            unsupported = _beyond_rg(source)
            if unsupported:  # both backends take the same patterns: ripgrep's (Rust) regex has no such thing
                raise ApiError(400, "invalid_regex", f"Invalid regular expression: {unsupported} are not supported")
        return pattern

    async def search(self, query: SearchQuery) -> dict[str, Any]:
        """``{"matches": [{path, line, text}], "truncated", "timed_out"}``."""
        pattern = self._pattern(query)  # validates the regex the same way for both backends
        glob = GlobFilter(query.glob) if query.glob else None
        if self.rg:
            return await self._search_rg(query)
        return await self.run_blocking(self._search_python, query, pattern, glob)  # type: ignore[no-any-return]

    # -- the Python walk ------------------------------------------------------------------------

    def _walk(self, top: str, rel_top: str) -> Iterator[tuple[str, str, str]]:
        """(absolute path, path below ``top``, name) of regular files, depth first, siblings by name."""
        try:
            with os.scandir(top) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{rel_top}/{entry.name}" if rel_top else entry.name
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if entry.name in SKIPPED_DIRS or entry.path == self.state_dir:
                        continue
                    yield from self._walk(entry.path, rel)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, rel, entry.name
            except OSError:
                continue

    def _search_python(
        self, query: SearchQuery, pattern: re.Pattern[str] | None, glob: GlobFilter | None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + query.timeout
        matches: list[dict[str, Any]] = []
        truncated = timed_out = False
        base = query.base
        prefix = f"{base.rel}/" if base.rel else ""
        if os.path.isfile(base.real):
            name = os.path.basename(base.real)
            files: Iterator[tuple[str, str, str]] = iter([(base.real, name, name)])
            prefix = f"{os.path.dirname(base.rel)}/" if "/" in base.rel else ""
        else:
            files = self._walk(base.real, "")
        for path, rel, name in files:
            if time.monotonic() > deadline:
                truncated = timed_out = True
                break
            if glob is not None and not glob.accepts(rel, name):
                continue
            if pattern is None:
                if len(matches) >= query.limit:
                    truncated = True
                    break
                matches.append({"path": prefix + rel, "line": None, "text": None})
                continue
            if self._search_file(path, prefix + rel, pattern, matches, query.limit):
                truncated = True
                break
        return {"matches": matches, "truncated": truncated, "timed_out": timed_out}

    @staticmethod
    def _search_file(path: str, rel: str, pattern: re.Pattern[str], out: list[dict[str, Any]], limit: int) -> bool:
        """Append the file's matching lines; True when the limit was hit with more to come."""
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_SIZE:
                    return False
                if b"\0" in f.read(BINARY_SNIFF):
                    return False
                f.seek(0)
                found: list[dict[str, Any]] = []
                for number, raw in enumerate(f, 1):
                    if b"\0" in raw:
                        return False  # binary after all: like ripgrep, drop the file
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if pattern.search(line):
                        if len(out) + len(found) >= limit:
                            out.extend(found)
                            return True
                        found.append({"path": rel, "line": number, "text": line[:MAX_TEXT]})
                out.extend(found)
        except OSError:
            pass
        return False

    # -- ripgrep --------------------------------------------------------------------------------

    def _rg_args(self, query: SearchQuery) -> list[str]:
        assert self.rg is not None
        args = [self.rg, "--sort", "path", "--hidden", "--no-ignore", "--no-config", "--max-filesize", "50M"]
        for skipped in SKIPPED_DIRS:
            args += ["--glob", f"!{skipped}"]
        if query.glob:
            args += ["--glob", query.glob]
        if query.text is None:
            args.append("--files")
        else:
            args += ["--json", "--no-messages"]
            if not query.regex:
                args.append("--fixed-strings")
            if query.ignore_case:
                args.append("--ignore-case")
            args += ["--regexp", query.text]
        args += ["--", query.base.rel or "."]
        return args

    async def _search_rg(self, query: SearchQuery) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            *self._rg_args(query),
            cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env={**child_environment(), "RIPGREP_CONFIG_PATH": ""},
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.ensure_future(proc.stderr.read())  # drained alongside, so rg never blocks on it
        matches: list[dict[str, Any]] = []
        state_rel = self.state_rel

        async def collect() -> bool:
            """Read matches until rg ends (False) or the limit is passed (True)."""
            assert proc.stdout is not None
            async for line in _lines(proc.stdout):
                match = self._parse_rg_line(line, query.text is None)
                if match is None:
                    continue
                if state_rel and (match["path"] == state_rel or match["path"].startswith(state_rel + "/")):
                    continue
                if len(matches) >= query.limit:
                    return True
                matches.append(match)
            return False

        timed_out = False
        try:
            truncated = await asyncio.wait_for(collect(), query.timeout)
        except asyncio.TimeoutError:
            truncated = timed_out = True
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        code = await proc.wait()
        stderr = (await stderr_task)[:4096]
        if code == 2 and not matches and not truncated:
            message = stderr.decode("utf-8", "replace").strip()
            if "multiline" in message.lower():
                # A pattern with a line break: no line holds one, as the Python walk finds (one line at a time).
                return {"matches": [], "truncated": False, "timed_out": False}
            if "regex" in message.lower():
                raise ApiError(400, "invalid_regex", f"Invalid regular expression: {message}")
            if "glob" in message.lower():
                raise ApiError(400, "invalid_glob", f"Invalid glob: {message}")
            log.warning("rg failed (%s): %s", code, message)
        return {"matches": matches, "truncated": truncated, "timed_out": timed_out}

    @staticmethod
    def _parse_rg_line(line: bytes | LongLine, names_only: bool) -> dict[str, Any] | None:
        if isinstance(line, LongLine):
            return line.match()
        if names_only:
            path = os.fsdecode(line.rstrip(b"\n"))
            path = path[2:] if path.startswith("./") else path
            return {"path": _printable(path), "line": None, "text": None}
        try:
            message = json.loads(line)
        except ValueError:
            return None
        if message.get("type") != "match":
            return None
        data = message["data"]
        path = _rg_text(data.get("path", {}))
        text = _rg_text(data.get("lines", {})).rstrip("\r\n")
        path = path[2:] if path.startswith("./") else path
        return {"path": path, "line": data.get("line_number"), "text": text[:MAX_TEXT]}


def _printable(text: str) -> str:
    return os.fsencode(text).decode("utf-8", "replace")


def _rg_text(value: dict[str, Any]) -> str:
    """ripgrep's ``{"text": ...}`` or, for bytes that are not UTF-8, ``{"bytes": base64}``."""
    if "text" in value:
        return str(value["text"])
    try:
        return base64.b64decode(value.get("bytes", "")).decode("utf-8", "replace")
    except ValueError:
        return ""


@dataclasses.dataclass
class LongLine:
    """An rg message longer than MAX_JSON_LINE (a match in a huge minified line): its two ends only."""

    head: bytes
    tail: bytes

    _PATH = re.compile(rb'^\{"type":"match","data":\{"path":\{"(text|bytes)":"((?:[^"\\]|\\.)*)"\}')
    _LINE = re.compile(rb'"lines":\{"(text|bytes)":"')
    _NUMBER = re.compile(rb'"line_number":(\d+)')

    def match(self) -> dict[str, Any] | None:
        """The match it reports, with the start of its line as the text (as the Python walk gives it)."""
        found = self._PATH.match(self.head)
        numbers = self._NUMBER.findall(self.tail)
        if found is None or not numbers:
            return None
        path = _rg_text({found.group(1).decode(): _json_string(found.group(2))})
        path = path[2:] if path.startswith("./") else path
        text = ""
        lines = self._LINE.search(self.head, found.end())
        if lines is not None:
            start = lines.end()
            text = _rg_text({lines.group(1).decode(): _json_string(self.head[start : start + 8 * MAX_TEXT])})
        return {"path": path, "line": int(numbers[-1]), "text": text[:MAX_TEXT]}


_STRING_BODY = re.compile(rb'(?:[^"\\]|\\.)*')  # a JSON string's body, up to its closing quote


def _json_string(body: bytes) -> str:
    """The value of a JSON string from its raw body, which may be cut anywhere (even inside an escape)."""
    found = _STRING_BODY.match(body)
    body = found.group(0) if found else b""
    for cut in range(len(body), max(-1, len(body) - 13), -1):  # 12: a cut surrogate pair's escapes
        try:
            value = str(json.loads(b'"' + body[:cut] + b'"'))
        except ValueError:
            continue
        return value.encode("utf-8", "ignore").decode("utf-8")  # half a surrogate pair: no UTF-8 form
    return ""


async def _lines(stream: asyncio.StreamReader) -> Any:
    """Lines of a stream, however long: a line over MAX_JSON_LINE comes as a LongLine (its two ends)."""
    pending = bytearray()
    head: bytes | None = None  # set while in a line over MAX_JSON_LINE
    tail = b""
    while True:
        chunk = await stream.read(1 << 16)
        if not chunk:
            if head is not None:
                yield LongLine(head, tail)
            elif pending:
                yield bytes(pending)
            return
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline == -1:
                if head is not None:
                    tail = (tail + chunk[start:])[-LONG_TAIL:]
                else:
                    pending += chunk[start:]
                    if len(pending) > MAX_JSON_LINE:
                        head, tail = bytes(pending[:LONG_HEAD]), bytes(pending[-LONG_TAIL:])
                        pending.clear()
                break
            if head is not None:
                yield LongLine(head, (tail + chunk[start:newline])[-LONG_TAIL:])
                head, tail = None, b""
            else:
                pending += chunk[start:newline]
                yield bytes(pending)
            pending.clear()
            start = newline + 1


def _beyond_rg(pattern: str) -> str | None:
    """What of a regex that Python takes ripgrep's Rust regex does not: look-around, backreferences."""
    try:
        import re._parser as parser  # type: ignore[import-not-found]  # CPython 3.11+
    except ImportError:  # pragma: no cover (3.9, 3.10)
        import sre_parse as parser
    try:
        parsed = parser.parse(pattern)
    except Exception:  # already compiled above: not expected
        return None
    names = {str(op) for op, _ in _opcodes(parsed)}
    if names & {"ASSERT", "ASSERT_NOT"}:
        return "look-around assertions"
    if names & {"GROUPREF", "GROUPREF_EXISTS"}:
        return "backreferences"
    return None


def _opcodes(parsed: Any) -> Iterator[tuple[Any, Any]]:
    for op, arg in parsed:
        yield op, arg
        for item in arg if isinstance(arg, (list, tuple)) else ():
            if isinstance(item, (list, tuple)):
                for sub in item:
                    if hasattr(sub, "data") or isinstance(sub, list):
                        yield from _opcodes(sub)
            elif hasattr(item, "data"):
                yield from _opcodes(item)
