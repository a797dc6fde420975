"""Multipart uploads: several files, sub-folders, all-or-nothing, streamed, bounded (API.md "Files", Upload)."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from tests.conftest import Response, ServerPool, ServerThread
from tests.test_files import leftovers
from wsruntime_ext.base import ApiError
from wsruntime_ext.config import Config
from wsruntime_ext.files.handlers import BIG_READ, WRITE_BATCH, BodyPump, FilesHandler
from wsruntime_ext.files.service import FileService
from wsruntime_ext.files.upload import MultipartUpload, parse_header_params

BOUNDARY = "----wsruntimeTestBoundary7MA4YWxk"


def multipart(
    files: list[tuple[str, bytes]],
    fields: Sequence[tuple[str, str]] = (),
    boundary: str = BOUNDARY,
) -> bytes:
    """A multipart/form-data body: each file a part with ``filename`` (given raw, so tests can send anything)."""
    out = b""
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for i, (filename, data) in enumerate(files):
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file{i}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


async def upload(server: ServerThread, body: bytes, query: dict[str, Any] | None = None, **kw: Any) -> Response:
    path = "/api/v1/files/upload"
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **kw.pop("headers", {})}
    return await server.request("POST", path, raw=body, headers=headers, **kw)


@pytest.fixture
def d(server: ServerThread) -> str:
    rel = "u-" + uuid.uuid4().hex[:10]
    os.mkdir(os.path.join(server.workspace, rel))
    return rel


def read(server: ServerThread, rel: str) -> bytes:
    with open(os.path.join(server.workspace, rel), "rb") as f:
        return f.read()


async def test_upload_several_files_with_sub_folders(server: ServerThread, d: str) -> None:
    body = multipart([("a.txt", b"alpha"), ("sub/dir/b.bin", bytes(range(256))), ("c d é.txt", b"spaces")])
    r = await upload(server, body, {"path": d})
    assert r.status == 201
    uploaded = r.body["uploaded"]
    assert [u["path"] for u in uploaded] == [f"{d}/a.txt", f"{d}/sub/dir/b.bin", f"{d}/c d é.txt"]
    assert [u["size"] for u in uploaded] == [5, 256, 6]
    assert all(u["etag"].startswith('"') and u["modified"].endswith("Z") for u in uploaded)
    assert read(server, f"{d}/a.txt") == b"alpha"
    assert read(server, f"{d}/sub/dir/b.bin") == bytes(range(256))
    assert read(server, f"{d}/c d é.txt") == b"spaces"
    # The ETag of the upload is the one a read answers.
    got = await server.request("GET", "/api/v1/files/" + urllib.parse.quote(f"{d}/a.txt"))
    assert got.headers["ETag"] == uploaded[0]["etag"]


async def test_upload_to_a_new_directory_and_to_the_root(server: ServerThread, d: str) -> None:
    r = await upload(server, multipart([("x.txt", b"x")]), {"path": f"{d}/new/dir"})
    assert r.status == 201 and r.body["uploaded"][0]["path"] == f"{d}/new/dir/x.txt"
    r = await upload(server, multipart([(f"{d}/at-root.txt", b"r")]))
    assert r.status == 201 and read(server, f"{d}/at-root.txt") == b"r"


async def test_existing_file_without_overwrite_is_409_and_nothing_is_kept(server: ServerThread, d: str) -> None:
    await upload(server, multipart([("exists.txt", b"old")]), {"path": d})
    body = multipart([("first-new.txt", b"1"), ("exists.txt", b"new"), ("last-new.txt", b"3")])
    r = await upload(server, body, {"path": d})
    assert r.status == 409 and r.error_code == "already_exists"
    assert read(server, f"{d}/exists.txt") == b"old"
    assert sorted(os.listdir(os.path.join(server.workspace, d))) == ["exists.txt"]
    assert leftovers(os.path.join(server.workspace, d)) == []
    r = await upload(server, body, {"path": d, "overwrite": "false"})
    assert r.status == 409


async def test_overwrite_replaces(server: ServerThread, d: str) -> None:
    await upload(server, multipart([("f.txt", b"old")]), {"path": d})
    os.chmod(os.path.join(server.workspace, d, "f.txt"), 0o640)
    r = await upload(server, multipart([("f.txt", b"new"), ("g.txt", b"g")]), {"path": d, "overwrite": "true"})
    assert r.status == 201
    assert read(server, f"{d}/f.txt") == b"new" and read(server, f"{d}/g.txt") == b"g"
    assert os.stat(os.path.join(server.workspace, d, "f.txt")).st_mode & 0o777 == 0o640
    assert leftovers(os.path.join(server.workspace, d)) == []


async def test_fields_and_empty_file_inputs_are_ignored(server: ServerThread, d: str) -> None:
    body = multipart([("", b""), ("kept.txt", b"k")], fields=[("comment", "hello"), ("path", "../../elsewhere")])
    r = await upload(server, body, {"path": d})
    assert r.status == 201 and [u["path"] for u in r.body["uploaded"]] == [f"{d}/kept.txt"]


async def test_no_file_part_uploads_nothing(server: ServerThread, d: str) -> None:
    r = await upload(server, multipart([], fields=[("a", "b")]), {"path": d})
    assert r.status == 201 and r.body == {"uploaded": []}
    assert os.listdir(os.path.join(server.workspace, d)) == []


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("application/json", 415),
        ("text/plain", 415),
        ("multipart/form-data", 400),
        ("multipart/form-data; boundary=", 400),
        ("multipart/form-data; boundary=" + "x" * 300, 400),
    ],
)
async def test_bad_content_type(server: ServerThread, d: str, content_type: str | None, status: int) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = await server.request("POST", f"/api/v1/files/upload?path={d}", raw=multipart([("a", b"a")]), headers=headers)
    assert r.status == status


@pytest.mark.parametrize(
    "body",
    [
        b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="f"; filename="t.txt"\r\n\r\nhalf',
        b"garbage without any boundary",
        b"--" + BOUNDARY.encode() + b"\r\nNo-Colon-Header\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--\r\n",
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--\r\n",
    ],
)
async def test_malformed_or_truncated_body_is_400_and_nothing_is_kept(
    server: ServerThread, d: str, body: bytes
) -> None:
    r = await upload(server, body, {"path": d})
    assert r.status == 400
    assert r.error_code in ("invalid_multipart", "no_files")
    assert os.listdir(os.path.join(server.workspace, d)) == []


async def test_bad_names(server: ServerThread, d: str) -> None:
    for name, status in [
        ("/etc/passwd", 403),
        ("/abs.txt", 403),
        ("../../outside.txt", 403),
        ("dir/", 400),
        ("..", 400),
        ("a\x01b", 400),
    ]:
        body = multipart([("good.txt", b"g"), (name, b"bad")])
        r = await upload(server, body, {"path": d})
        assert r.status == status, name
        assert os.listdir(os.path.join(server.workspace, d)) == [], name


async def test_duplicate_names_and_directories(server: ServerThread, d: str) -> None:
    r = await upload(server, multipart([("same.txt", b"1"), ("same.txt", b"2")]), {"path": d})
    assert r.status == 400 and r.error_code == "duplicate_file"
    os.mkdir(os.path.join(server.workspace, d, "adir"))
    r = await upload(server, multipart([("adir", b"1")]), {"path": d, "overwrite": "true"})
    assert r.status == 409 and r.error_code == "is_a_directory"
    with open(os.path.join(server.workspace, d, "afile"), "wb"):
        pass
    r = await upload(server, multipart([("x.txt", b"1")]), {"path": f"{d}/afile"})
    assert r.status == 400 and r.error_code == "not_a_directory"
    r = await upload(server, multipart([("afile/x.txt", b"1")]), {"path": d})
    assert r.status == 409 and r.error_code == "not_a_directory"
    assert sorted(os.listdir(os.path.join(server.workspace, d))) == ["adir", "afile"]


async def test_filename_quoting(server: ServerThread, d: str) -> None:
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="q\\"uote.txt"\r\n\r\nq\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; filename="semi;colon.txt"; name="g"\r\n\r\ns\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode()
    r = await upload(server, body, {"path": d})
    assert r.status == 201
    assert sorted(os.listdir(os.path.join(server.workspace, d))) == ['q"uote.txt', "semi;colon.txt"]


def test_parse_header_params() -> None:
    assert parse_header_params('form-data; name="a"; filename="x y.txt"') == (
        "form-data",
        {"name": "a", "filename": "x y.txt"},
    )
    assert parse_header_params("form-data; filename*=UTF-8''evil; filename=plain")[1] == {"filename": "plain"}
    assert parse_header_params('Form-Data; NAME=a; filename="a\\\\b"') == (
        "form-data",
        {"name": "a", "filename": "a\\b"},
    )


async def test_large_upload_streams(server: ServerThread, d: str) -> None:
    data = os.urandom(24 << 20)
    r = await upload(server, multipart([("big.bin", data), ("small.txt", b"s")]), {"path": d}, timeout=120)
    assert r.status == 201
    assert read(server, f"{d}/big.bin") == data


def test_a_streamed_body_is_read_in_big_pieces_and_the_connection_reads_as_before_after_it(
    server: ServerThread, d: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # request path → (piece size, the connection's body chunk size, its socket read size) for each body piece
    pieces: dict[str, list[tuple[int, int, int]]] = {}
    original = FilesHandler.data_received

    def record(self: FilesHandler, chunk: bytes) -> Any:
        connection = self.request.connection
        sizes = (len(chunk), connection.params.chunk_size, connection.stream.read_chunk_size)  # type: ignore[attr-defined]
        pieces.setdefault(self.request.path, []).append(sizes)
        return original(self, chunk)

    monkeypatch.setattr(FilesHandler, "data_received", record)
    big, small = os.urandom(8 << 20), os.urandom(200 << 10)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        body = multipart([("big.bin", big)])
        connection.request(
            "POST",
            f"/api/v1/files/upload?path={d}",
            body,
            {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert connection.getresponse().read() and connection.sock is not None
        connection.request("PUT", f"/api/v1/files/{d}/small.bin", small)  # gathered whole, not streamed
        answer = connection.getresponse()
        assert answer.status == 201 and answer.read()
    finally:
        connection.close()
    assert read(server, f"{d}/big.bin") == big and read(server, f"{d}/small.bin") == small
    streamed = pieces["/api/v1/files/upload"]
    assert {(chunk, read) for _n, chunk, read in streamed} == {(BIG_READ, BIG_READ)}
    assert 64 << 10 < max(n for n, _c, _r in streamed) <= BIG_READ
    # The same connection, the next request: Tornado's own 64 KiB reads again.
    assert {(chunk, read) for _n, chunk, read in pieces[f"/api/v1/files/{d}/small.bin"]} == {(64 << 10, 64 << 10)}


@pytest.fixture(scope="module")
def small(servers: ServerPool) -> ServerThread:
    return servers.get("--max-upload-size", "1M")


async def test_upload_over_max_upload_size_is_413_and_nothing_is_kept(small: ServerThread) -> None:
    os.makedirs(os.path.join(small.workspace, "up"), exist_ok=True)
    body = multipart([("a.txt", b"a"), ("big.bin", b"x" * (2 << 20))])
    r = await upload(small, body, {"path": "up"})
    assert r.status == 413 and r.error_code == "body_too_large"
    await asyncio.sleep(0.2)
    assert os.listdir(os.path.join(small.workspace, "up")) == []


async def test_client_gone_mid_upload_leaves_nothing(server: ServerThread, d: str) -> None:
    body = multipart([("a.txt", b"a"), ("b.bin", b"b" * (4 << 20))])
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        (
            f"POST /api/v1/files/upload?path={d} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
    )
    sock.sendall(body[: 2 << 20])
    await asyncio.sleep(0.3)
    sock.close()
    for _ in range(50):
        await asyncio.sleep(0.05)
        if not os.listdir(os.path.join(server.workspace, d)):
            break
    assert os.listdir(os.path.join(server.workspace, d)) == []


def _config(root: str) -> Config:
    from tests.conftest import make_config

    return make_config(root)


def test_a_failure_while_landing_takes_back_what_landed(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third of three files fails to land: the first two are restored (replaced) or removed (created)."""
    root = os.path.realpath(os.fspath(tmp_path))
    with open(os.path.join(root, "one.txt"), "wb") as f:
        f.write(b"old one")
    service = FileService(_config(root))
    job = MultipartUpload(service, service.resolve(""), True, BOUNDARY.encode())
    job.feed(multipart([("one.txt", b"new one"), ("two/new.txt", b"two"), ("three.txt", b"three")]))
    real_commit = type(job.staged[0].writer).commit
    calls = []

    def flaky_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(self.target)
        if self.target.endswith("three.txt"):
            raise OSError(28, "No space left on device")
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(type(job.staged[0].writer), "commit", flaky_commit)
    with pytest.raises(Exception) as info:
        job.finish()
    assert getattr(info.value, "status_code", None) == 507
    assert len(calls) == 3
    assert open(os.path.join(root, "one.txt"), "rb").read() == b"old one"
    assert not os.path.exists(os.path.join(root, "two"))
    assert sorted(os.listdir(root)) == [".wsruntime", "one.txt"] or sorted(os.listdir(root)) == ["one.txt"]


def _pump(sink: Any) -> BodyPump:
    loop = asyncio.get_running_loop()
    return BodyPump(lambda fn, *args: loop.run_in_executor(None, fn, *args), sink)


async def _feed_all(pump: BodyPump, pieces: list[bytes]) -> None:
    for piece in pieces:
        pushed = pump.feed(piece)
        if pushed is not None:
            await pushed
    await pump.drain()


async def test_body_pump_writes_in_order_and_one_batch_at_a_time() -> None:
    """A batch is written while the next is read, but never two at once, and in the order they came."""
    written: list[bytes] = []
    running = peak = 0

    def sink(data: bytes) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        time.sleep(0.002)  # long enough for a second write to overlap, if one were started
        written.append(data)
        running -= 1

    pieces = [bytes([i]) * (WRITE_BATCH // 3) for i in range(10)]
    await _feed_all(_pump(sink), pieces)
    assert b"".join(written) == b"".join(pieces)
    assert peak == 1 and all(len(batch) >= WRITE_BATCH for batch in written[:-1])


async def test_body_pump_raises_a_failed_write_on_the_next_feed() -> None:
    """A write that fails while the next batch is read is not lost: the next push (or the drain) raises it."""
    calls = 0

    def sink(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ApiError(507, "insufficient_storage", "full")

    pieces = [b"x" * WRITE_BATCH for _ in range(5)]
    with pytest.raises(ApiError):
        await _feed_all(_pump(sink), pieces)
    assert calls == 2  # nothing was written after the failure
