"""The Files area's HTTP handlers: parse, check, call the FileService, answer.

Bodies of writes and uploads are streamed (``stream_request_body``): each
batch goes to disk in the thread pool while the next is read, and no third
is read before the first has landed, so memory stays flat and a slow disk
slows the client instead of filling the server. Small files are read on the
IOLoop itself (an open, an fstat and a read cost less than a thread hop).
Reads stream in chunks, each awaited through ``flush()`` (back-pressure).
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import functools
import os
import re
import urllib.parse
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable

import tornado.http1connection
import tornado.httputil
import tornado.iostream

from wsruntime_ext.base import DRAIN_LIMIT, ApiError, ApiHandler, log
from wsruntime_ext.files.listing import guess_mime
from wsruntime_ext.files.search import SearchQuery
from wsruntime_ext.files.service import (
    INLINE_READ,
    JSON_WRITE_LIMIT,
    READ_CHUNK,
    FileService,
    OpenedFile,
    Preconditions,
    parse_etags,
)
from wsruntime_ext.files.upload import MultipartUpload, multipart_boundary
from wsruntime_ext.paths import AtomicWriter, WorkspacePath

if TYPE_CHECKING:
    from wsruntime_ext.files.search import SearchService

WRITE_BATCH = 1 << 20  # bytes of body gathered before one write in the thread pool
SMALL_WRITE = 256 << 10  # bodies up to this size (by Content-Length) are gathered whole, then written at once
BIG_READ = 1 << 20  # a streamed body is read from its socket this much at a time (Tornado's default: 64 KiB)
MAX_LIST_LIMIT = 10_000_000
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class BodyPump:
    """Feeds a streamed request body to a blocking sink in the thread pool, a batch at a time.

    One batch is written while the next is read, so the socket and the disk
    overlap; ``feed`` waits for the batch before, which is what makes Tornado
    stop reading the socket while the disk catches up (at most two batches
    are held). Batches reach the sink one at a time, in order.
    """

    def __init__(self, run_blocking: Callable[..., Awaitable[Any]], sink: Callable[[bytes], None]) -> None:
        self.run_blocking = run_blocking
        self.sink = sink
        self.pieces: list[bytes] = []
        self.buffered = 0
        self.received = 0
        self.pending: Awaitable[Any] | None = None  # the batch being written

    def feed(self, chunk: bytes) -> Awaitable[None] | None:
        """Take the next piece; an awaitable when a batch is full (awaiting it is the back-pressure)."""
        self.received += len(chunk)
        self.pieces.append(chunk)
        self.buffered += len(chunk)
        if self.buffered >= WRITE_BATCH:
            return self._push()
        return None

    def _take(self) -> bytes:
        pieces, self.pieces, self.buffered = self.pieces, [], 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def settle(self) -> None:
        """Wait for the batch being written (its error, if any, is raised here)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            await pending

    def take_rest(self) -> bytes:
        """What is buffered but not yet written (for the caller's own thread-pool trip; settle() first)."""
        return self._take()

    async def drain(self) -> None:
        await self.settle()
        if self.buffered:
            await self.run_blocking(self.sink, self._take())

    async def _push(self) -> None:
        await self.settle()
        self.pending = self.run_blocking(self.sink, self._take())

    def abandon(self) -> Awaitable[Any] | None:
        """Stop feeding; the batch still being written, if any (its outcome no longer matters)."""
        pending, self.pending = self.pending, None
        self.pieces, self.buffered = [], 0
        if pending is not None:
            future = asyncio.ensure_future(pending)
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            return future
        return None


class FilesHandler(ApiHandler):
    """What the Files handlers share: the service, preconditions, early refusals, extra error headers."""

    @property
    def files(self) -> FileService:
        return self.ctx.files

    def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return self.ctx.run_blocking(fn, *args)

    def preconditions(self) -> Preconditions:
        return Preconditions(
            parse_etags(self.request.headers.get("If-Match")), parse_etags(self.request.headers.get("If-None-Match"))
        )

    def limit_body(self, limit: int) -> None:
        """Bound this request's body (the server-wide bound only stops what no handler would accept);
        up to DRAIN_LIMIT more is still read, so an oversized body gets its 413 instead of a reset."""
        self.max_body_bytes = limit
        self.request.connection.set_max_body_size(limit + DRAIN_LIMIT)

    # A handler that streams its body to disk calls stream_body() in prepare() and implements _discard().
    pump: BodyPump | None = None
    _default_reads: tuple[tornado.http1connection.HTTP1ConnectionParameters, int] | None = None

    def stream_body(self, sink: Callable[[bytes], None]) -> None:
        """Stream the body to ``sink`` (in the thread pool, a batch at a time), read BIG_READ at a time.

        Tornado reads a body 64 KiB at a time, each read a fresh buffer, a copy and a chain of calls on the
        IOLoop: 1 MiB reads make a 1 GiB upload about half as fast again. For this request only — the
        connection reads as before once it is answered (small requests would pay for the big buffers).
        """
        self.pump = BodyPump(self.ctx.run_blocking, sink)
        connection = self.request.connection
        if isinstance(connection, tornado.http1connection.HTTP1Connection) and connection.params.chunk_size < BIG_READ:
            self._default_reads = (connection.params, connection.stream.read_chunk_size)
            connection.params = copy.copy(connection.params)
            connection.params.chunk_size = BIG_READ
            connection.stream.read_chunk_size = BIG_READ

    def on_finish(self) -> None:
        self._discard()
        if self._default_reads is not None:
            connection = self.request.connection
            assert isinstance(connection, tornado.http1connection.HTTP1Connection)
            connection.params, connection.stream.read_chunk_size = self._default_reads
            self._default_reads = None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.pump is None or self._rejection is not None or self._finished:
            return super().data_received(chunk)
        if self.pump.received + len(chunk) > self.max_body_bytes:
            self._discard()
            self.reject_body(self.body_too_large())
            return super().data_received(chunk)
        return self._feed(chunk)

    def _feed(self, chunk: bytes) -> Awaitable[None] | None:
        assert self.pump is not None
        try:
            pushed = self.pump.feed(chunk)
        except ApiError as error:
            self._discard()
            self.reject_body(error)
            return None
        return None if pushed is None else self._pushed(pushed)

    async def _pushed(self, pushed: Awaitable[None]) -> None:
        try:
            await pushed
        except ApiError as error:
            self._discard()
            self.reject_body(error)

    def _discard(self) -> None:
        """Throw away what the streamed body produced so far."""
        if self.pump is not None:
            self.pump.abandon()
        self.pump = None

    _cleanup: asyncio.Future[Any] | None = None

    def clean_up(self, fn: Callable[[], None], after: Awaitable[Any] | None = None) -> None:
        """Run ``fn`` (throwing a temporary file away) in the thread pool, once ``after`` (a write still
        running) is done; an answer waits for it."""
        if after is None:
            self._cleanup = asyncio.wrap_future(self.ctx.executor.submit(fn))
        else:
            self._cleanup = asyncio.ensure_future(self._clean_up_after(fn, after))

    async def _clean_up_after(self, fn: Callable[[], None], after: Awaitable[Any]) -> None:
        try:
            await after
        except Exception:  # the write's own failure: what matters now is the clean-up
            log.debug("a write failed before its clean-up", exc_info=True)
        await self.run_blocking(fn)

    def reject_body(self, error: ApiError) -> None:
        if self._rejection is not None:
            return  # the first refusal stands (an unauthenticated request learns nothing more)
        super().reject_body(error)

        async def refuse(*args: Any, **kwargs: Any) -> None:
            if self._cleanup is not None:
                await self._cleanup  # "nothing changed" holds when the answer arrives, not just soon after
            raise error

        setattr(self, self.request.method.lower(), refuse)

    def refuse(self, error: ApiError, drain_limit: int = DRAIN_LIMIT) -> None:
        """Refuse a request whose body may still be on its way: a body up to DRAIN_LIMIT is read and
        thrown away first, so that the client sees the answer (and its connection stays usable)."""
        super().refuse(error, drain_limit)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)
        super().write_error(status_code, **kwargs)

    def path_arg(self, name: str = "path", default: str = "") -> str:
        value = self.query(name)
        return default if value is None else value

    def send_raw_json(self, body: bytes, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def listing_options(self) -> tuple[bool, int | None]:
        """``hidden`` and ``limit``, checked on every read (also of a file, where they do not apply)."""
        return self.query_bool("hidden", True), self.query_int("limit", 0, 0, MAX_LIST_LIMIT) or None

    def format_option(self) -> str:
        fmt = self.query("format", "raw")
        if fmt not in ("raw", "json"):
            raise ApiError(400, "invalid_parameter", "format must be raw or json", parameter="format")
        return fmt

    async def send_listing(self, wp: WorkspacePath) -> None:
        hidden, limit = self.listing_options()
        body = await self.files.walk(self.files.list_directory, wp, hidden, limit)
        self.send_raw_json(body)


class ListHandler(FilesHandler):
    """``GET /api/v1/files?path=DIR&hidden=true&limit=N``."""

    async def get(self) -> None:
        wp = self.files.resolve(self.path_arg())
        await self.send_listing(wp)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as (start, end inclusive); None to serve the whole file (absent, invalid or
    several ranges, which RFC 9110 lets a server ignore); raises 416 when it cannot be satisfied."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise _unsatisfiable(size)
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


@functools.lru_cache(maxsize=1024)
def http_date(seconds: int) -> str:
    """An HTTP date (``Last-Modified``), remembered: email.utils formats it slowly, and files share seconds."""
    return tornado.httputil.format_timestamp(seconds)


def _unsatisfiable(size: int) -> ApiError:
    error = ApiError(416, "range_not_satisfiable", f"The range is outside the file's {size} bytes", size=size)
    error.headers = {"Content-Range": f"bytes */{size}"}  # type: ignore[attr-defined]
    return error


class FileHandler(FilesHandler):
    """``GET``/``HEAD``/``PUT``/``DELETE /api/v1/files/{path}``."""

    writer: AtomicWriter | None = None
    target: WorkspacePath | None = None
    json_write = False
    small_write = False

    # -- reading ------------------------------------------------------------------------------

    async def get(self, path: str) -> None:
        await self._read(path, head=False)

    async def head(self, path: str) -> None:
        await self._read(path, head=True)

    async def _read(self, path: str, head: bool) -> None:
        wp = self.files.resolve(path)
        fmt = self.format_option()
        self.listing_options()
        if fmt == "json":
            body = await self.run_blocking(self.files.read_json, wp)
            if body is None:
                await self.send_listing(wp)
            else:
                self.set_header("ETag", body["etag"])
                self.send_json(body)
            return
        # Small files are read right here; an open and an fstat cost what the jail's lstat did.
        opened = self.files.open_for_read(wp, INLINE_READ)
        if opened is None:
            await self.send_listing(wp)
            return
        try:
            await self._send_file(wp, opened, head)
        finally:
            if opened.fd is not None:
                self.files.close(opened.fd)

    def _not_modified(self, opened: OpenedFile) -> bool:
        headers = self.request.headers
        none_match = parse_etags(headers.get("If-None-Match"))
        if none_match is not None:
            etag = opened.etag
            return "*" in none_match or etag in {t[2:] if t.startswith("W/") else t for t in none_match}
        since = headers.get("If-Modified-Since")
        if since:
            try:
                parsed = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError, IndexError):
                return False
            return int(opened.st.st_mtime) <= int(parsed.timestamp())
        return False

    def _range_applies(self, opened: OpenedFile) -> bool:
        if_range: str | None = self.request.headers.get("If-Range")
        if not if_range:
            return True
        if if_range.startswith('"'):
            return if_range.strip() == opened.etag
        try:
            return bool(int(email.utils.parsedate_to_datetime(if_range).timestamp()) == int(opened.st.st_mtime))
        except (TypeError, ValueError, IndexError):
            return False

    async def _send_file(self, wp: WorkspacePath, opened: OpenedFile, head: bool) -> None:
        st = opened.st
        self.set_header("ETag", opened.etag)
        self.set_header("Last-Modified", http_date(int(st.st_mtime)))
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Cache-Control", "private, no-cache")
        if self._not_modified(opened):
            self.set_status(304)
            self.finish()
            return
        size = st.st_size
        byte_range = parse_range(self.request.headers.get("Range"), size) if self._range_applies(opened) else None
        start, end = (0, size - 1) if byte_range is None else byte_range
        length = end - start + 1 if size else 0
        if byte_range is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.set_header("Content-Type", guess_mime(wp.real.rsplit("/", 1)[-1]) or "application/octet-stream")
        # Workspace files are not ours: a page among them must not run with this origin's rights.
        self.set_header("Content-Security-Policy", "sandbox")
        self.set_header("Content-Length", str(length))
        if head or length == 0:
            self.finish()
            return
        if opened.data is not None:
            self.finish(opened.data[start : end + 1] if byte_range is not None else opened.data)
            return
        assert opened.fd is not None
        fd = opened.fd
        offset, remaining = start, length
        # One chunk is read ahead while the one before goes out: the disk and the socket overlap, and at
        # most two chunks per response are in memory. The read ahead is always awaited before the file
        # is closed, so no thread ever reads a descriptor number that was reused meanwhile.
        pending: Awaitable[bytes] | None = self.run_blocking(
            self.files.read_chunk, fd, offset, min(READ_CHUNK, remaining)
        )
        try:
            while pending is not None:
                chunk = await pending
                pending = None
                if not chunk:
                    # The file shrank under us: the promised length cannot be kept; close the connection.
                    log.warning("%s shrank while being sent; closing the connection", wp.rel)
                    self.request.connection.stream.close()
                    return
                offset += len(chunk)
                remaining -= len(chunk)
                if remaining > 0:
                    pending = self.run_blocking(self.files.read_chunk, fd, offset, min(READ_CHUNK, remaining))
                self.write(chunk)
                del chunk
                try:
                    await self.flush()
                except tornado.iostream.StreamClosedError:
                    return  # the client went away
        finally:
            if pending is not None:
                try:
                    await pending
                except Exception:  # only waited for, so that the descriptor can be closed
                    log.debug("read ahead failed", exc_info=True)
        self.finish()

    # -- writing ------------------------------------------------------------------------------

    def prepare(self) -> Awaitable[None] | None:
        if self.request.method != "PUT":
            return super().prepare()  # no coroutine for reads: they are the hot path
        return self._prepare_write()

    def _prepare_write(self) -> Awaitable[None] | None:
        """A small or JSON body is gathered (no coroutine: small writes are a hot path too); a streamed one
        gets its temporary file before the body arrives."""
        try:
            self.json_write = self.format_option() == "json"
        except ApiError as error:
            super().prepare()
            self.refuse(error)
            return None
        limit = self.ctx.config.max_upload_size
        length = self.request.headers.get("Content-Length", "")
        # A small body is simply gathered, then checked, written and landed in one trip to the thread pool.
        self.small_write = (
            not self.json_write
            and length.isdigit()
            and int(length) <= min(SMALL_WRITE, limit)
            and self.request.headers.get("Expect", "").lower() != "100-continue"  # wants its answer before the body
        )
        self.limit_body(min(limit, JSON_WRITE_LIMIT) if self.json_write else limit)
        super().prepare()
        if self._finished or self._rejection is not None or self.json_write or self.small_write:
            return None
        return self._start_streamed_write()

    async def _start_streamed_write(self) -> None:
        try:
            wp = self.files.resolve_write(self.path_kwargs["path"])
            self.writer = await self.run_blocking(self.files.start_write, wp, self.preconditions())
        except ApiError as error:
            self.refuse(error)
            return
        self.target = wp
        self.stream_body(self._write_batch)

    def _write_alone(
        self, path: str, data: bytes, preconditions: Preconditions
    ) -> tuple[WorkspacePath, dict[str, Any]]:
        wp = self.files.resolve_write(path)
        return wp, self.files.write_bytes(wp, data, preconditions)

    def _write_batch(self, data: bytes) -> None:
        assert self.writer is not None and self.target is not None
        self.files.write_chunk(self.writer, data, self.target.rel)

    def _discard(self) -> None:
        """Throw the temporary file away (in the thread pool, after any write still running)."""
        writer, self.writer = self.writer, None
        pump, self.pump = self.pump, None
        running = pump.abandon() if pump is not None else None
        if writer is not None and not writer._done:
            self.clean_up(writer.abort, running)

    async def put(self, path: str) -> None:
        preconditions = self.preconditions()
        if self.json_write or self.small_write:
            data = self.files.decode_json_content(self.json_body()) if self.json_write else self.body_bytes
            if len(data) <= SMALL_WRITE:
                # Landed with the other small writes queued meanwhile (group.py), the path resolved there too.
                wp, result = await self.ctx.write_groups.write(path, data, preconditions)
            else:  # a big JSON body: a trip of its own, so that no small write waits behind its disk time
                wp, result = await self.run_blocking(self._write_alone, path, data, preconditions)
        else:
            assert self.pump is not None and self.writer is not None and self.target is not None
            wp = self.target
            try:
                await self.pump.settle()
                rest = self.pump.take_rest()
                result = await self.run_blocking(self.files.finish_write, self.writer, wp, rest, preconditions)
            finally:
                self._discard()
                if self._cleanup is not None:
                    await self._cleanup
        created = result.pop("created")
        self.set_header("ETag", result["etag"])
        if created:
            self.set_header("Location", "/api/v1/files/" + urllib.parse.quote(wp.rel))
        self.send_json(result, 201 if created else 200)

    def on_connection_close(self) -> None:
        self._discard()  # the client went away mid-body: nothing of it remains
        super().on_connection_close()

    # -- deleting -----------------------------------------------------------------------------

    async def delete(self, path: str) -> None:
        recursive = self.query_bool("recursive", False)
        wp = self.files.resolve_own(path)
        preconditions = self.preconditions()
        await self.run_blocking(self.files.delete, wp, recursive, preconditions)
        self.set_status(204)
        self.finish()


class UploadHandler(FilesHandler):
    """``POST /api/v1/files/upload?path=DIR&overwrite=false`` (multipart/form-data)."""

    upload: MultipartUpload | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        if self.request.method == "POST":
            self.limit_body(self.ctx.config.max_upload_size)
        super().prepare()
        if self._finished or self._rejection is not None or self.request.method != "POST":
            return
        try:
            boundary = multipart_boundary(self.request.headers.get("Content-Type"))
            overwrite = self.query_bool("overwrite", False)
            base = self.files.resolve(self.path_arg())
            await self.run_blocking(self._check_base, base)
        except ApiError as error:
            self.refuse(error)
            return
        self.upload = MultipartUpload(self.files, base, overwrite, boundary)
        self.stream_body(self.upload.feed)

    @staticmethod
    def _check_base(base: WorkspacePath) -> None:
        if os.path.lexists(base.real) and not os.path.isdir(base.real):
            raise ApiError(400, "not_a_directory", f"{base.rel} is not a directory", path=base.rel)

    def _discard(self) -> None:
        upload, self.upload = self.upload, None
        pump, self.pump = self.pump, None
        running = pump.abandon() if pump is not None else None
        if upload is not None:
            self.clean_up(upload.abort, running)

    async def post(self) -> None:
        assert self.pump is not None and self.upload is not None
        upload = self.upload
        try:
            await self.pump.drain()
            uploaded = await self.run_blocking(upload.finish)
        except BaseException:
            self._discard()
            if self._cleanup is not None:
                await self._cleanup
            raise
        self.upload = None
        self.send_json({"uploaded": uploaded}, 201)

    def on_connection_close(self) -> None:
        self._discard()
        super().on_connection_close()


def _string_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ApiError(400, "invalid_body", f'"{name}" must be a string (a workspace-relative path)', field=name)
    return value


def _bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_body", f'"{name}" must be true or false', field=name)
    return value


class MoveHandler(FilesHandler):
    """``POST /api/v1/files/move`` ``{"from", "to", "overwrite"}``."""

    async def post(self) -> None:
        body = self.json_body()
        source_path, target_path = _string_field(body, "from"), _string_field(body, "to")
        overwrite = _bool_field(body, "overwrite")
        # Both ends are operated on themselves (a symlink is moved, not its target), but neither
        # may be a symlink that leads outside: a moved relative link would change what it names.
        self.files.resolve(source_path)
        self.files.resolve(target_path)
        source = self.files.resolve_own(source_path)
        target = self.files.resolve_own(target_path)
        preconditions = self.preconditions()
        rel = await self.run_blocking(self.files.move, source, target, overwrite, preconditions)
        self.send_json({"path": rel})


class MkdirHandler(FilesHandler):
    """``POST /api/v1/files/mkdir`` ``{"path", "exist_ok"}``."""

    async def post(self) -> None:
        body = self.json_body()
        wp = self.files.resolve(_string_field(body, "path"))
        exist_ok = _bool_field(body, "exist_ok")
        created = await self.run_blocking(self.files.mkdir, wp, exist_ok)
        self.send_json({"path": wp.rel, "created": created}, 201 if created else 200)


class SearchHandler(FilesHandler):
    """``GET /api/v1/search?q=&glob=&path=&limit=&regex=&ignore_case=``."""

    async def get(self) -> None:
        text = self.query("q")
        glob = self.query("glob")
        text = text if text else None
        glob = glob if glob else None
        for name, value in (("q", text), ("glob", glob)):
            if value is not None and ("\x00" in value or len(value) > 1000):
                raise ApiError(400, "invalid_parameter", f"{name} is too long or holds a NUL", parameter=name)
        base = self.files.resolve(self.path_arg())
        query = SearchQuery(
            base=base,
            text=text,
            glob=glob,
            regex=self.query_bool("regex", False),
            ignore_case=self.query_bool("ignore_case", False),
            limit=self.query_int("limit", 200, 1, 10_000),
        )
        await self.run_blocking(_check_exists, base)
        if text is None and glob is None:
            self.send_json({"matches": [], "truncated": False, "timed_out": False})  # nothing asked, nothing found
            return
        search: SearchService = self.ctx.search
        self.send_json(await search.search(query))


def _check_exists(wp: WorkspacePath) -> None:
    if not os.path.exists(wp.real):
        raise ApiError(404, "not_found", f"No such file or directory: {wp.rel or '/'}", path=wp.rel)
