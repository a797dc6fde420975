"""Multipart uploads (API.md "Files", Upload): streamed to staged files, landed all-or-nothing.

The body is parsed by python-multipart's streaming ``MultipartParser`` as it
arrives (in the thread pool, a batch at a time); each file part goes straight
into its own temporary file next to its target, so memory stays flat whatever
the size. Nothing is visible until the whole request has arrived and every
part passed its checks; then the files land one by one, and if any of them
fails the ones already landed are taken back (replaced files restored from a
hard-linked backup, created files and parents removed).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from wsruntime_ext.base import ApiError
from wsruntime_ext.files.errors import os_error
from wsruntime_ext.files.service import FileService, Preconditions
from wsruntime_ext.paths import AtomicWriter, WorkspacePath, file_etag

MAX_FILES = 100_000  # staged parts per request (each is a temporary file, not an open descriptor)
MAX_PART_HEADERS = 64 << 10  # bytes of headers across the parts of one request, files excluded


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or 400/415."""
    if not content_type:
        raise ApiError(415, "unsupported_media_type", "Send multipart/form-data (with a boundary)")
    kind, params = parse_header_params(content_type)
    if kind != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"Send multipart/form-data, not {kind or 'nothing'}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200 or not re.fullmatch(r"[0-9A-Za-z'()+_,\-./:=? ]+", boundary):
        raise ApiError(400, "invalid_multipart", "multipart/form-data needs a valid boundary parameter")
    return boundary.encode("latin-1")


_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="f"; filename="a b.txt"`` → (``form-data``, {name: f, filename: a b.txt}).

    Quoted values lose their quotes and backslash escapes; extended
    ``name*=`` parameters are ignored (RFC 7578 4.2 forbids them in forms).
    """
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key = match.group(1).lower()
        raw = match.group(2).strip()
        if key.endswith("*"):
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(key, raw)
    return kind.strip().lower(), params


@dataclasses.dataclass
class StagedFile:
    """One file part: where it goes and the temporary file that holds it until the commit."""

    wp: WorkspacePath
    writer: AtomicWriter
    backup: str | None = None  # a hard link to the file it replaced, until the request has landed
    backup_token: str | None = None  # its record in the temporaries registry (temps.py)
    landed_ino: int | None = None

    def make_backup(self) -> None:
        """Keep the version the target has now reachable (a hard link under a recorded temporary name)."""
        target = self.writer.target
        temps = self.writer.temps
        if temps is not None:
            backup, self.backup_token = temps.reserve(os.path.dirname(target), os.path.basename(target))
        else:
            backup = f"{self.writer.temp_path}.old"
        try:
            os.link(target, backup)
            self.backup = backup
        except OSError:
            self.forget_backup()  # hard links unsupported here: the old version cannot be restored

    def drop_backup(self) -> None:
        if self.backup is not None:
            _unlink_quietly(self.backup)
            self.backup = None
        self.forget_backup()

    def forget_backup(self) -> None:
        if self.backup_token is not None and self.writer.temps is not None:
            self.writer.temps.forget(self.backup_token)
        self.backup_token = None


class MultipartUpload:
    """Parses one request's body into staged files; :meth:`finish` lands them all or none.

    Blocking: :meth:`feed`, :meth:`finish` and :meth:`abort` run in the
    thread pool, one at a time for a request.
    """

    def __init__(self, service: FileService, base: WorkspacePath, overwrite: bool, boundary: bytes) -> None:
        self.service = service
        self.base = base
        self.overwrite = overwrite
        self.staged: list[StagedFile] = []
        self.targets: set[str] = set()
        self.current: StagedFile | None = None
        self.skipping = False
        self.ended = False
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._header_bytes = 0
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # -- parser callbacks (in the thread pool) --------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = {}
        self.current = None
        self.skipping = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        self._count_header(end - start)

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADERS:
            raise ApiError(400, "invalid_multipart", "Too many or too long part headers")

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field = bytearray()
        self._value = bytearray()

    def _headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition")
        if disposition is None:
            raise ApiError(400, "invalid_multipart", "A part has no Content-Disposition header")
        kind, params = parse_header_params(disposition)
        filename = params.get("filename")
        if kind != "form-data" or filename is None or filename == "":
            # A plain form field, or a file input left empty (browsers send filename=""): not a file.
            self.skipping = True
            return
        self.current = self._stage(filename)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current is not None:
            try:
                self.current.writer.write(memoryview(data)[start:end])
            except OSError as exc:
                raise os_error(exc, self.current.wp.rel, writing=True) from None

    def _part_end(self) -> None:
        if self.current is not None:
            try:
                self.current.writer.finish_writing()  # release the descriptor: a request may hold many parts
            except OSError as exc:
                raise os_error(exc, self.current.wp.rel, writing=True) from None
        self.current = None

    def _end(self) -> None:
        self.ended = True

    # -- staging ------------------------------------------------------------------------------

    def _stage(self, raw_name: str) -> StagedFile:
        try:
            name = raw_name.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise ApiError(400, "invalid_path", "A part's filename is not valid UTF-8") from None
        if name.startswith("/"):
            raise ApiError(403, "path_outside_workspace", "An absolute filename is refused", path=name)
        if name.endswith("/") or name.split("/")[-1] in (".", ".."):
            raise ApiError(400, "invalid_path", "A part's filename must name a file", path=name)
        if len(self.staged) >= MAX_FILES:
            raise ApiError(400, "too_many_files", f"At most {MAX_FILES} files per request")
        client_path = f"{self.base.rel}/{name}" if self.base.rel else name
        wp = self.service.resolve(client_path)
        if wp.is_root:
            raise ApiError(400, "invalid_path", "A part's filename must name a file", path=name)
        target = self.service.write_target(wp)
        if target in self.targets:
            raise ApiError(400, "duplicate_file", f"{wp.rel} appears twice in this request", path=wp.rel)
        st = self.service.stat_target(target, wp.rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ApiError(409, "is_a_directory", f"{wp.rel} is a directory", path=wp.rel)
        if st is not None and not self.overwrite:
            raise ApiError(409, "already_exists", f"{wp.rel} exists; pass overwrite=true to replace it", path=wp.rel)
        self.service.check_writable(wp, Preconditions())
        staged = StagedFile(wp, self.service.begin_write(wp))
        self.targets.add(target)
        self.staged.append(staged)
        return staged

    # -- the request as a whole ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse the next piece of the body; on an ApiError (the request is refused) nothing remains."""
        try:
            self._parse(data)
        except BaseException:
            self.abort()  # here, before the refusal is answered
            raise

    def _parse(self, data: bytes) -> None:
        try:
            self.parser.write(data)
        except MultipartParseError as exc:
            raise ApiError(400, "invalid_multipart", f"Malformed multipart body: {exc}") from None
        except ValueError:  # a staged file closed under us: the request was abandoned meanwhile
            raise ApiError(400, "aborted", "The upload was abandoned") from None

    def finish(self) -> list[dict[str, object]]:
        """The body has arrived: land every staged file, or none (409 on a conflict that appeared meanwhile)."""
        if not self.ended:
            self.abort()
            raise ApiError(400, "invalid_multipart", "The multipart body ended before its closing boundary")
        landed: list[StagedFile] = []
        try:
            for staged in self.staged:
                self._land(staged)
                landed.append(staged)
        except BaseException:
            self._take_back(landed)
            raise
        uploaded: list[dict[str, object]] = []
        for staged in self.staged:
            staged.drop_backup()
            try:
                st = os.stat(staged.writer.target)
            except OSError:  # changed by someone else since: report what we wrote
                uploaded.append({"path": staged.wp.rel, "size": staged.writer.size})
                continue
            uploaded.append({"path": staged.wp.rel, "size": staged.writer.size, **_version(st)})
        return uploaded

    def _land(self, staged: StagedFile) -> None:
        writer = staged.writer
        target = writer.target
        if self.overwrite and os.path.lexists(target):
            staged.make_backup()  # the old version stays reachable until every file has landed
        try:
            st = writer.commit(replace=self.overwrite)
        except FileExistsError:
            raise ApiError(
                409, "already_exists", f"{staged.wp.rel} appeared meanwhile; nothing was uploaded", path=staged.wp.rel
            ) from None
        except OSError as exc:
            raise os_error(exc, staged.wp.rel, writing=True) from None
        staged.landed_ino = st.st_ino

    def _take_back(self, landed: list[StagedFile]) -> None:
        for staged in reversed(landed):
            target = staged.writer.target
            try:
                if staged.backup is not None:
                    os.rename(staged.backup, target)
                    staged.backup = None
                    staged.forget_backup()
                elif os.stat(target).st_ino == staged.landed_ino:
                    os.unlink(target)
            except OSError:
                pass
            staged.writer.remove_created_dirs()
        self.abort()

    def abort(self) -> None:
        """Throw away every staged file (and backup); nothing of this request remains."""
        for staged in self.staged:
            if not staged.writer._done:
                staged.writer.abort()
            staged.drop_backup()


def _version(st: os.stat_result) -> dict[str, object]:
    return {
        "etag": file_etag(st),
        "modified": FileService.describe("", st)["modified"],
    }


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
