"""Runs on disk: the record and the pipe output log of a script run or a process, bounded in size.

Each run has a directory ``<state_dir>/<kind>/<id>/`` (``script-runs/sr_…``,
``processes/proc_…``) holding ``run.json`` (the record, replaced atomically)
and its stdout/stderr as
segments ``out-<first seq>.jsonl``: one line per output frame, exactly the
JSON that the WebSocket sends (``{"type":"output","seq":N,"stream","data"}``).
Output is appended as it arrives and never held in memory; once the
segments together pass the output limit the oldest segment is deleted, and
readers that wanted what it held get an ``output_dropped`` marker instead.

The writer (:class:`OutputLog`) keeps the books on the IOLoop and hands the
disk work to one thread (:class:`LogWriter`); the readers (:func:`read_frames`,
:func:`output_tail`, :class:`RunStore`) block and run in the thread pool.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import re
import shutil
import threading
from typing import Any, Callable

from wsruntime_ext.paths import atomic_write
from wsruntime_ext.temps import TempRegistry
from wsruntime_ext.websocket import text_frame_header

_encode_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
_JSON_PLAIN = bytes(c for c in range(32, 127) if c not in b'"\\')  # ASCII that a JSON string holds as it is

log = logging.getLogger("wsruntime.processes")

_SEGMENT = re.compile(r"^out-(\d{12})\.jsonl$")
_SEQ = re.compile(rb'^\{"type":"output","seq":(\d+),')
MIN_SEGMENT = 64 << 10
SEGMENTS_PER_LIMIT = 8
_IOV_MAX = 1024  # Linux's limit of buffers a writev takes


def segment_name(first_seq: int) -> str:
    return f"out-{first_seq:012d}.jsonl"


def frame_seq(line: bytes) -> int | None:
    match = _SEQ.match(line)
    return int(match.group(1)) if match else None


class LogWriter:
    """One thread that does the output logs' disk work — appends, new segments, deletes — in the order given.

    The IOLoop only hands it bytes (frames already built for the clients), so a fast process's output is
    copied into the page cache and its old segments freed on another core, while the IOLoop reads the pipes
    and feeds the sockets. Consecutive appends to one segment go out as one ``writev``. After each batch the
    thread tells every log it wrote for (on that log's loop), so that waiting readers and paused pipes go on.
    """

    _shared: LogWriter | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._ops: collections.deque[tuple[OutputLog, str, Any]] = collections.deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> LogWriter:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def submit(self, ops: list[tuple[OutputLog, str, Any]]) -> None:
        """Operations, in order (one hand-over per IOLoop turn: the thread wakes once for all of them)."""
        with self._ready:
            self._ops.extend(ops)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wsruntime-output-log", daemon=True)
                self._thread.start()
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._ops:
                    self._ready.wait()
                batch = list(self._ops)
                self._ops.clear()
            done: dict[OutputLog, int] = {}  # operations carried out, per log
            for log_, _op, _arg in batch:
                done[log_] = done.get(log_, 0) + 1
            try:
                self._carry_out(batch)
            except Exception:  # a bug, not a disk error (those are the logs' own): the thread must go on
                log.exception("the output log writer failed a batch")
            for log_, operations in done.items():
                log_._written_batch(operations)

    @staticmethod
    def _carry_out(batch: list[tuple[OutputLog, str, Any]]) -> None:
        pending: list[Any] = []  # consecutive appends to one log, written together
        owner: OutputLog | None = None
        for log_, op, arg in batch:
            if op == "write" and (owner is None or owner is log_):
                owner = log_
                pending.append(arg)
                continue
            if owner is not None:
                owner._write_all(pending)
                pending = []
                owner = None
            if op == "write":
                owner = log_
                pending.append(arg)
            else:
                log_._do(op, arg)
        if owner is not None:
            owner._write_all(pending)


class OutputLog:
    """A run's output segments, for appending (IOLoop side); the oldest segment goes past ``limit`` bytes.

    The bookkeeping (segments, sizes, what was dropped) is the IOLoop's and exact at once; the disk work
    is the :class:`LogWriter` thread's and follows a moment later. ``lag`` is how many bytes it is behind
    (the engine stops reading the pipes while it is more than ``MAX_LAG`` behind, so that what is not yet
    on disk is always in the live clients' window); ``first_seqs`` names only segments whose files exist.
    """

    def __init__(
        self,
        directory: str,
        limit: int,
        segments: list[tuple[int, int]] | None = None,
        writer: LogWriter | None = None,
    ) -> None:
        self.directory = directory
        self.limit = limit
        self.segment_size = max(MIN_SEGMENT, limit // SEGMENTS_PER_LIMIT)
        self.segments: list[tuple[int, int]] = list(segments or [])  # (first seq, size), oldest first
        self.dropped_bytes = 0  # output data (UTF-8 bytes) no longer on disk
        self.dropped_frames = 0
        self.error: str | None = None
        self.on_written: Callable[[], None] | None = None  # called on the IOLoop after the writer caught up a bit
        self._writer = writer or LogWriter.shared()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued = 0  # bytes handed to the writer (IOLoop side)
        self._written = 0  # bytes the writer is done with (writer side)
        self._lock = threading.Lock()  # the two counts below, and _drained_sync
        self._submitted = 0  # operations handed to the writer
        self._unsent: list[tuple[OutputLog, str, Any]] = []  # operations not handed over yet (see flush)
        self._done = 0  # operations it carried out
        self._created = self.segments[-1][0] if self.segments else 0  # newest segment whose file exists
        self._open_here = False  # whether the newest segment was started by this log (else: append to it anew)
        self._fd = -1  # the writer's descriptor of the newest segment
        self._closed = False
        self._drained: list[asyncio.Future[None]] = []
        self._drained_sync = threading.Event()
        self._drained_sync.set()

    @property
    def first_seqs(self) -> list[int]:
        created = self._created
        return [first for first, _ in self.segments if first <= created]

    @property
    def lag(self) -> int:
        return self._queued - self._written

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
        if self._closed:
            return frame
        if not self.segments or self.segments[-1][1] >= self.segment_size:
            self._submit("open", seq)
            self.segments.append((seq, 0))
        elif not self._open_here:
            self._submit("open", self.segments[-1][0])  # a log found at start-up: append to its newest segment
        self._open_here = True
        line = memoryview(frame)[len(frame) - size :]
        self._queued += size + 1
        self._submit("write", line)
        first, stored = self.segments[-1]
        self.segments[-1] = (first, stored + size + 1)
        self._prune()
        return frame

    def _submit(self, op: str, arg: Any = None) -> None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # used without a loop (tests): wait_drained() then
                pass
        with self._lock:
            self._submitted += 1
            self._drained_sync.clear()
        self._unsent.append((self, op, arg))
        if self._loop is None:  # no loop turn to wait for: at once
            self.flush()

    def flush(self) -> None:
        """Hand what was appended since the last flush to the writer (the engine calls it once per IOLoop
        turn in which output came, so that the writer thread wakes once for many frames)."""
        if self._unsent:
            ops, self._unsent = self._unsent, []
            self._writer.submit(ops)

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

    def close(self) -> None:
        """No more appends; the writer closes the segment once it has written what it was given."""
        if not self._closed:
            self._closed = True
            self._submit("close")
        self.flush()

    async def drained(self) -> None:
        """Once everything appended (and the close) is on disk."""
        self.flush()
        if self._drained_sync.is_set():
            return
        self._loop = asyncio.get_running_loop()
        future = self._loop.create_future()
        self._drained.append(future)
        if self._drained_sync.is_set():  # the writer finished while the future was made (and saw no loop)
            self._caught_up()
        await future

    def wait_drained(self, timeout: float | None = None) -> bool:
        """:meth:`drained`, blocking (tests, and callers without a loop)."""
        return self._drained_sync.wait(timeout)

    def _prune(self) -> None:
        while len(self.segments) > 1 and sum(size for _, size in self.segments) > self.limit:
            first, size = self.segments.pop(0)
            next_first = self.segments[0][0]
            self.dropped_frames += next_first - first
            self.dropped_bytes += size
            self._submit("unlink", first)

    # -- the writer thread's side ----------------------------------------------------------------

    def _failed(self, exc: OSError) -> None:
        # The child's output keeps being read (it must never block on us); it is just not kept.
        if self.error is None:
            log.error("cannot write output in %s: %s", self.directory, exc)
            self.error = f"output could not be stored: {exc.strerror or exc}"

    def _do(self, op: str, arg: Any) -> None:
        if op == "open":
            self._close_fd()
            try:
                self._fd = os.open(
                    os.path.join(self.directory, segment_name(arg)),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                    0o644,
                )
            except OSError as exc:
                self._failed(exc)
            self._created = arg
        elif op == "unlink":
            try:
                os.unlink(os.path.join(self.directory, segment_name(arg)))
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._failed(exc)
        elif op == "close":
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def _write_all(self, lines: list[Any]) -> None:
        size = 0
        for start in range(0, len(lines), _IOV_MAX // 2):
            parts: list[Any] = []
            for line in lines[start : start + _IOV_MAX // 2]:
                parts.append(line)
                parts.append(b"\n")
                size += len(line) + 1
            if self._fd >= 0:
                self._writev(parts)
        self._written += size

    def _writev(self, parts: list[Any]) -> None:
        while parts:
            try:
                done = os.writev(self._fd, parts)
            except OSError as exc:
                self._failed(exc)
                return
            while parts and done >= len(parts[0]):
                done -= len(parts[0])
                parts.pop(0)
            if parts and done:
                parts[0] = memoryview(parts[0])[done:]

    def _written_batch(self, operations: int) -> None:
        with self._lock:
            self._done += operations
            if self._done == self._submitted:
                self._drained_sync.set()
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._caught_up)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _caught_up(self) -> None:
        """On the IOLoop, after a batch of the writer."""
        if self._drained and self._drained_sync.is_set():
            waiters, self._drained = self._drained, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        if self.on_written is not None:
            self.on_written()


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

    def __init__(self, root: str, id_key: str, id_pattern: str, temps: TempRegistry | None = None) -> None:
        self.root = root
        self.temps = temps
        self.id_key = id_key
        self.id_pattern = re.compile(id_pattern)

    def directory(self, run_id: str) -> str:
        return os.path.join(self.root, run_id)

    def create(self, record: dict[str, Any]) -> None:
        os.makedirs(self.directory(record[self.id_key]), exist_ok=True)
        self.save(record)

    def save(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")
        atomic_write(os.path.join(self.directory(record[self.id_key]), "run.json"), data, temps=self.temps)

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
