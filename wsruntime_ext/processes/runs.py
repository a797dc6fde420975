"""Runs on disk: the record and the pipe output log of a script run or a process, bounded in size.

Each run has a directory ``<state_dir>/<kind>/<id>/`` (``script-runs/sr_…``,
``processes/proc_…``) holding ``run.json`` (the record, replaced atomically)
and its stdout/stderr as
segments ``out-<first seq>.jsonl``: one line per output frame, exactly the
JSON that the WebSocket sends (``{"type":"output","seq":N,"stream","data"}``).
Output is appended as it arrives and never held in memory; once the
segments together pass the output limit the oldest segment is deleted, and
readers that wanted what it held get an ``output_dropped`` marker instead.

The writer (:class:`OutputLog`) runs on the IOLoop (buffered appends, one
flush per chunk read from the child); the readers (:func:`read_frames`,
:func:`output_tail`, :class:`RunStore`) block and run in the thread pool.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from typing import IO, Any, Callable

from wsruntime_ext.paths import atomic_write
from wsruntime_ext.websocket import text_frame_header

_encode_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
_JSON_PLAIN = bytes(c for c in range(32, 127) if c not in b'"\\')  # ASCII that a JSON string holds as it is

log = logging.getLogger("wsruntime.processes")

_SEGMENT = re.compile(r"^out-(\d{12})\.jsonl$")
_SEQ = re.compile(rb'^\{"type":"output","seq":(\d+),')
MIN_SEGMENT = 64 << 10
SEGMENTS_PER_LIMIT = 8


def segment_name(first_seq: int) -> str:
    return f"out-{first_seq:012d}.jsonl"


def frame_seq(line: bytes) -> int | None:
    match = _SEQ.match(line)
    return int(match.group(1)) if match else None


class OutputLog:
    """A run's output segments, for appending (IOLoop side); the oldest segment goes past ``limit`` bytes."""

    def __init__(self, directory: str, limit: int, segments: list[tuple[int, int]] | None = None) -> None:
        self.directory = directory
        self.limit = limit
        self.segment_size = max(MIN_SEGMENT, limit // SEGMENTS_PER_LIMIT)
        self.segments: list[tuple[int, int]] = list(segments or [])  # (first seq, size), oldest first
        self.dropped_bytes = 0  # output data (UTF-8 bytes) no longer on disk
        self.dropped_frames = 0
        self.error: str | None = None
        self._file: IO[bytes] | None = None

    @property
    def first_seqs(self) -> list[int]:
        return [first for first, _ in self.segments]

    def append(self, seq: int, stream: str, data: str) -> bytes:
        """One output frame: written to the newest segment (a new one when it is full).

        Returns it as a WebSocket text frame (see ``websocket.text_frame``), whose payload is the line stored.
        """
        return self._append(seq, stream, _encode_string(data).encode("utf-8", "surrogatepass"))

    def append_ascii(self, seq: int, stream: str, data: bytes) -> bytes | None:
        """:meth:`append` of ASCII text, without decoding it, when JSON escapes at most its newlines and tabs
        (the common case, and 4 times faster than escaping a str); None (nothing done) otherwise."""
        special = data.translate(None, _JSON_PLAIN)
        if special:
            if special.translate(None, b"\n\r\t"):
                return None
            data = data.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t")
        return self._append(seq, stream, b'"', data, b'"')

    def _append(self, seq: int, stream: str, *text: bytes) -> bytes:
        # Exactly json.dumps({"type", "seq", "stream", "data"}, ensure_ascii=False, separators=(",", ":")),
        # built without the dict walk and framed in the same copy: this runs once per chunk of output.
        prefix = b'{"type":"output","seq":%d,"stream":"%s","data":' % (seq, stream.encode())
        size = len(prefix) + sum(len(part) for part in text) + 1
        frame = b"".join((text_frame_header(size), prefix, *text, b"}"))
        line = memoryview(frame)[len(frame) - size :]
        try:
            if self._file is None or self.segments[-1][1] >= self.segment_size:
                self._start_segment(seq)
            assert self._file is not None
            self._file.write(line)
            self._file.write(b"\n")
            first, size = self.segments[-1]
            self.segments[-1] = (first, size + len(line) + 1)
            self._prune()
        except OSError as exc:
            # The child's output keeps being read (it must never block on us); it is just not kept.
            if self.error is None:
                log.error("cannot write output in %s: %s", self.directory, exc)
            self.error = f"output could not be stored: {exc.strerror or exc}"
        return frame

    def bytes_after(self, segment: int, offset: int) -> int | None:
        """How many bytes were written after ``offset`` of ``segment`` (None: that segment is gone)."""
        behind: int | None = None
        for first, size in self.segments:
            if first == segment:
                behind = size - offset
            elif behind is not None:
                behind += size
        return behind

    @property
    def end(self) -> tuple[int, int]:
        """(first seq, size) of the newest segment: where the next line goes."""
        return self.segments[-1] if self.segments else (0, 0)

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self.error = f"output could not be stored: {exc.strerror or exc}"

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def _start_segment(self, seq: int) -> None:
        if self._file is not None:
            self.close()
        self._file = open(os.path.join(self.directory, segment_name(seq)), "ab", buffering=1 << 16)
        self.segments.append((seq, 0))

    def _prune(self) -> None:
        while len(self.segments) > 1 and sum(size for _, size in self.segments) > self.limit:
            first, size = self.segments.pop(0)
            next_first = self.segments[0][0]
            self.dropped_frames += next_first - first
            self.dropped_bytes += size
            try:
                os.unlink(os.path.join(self.directory, segment_name(first)))
            except FileNotFoundError:
                pass


@dataclasses.dataclass
class Cursor:
    """Where one reader is: the next seq it wants, and (once found) its segment and byte offset there."""

    next_seq: int
    segment: int | None = None
    offset: int = 0


def read_frames(directory: str, first_seqs: list[int], cursor: Cursor, max_bytes: int) -> tuple[list[bytes], int]:
    """Complete frame lines from ``cursor`` on (about ``max_bytes``), advancing it.

    Returns the lines and the number of seqs skipped because their segment
    was dropped (0 normally). ``first_seqs`` is the writer's segment list as
    it was when the read was asked for (segments may vanish meanwhile).
    """
    lines: list[bytes] = []
    skipped = 0
    size = 0
    while size < max_bytes:
        if cursor.segment is None or cursor.segment not in first_seqs:
            covering = [f for f in first_seqs if f <= cursor.next_seq]
            if covering:
                cursor.segment = covering[-1]
            elif first_seqs and first_seqs[0] > cursor.next_seq:
                if lines:
                    break  # the gap is told after these lines (the marker goes before what a read returns)
                skipped += first_seqs[0] - cursor.next_seq
                cursor.next_seq = cursor.segment = first_seqs[0]
            else:
                break  # nothing written yet
            cursor.offset = 0
        try:
            with open(os.path.join(directory, segment_name(cursor.segment)), "rb") as f:
                f.seek(cursor.offset)
                data = f.read(max(max_bytes - size, 1 << 16))
        except FileNotFoundError:
            first_seqs = [f for f in first_seqs if f > cursor.segment]
            cursor.segment = None
            continue
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= max(max_bytes - size, 1 << 16):
                # One frame larger than the read: take it whole (frames are at most a chunk of output).
                try:
                    with open(os.path.join(directory, segment_name(cursor.segment)), "rb") as f:
                        f.seek(cursor.offset)
                        data = f.readline()
                except FileNotFoundError:  # dropped meanwhile, as above
                    first_seqs = [f for f in first_seqs if f > cursor.segment]
                    cursor.segment = None
                    continue
                end = data.rfind(b"\n")
            if end < 0:
                following = [f for f in first_seqs if f > cursor.segment]
                if following and following[0] <= cursor.next_seq:
                    cursor.segment, cursor.offset = following[0], 0
                    continue
                break  # the newest segment: the rest is not written yet
        cursor.offset += end + 1
        for line in data[:end].split(b"\n"):
            seq = frame_seq(line)
            if seq is None or seq < cursor.next_seq:
                continue
            lines.append(line)
            size += len(line)
            cursor.next_seq = seq + 1
    return lines, skipped


def output_tail(directory: str, first_seqs: list[int], limit: int) -> tuple[str, bool]:
    """The last ``limit`` characters of the kept output (stdout and stderr in order), and whether it was cut."""
    parts: list[str] = []
    size = 0
    cut = False
    for index in range(len(first_seqs) - 1, -1, -1):
        if size >= limit:
            cut = True  # older segments were not even read
            break
        try:
            with open(os.path.join(directory, segment_name(first_seqs[index])), "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            cut = True
            continue
        texts = []
        for line in lines:
            if not line:
                continue
            try:
                texts.append(json.loads(line)["data"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
        chunk = "".join(texts)
        parts.insert(0, chunk)
        size += len(chunk)
    text = "".join(parts)
    if len(text) > limit:
        return text[-limit:], True
    return text, cut


def scan_segments(directory: str) -> tuple[list[tuple[int, int]], int]:
    """(first seq, size) of the segments on disk, and the last complete frame's seq (0: none)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return [], 0
    segments = []
    for name in names:
        match = _SEGMENT.match(name)
        if match:
            try:
                segments.append((int(match.group(1)), os.path.getsize(os.path.join(directory, name))))
            except OSError:
                continue
    segments.sort()
    last_seq = 0
    for first, size in reversed(segments):
        with open(os.path.join(directory, segment_name(first)), "rb") as f:
            f.seek(max(0, size - (8 << 20)))
            tail = f.read()
        for line in reversed(tail.split(b"\n")[:-1]):  # the part after the last newline is torn
            seq = frame_seq(line)
            if seq is not None:
                last_seq = seq
                break
        if last_seq:
            break
        last_seq = max(last_seq, first - 1)
    return segments, last_seq


def stream_tails(directory: str, first_seqs: list[int], limit: int) -> dict[str, tuple[str, bool]]:
    """Per stream (``stdout``, ``stderr``): the last ``limit`` characters kept, and whether earlier ones are missing."""
    parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for first in first_seqs:
        try:
            with open(os.path.join(directory, segment_name(first)), "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            continue
        for line in lines:
            if not line:
                continue
            try:
                frame = json.loads(line)
                parts[frame["stream"]].append(frame["data"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
    dropped = bool(first_seqs and first_seqs[0] > 1)
    tails = {}
    for stream, texts in parts.items():
        text = "".join(texts)
        tails[stream] = (text[-limit:], len(text) > limit or (dropped and bool(text)))
    return tails


class RunStore:
    """Run directories under the state directory (blocking: call it off the IOLoop)."""

    def __init__(self, root: str, id_key: str, id_pattern: str) -> None:
        self.root = root
        self.id_key = id_key
        self.id_pattern = re.compile(id_pattern)

    def directory(self, run_id: str) -> str:
        return os.path.join(self.root, run_id)

    def create(self, record: dict[str, Any]) -> None:
        os.makedirs(self.directory(record[self.id_key]), exist_ok=True)
        self.save(record)

    def save(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")
        atomic_write(os.path.join(self.directory(record[self.id_key]), "run.json"), data)

    def load_all(self) -> list[tuple[dict[str, Any], list[tuple[int, int]], int]]:
        """Every stored run: its record, its segments and its last seq (unreadable runs are skipped)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        runs = []
        for name in names:
            if not self.id_pattern.match(name):
                continue
            try:
                with open(os.path.join(self.root, name, "run.json"), encoding="utf-8") as f:
                    record = json.load(f)
                segments, last_seq = scan_segments(self.directory(name))
            except (OSError, ValueError) as exc:
                log.warning("skipping run %s: %s", name, exc)
                continue
            if isinstance(record, dict) and record.get(self.id_key) == name:
                runs.append((record, segments, last_seq))
        return runs

    def unrecorded(self) -> list[str]:
        """Run directories without a record: runs started by a runtime that died before it could save one."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [
            name
            for name in names
            if self.id_pattern.match(name) and not os.path.exists(os.path.join(self.root, name, "run.json"))
        ]

    def remove(self, run_id: str) -> None:
        shutil.rmtree(self.directory(run_id), ignore_errors=True)
