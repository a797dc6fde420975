"""The Files API over real HTTP: list, read, write, delete, move, mkdir (API.md "Files").

Uploads are in test_files_upload.py, search in test_files_search.py, the
traversal corpus against every endpoint in test_files_jail.py, and the
process-level tests (SIGKILL mid-write, memory) in test_files_process.py.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import socket
import stat
import urllib.parse
import uuid
from collections.abc import Awaitable
from typing import Any, Callable

import pytest

from tests.conftest import Response, ServerPool, ServerThread
from wsruntime_ext.files import service as file_service
from wsruntime_ext.paths import AtomicWriter, file_etag, next_mtime_ns

Api = Callable[..., Awaitable[Response]]


def url(path: str, **query: Any) -> str:
    """``/api/v1/files/<path>`` with every character but ``/`` percent-encoded."""
    text = "/api/v1/files/" + urllib.parse.quote(path, safe="/")
    if query:
        text += "?" + urllib.parse.urlencode(query)
    return text


@pytest.fixture
def d(server: ServerThread) -> str:
    """A fresh directory of the shared server's workspace for one test (its relative path)."""
    rel = "t-" + uuid.uuid4().hex[:10]
    os.mkdir(os.path.join(server.workspace, rel))
    return rel


def disk(server: ServerThread, rel: str) -> str:
    return os.path.join(server.workspace, rel)


def leftovers(directory: str) -> list[str]:
    """Temporary files of unfinished writes anywhere below ``directory``."""
    found = []
    for top, _dirs, names in os.walk(directory):
        found += [os.path.join(top, n) for n in names if ".wsrt-tmp" in n]
    return found


async def put(api: Api, rel: str, data: bytes, headers: dict[str, str] | None = None) -> Response:
    return await api("PUT", url(rel), raw=data, headers=headers)


# -- write and read ------------------------------------------------------------------------


async def test_write_then_read_roundtrip(api: Api, server: ServerThread, d: str) -> None:
    r = await put(api, f"{d}/a.txt", b"hello")
    assert r.status == 201
    body = r.body
    assert body["path"] == f"{d}/a.txt" and body["size"] == 5
    assert body["modified"].endswith("Z") and len(body["modified"]) == 24
    assert r.headers["ETag"] == body["etag"]
    assert r.headers["Location"] == url(f"{d}/a.txt")
    r = await put(api, f"{d}/a.txt", b"hello again")
    assert r.status == 200
    assert r.body["size"] == 11
    r = await api("GET", url(f"{d}/a.txt"))
    assert r.status == 200 and r.raw == b"hello again"
    assert r.headers["Content-Type"] == "text/plain"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"] == (await api("GET", url(f"{d}/a.txt"), headers={})).headers["ETag"]
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.headers["Content-Security-Policy"] == "sandbox"
    assert open(disk(server, f"{d}/a.txt"), "rb").read() == b"hello again"


async def test_content_type_is_guessed(api: Api, d: str) -> None:
    for name, expected in [
        ("x.py", "text/x-python"),
        ("x.json", "application/json"),
        ("x.png", "image/png"),
        ("x.ts", "text/x-typescript"),
        ("x.unknownext", "application/octet-stream"),
        ("Makefile", "application/octet-stream"),
    ]:
        await put(api, f"{d}/{name}", b"data")
        r = await api("GET", url(f"{d}/{name}"))
        assert r.headers["Content-Type"] == expected, name


async def test_read_missing_is_404(api: Api, d: str) -> None:
    for path in (f"{d}/nope.txt", f"{d}/nope/deeper.txt"):
        r = await api("GET", url(path))
        assert r.status == 404 and r.error_code == "not_found"
    await put(api, f"{d}/file.txt", b"x")
    r = await api("GET", url(f"{d}/file.txt/below"))
    assert r.status == 404


async def test_read_directory_answers_its_listing(api: Api, d: str) -> None:
    await put(api, f"{d}/sub/a.txt", b"x")
    r = await api("GET", url(d))
    assert r.status == 200
    assert r.body["path"] == d
    assert [e["name"] for e in r.body["entries"]] == ["sub"]
    root = await api("GET", "/api/v1/files/")
    assert root.status == 200 and root.body["path"] == ""


async def test_head(api: Api, d: str) -> None:
    await put(api, f"{d}/h.bin", b"12345")
    r = await api("HEAD", url(f"{d}/h.bin"))
    assert r.status == 200 and r.raw == b""
    assert r.headers["Content-Length"] == "5" and r.headers["ETag"]
    assert (await api("HEAD", url(f"{d}/missing"))).status == 404


async def test_read_streams_large_file(api: Api, server: ServerThread, d: str) -> None:
    data = os.urandom(3 * file_service.READ_CHUNK + 12345)
    with open(disk(server, f"{d}/big.bin"), "wb") as f:
        f.write(data)
    r = await api("GET", url(f"{d}/big.bin"))
    assert r.status == 200 and r.raw == data
    assert r.headers["Content-Length"] == str(len(data))
    # A range across chunk boundaries of a streamed file.
    start, end = file_service.READ_CHUNK - 10, 2 * file_service.READ_CHUNK + 10
    r = await api("GET", url(f"{d}/big.bin"), headers={"Range": f"bytes={start}-{end}"})
    assert r.status == 206 and r.raw == data[start : end + 1]


async def test_non_regular_file_is_refused(api: Api, server: ServerThread, d: str) -> None:
    os.mkfifo(disk(server, f"{d}/fifo"))
    r = await api("GET", url(f"{d}/fifo"))
    assert r.status == 400 and r.error_code == "not_a_file"


# -- ?format=json ------------------------------------------------------------------------------


async def test_json_read_text_and_binary(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/t.txt", "héllo ✓".encode())
    r = await api("GET", url(f"{d}/t.txt", format="json"))
    assert r.status == 200
    body = r.body
    assert body["content"] == "héllo ✓" and body["encoding"] == "utf-8"
    assert body["size"] == len("héllo ✓".encode()) and body["path"] == f"{d}/t.txt"
    assert body["etag"] == r.headers["ETag"] and body["modified"].endswith("Z")
    raw = bytes(range(256))
    await put(api, f"{d}/b.bin", raw)
    body = (await api("GET", url(f"{d}/b.bin", format="json"))).body
    assert body["encoding"] == "base64" and base64.b64decode(body["content"]) == raw
    listing = await api("GET", url(d, format="json"))
    assert listing.status == 200 and "entries" in listing.body
    assert (await api("GET", url(f"{d}/t.txt", format="xml"))).status == 400


async def test_json_read_of_a_huge_file_is_refused(api: Api, server: ServerThread, d: str) -> None:
    with open(disk(server, f"{d}/sparse.bin"), "wb") as f:
        f.truncate(file_service.JSON_READ_LIMIT + 1)
    r = await api("GET", url(f"{d}/sparse.bin", format="json"))
    assert r.status == 422 and r.error_code == "file_too_large"


async def test_json_write(api: Api, server: ServerThread, d: str) -> None:
    r = await api("PUT", url(f"{d}/j.txt", format="json"), body={"content": "text ✓"})
    assert r.status == 201
    assert open(disk(server, f"{d}/j.txt"), "rb").read() == "text ✓".encode()
    r = await api(
        "PUT",
        url(f"{d}/j.txt", format="json"),
        body={"content": base64.b64encode(b"\x00\xff").decode(), "encoding": "base64"},
    )
    assert r.status == 200
    assert open(disk(server, f"{d}/j.txt"), "rb").read() == b"\x00\xff"
    for bad in (
        {"content": "!!!", "encoding": "base64"},
        {"content": 5},
        {"content": "x", "encoding": "latin-1"},
        {},
    ):
        r = await api("PUT", url(f"{d}/j.txt", format="json"), body=bad)
        assert r.status == 400, bad
    r = await api("PUT", url(f"{d}/j.txt", format="json"), raw=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.error_code == "invalid_json"
    assert open(disk(server, f"{d}/j.txt"), "rb").read() == b"\x00\xff"


# -- ranges and conditional reads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "expected", "content_range"),
    [
        ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
        ("bytes=4-", 206, b"456789", "bytes 4-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=-100", 206, b"0123456789", "bytes 0-9/10"),
        ("bytes=9-9", 206, b"9", "bytes 9-9/10"),
        ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: the whole file
        ("bytes=5-2", 200, b"0123456789", None),  # invalid: ignored
        ("items=0-3", 200, b"0123456789", None),
        ("bytes=abc", 200, b"0123456789", None),
    ],
)
async def test_range(api: Api, d: str, header: str, status: int, expected: bytes, content_range: str | None) -> None:
    await put(api, f"{d}/r.txt", b"0123456789")
    r = await api("GET", url(f"{d}/r.txt"), headers={"Range": header})
    assert r.status == status and r.raw == expected
    assert r.headers.get("Content-Range") == content_range
    assert r.headers["Content-Length"] == str(len(expected))


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=100-200", "bytes=-0"])
async def test_range_not_satisfiable(api: Api, d: str, header: str) -> None:
    await put(api, f"{d}/r.txt", b"0123456789")
    r = await api("GET", url(f"{d}/r.txt"), headers={"Range": header})
    assert r.status == 416
    assert r.error_code == "range_not_satisfiable"
    assert r.headers["Content-Range"] == "bytes */10"


async def test_range_of_empty_file(api: Api, d: str) -> None:
    await put(api, f"{d}/empty", b"")
    assert (await api("GET", url(f"{d}/empty"))).raw == b""
    assert (await api("GET", url(f"{d}/empty"), headers={"Range": "bytes=0-"})).status == 416


async def test_if_range(api: Api, d: str) -> None:
    etag = (await put(api, f"{d}/r.txt", b"0123456789")).body["etag"]
    r = await api("GET", url(f"{d}/r.txt"), headers={"Range": "bytes=0-1", "If-Range": etag})
    assert r.status == 206
    r = await api("GET", url(f"{d}/r.txt"), headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
    assert r.status == 200 and r.raw == b"0123456789"


async def test_if_none_match_and_if_modified_since(api: Api, d: str) -> None:
    r = await put(api, f"{d}/c.txt", b"cached")
    etag = r.body["etag"]
    for value in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        r = await api("GET", url(f"{d}/c.txt"), headers={"If-None-Match": value})
        assert r.status == 304, value
        assert r.raw == b"" and r.headers["ETag"] == etag
    r = await api("GET", url(f"{d}/c.txt"), headers={"If-None-Match": '"other"'})
    assert r.status == 200 and r.raw == b"cached"
    last_modified = r.headers["Last-Modified"]
    r = await api("GET", url(f"{d}/c.txt"), headers={"If-Modified-Since": last_modified})
    assert r.status == 304
    r = await api("GET", url(f"{d}/c.txt"), headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert r.status == 200
    r = await api("GET", url(f"{d}/c.txt"), headers={"If-None-Match": "garbage"})
    assert r.status == 400
    r = await api("GET", url(f"{d}/c.txt"), headers={"If-None-Match": ""})  # empty: no condition
    assert r.status == 200


# -- ETags ------------------------------------------------------------------------------------


async def test_etag_changes_on_every_write_even_same_size_same_second(api: Api, d: str) -> None:
    etags = []
    for i in range(60):
        r = await put(api, f"{d}/e.txt", b"A" if i % 2 else b"B")
        etags.append(r.body["etag"])
        # The read answers the same tag as the write.
        assert (await api("GET", url(f"{d}/e.txt"))).headers["ETag"] == etags[-1]
    assert len(set(etags)) == len(etags)


async def test_etag_changes_when_inode_is_recycled(api: Api, d: str) -> None:
    """Delete and recreate with the same size: the file system may hand out the same inode again."""
    etags = set()
    for _ in range(20):
        r = await put(api, f"{d}/recycled.txt", b"same")
        etags.add(r.body["etag"])
        assert (await api("DELETE", url(f"{d}/recycled.txt"))).status == 204
    assert len(etags) == 20


def test_commit_stamps_strictly_increasing_modification_times(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(os.fspath(tmp_path), "f")
    previous = None
    seen = set()
    for _ in range(200):
        with AtomicWriter(target) as writer:
            writer.write(b"x")
        st = os.stat(target)
        assert previous is None or st.st_mtime_ns > previous
        previous = st.st_mtime_ns
        seen.add(file_etag(st))
    assert len(seen) == 200
    # Even a previous version stamped in the future is passed.
    future = next_mtime_ns() + 10**12
    os.utime(target, ns=(future, future))
    with AtomicWriter(target) as writer:
        writer.write(b"y")
    assert os.stat(target).st_mtime_ns > future


# -- write preconditions and conflicts -----------------------------------------------------------


async def test_if_match(api: Api, server: ServerThread, d: str) -> None:
    etag = (await put(api, f"{d}/m.txt", b"v1")).body["etag"]
    r = await put(api, f"{d}/m.txt", b"v2", {"If-Match": etag})
    assert r.status == 200
    new_etag = r.body["etag"]
    # The old tag is stale now: refused, nothing changes.
    r = await put(api, f"{d}/m.txt", b"v3", {"If-Match": etag})
    assert r.status == 412 and r.error_code == "precondition_failed"
    assert r.body["error"]["details"]["current_etag"] == new_etag
    assert open(disk(server, f"{d}/m.txt"), "rb").read() == b"v2"
    assert (await put(api, f"{d}/m.txt", b"v3", {"If-Match": f'"x", {new_etag}'})).status == 200
    assert (await put(api, f"{d}/m.txt", b"v4", {"If-Match": "*"})).status == 200
    # Weak tags never match If-Match (strong comparison).
    current = (await api("GET", url(f"{d}/m.txt"))).headers["ETag"]
    assert (await put(api, f"{d}/m.txt", b"v5", {"If-Match": f"W/{current}"})).status == 412
    # If-Match on a missing file fails.
    assert (await put(api, f"{d}/missing.txt", b"x", {"If-Match": "*"})).status == 412
    assert not os.path.exists(disk(server, f"{d}/missing.txt"))
    assert leftovers(disk(server, d)) == []


async def test_if_none_match_star_creates_only(api: Api, server: ServerThread, d: str) -> None:
    assert (await put(api, f"{d}/new.txt", b"first", {"If-None-Match": "*"})).status == 201
    r = await put(api, f"{d}/new.txt", b"second", {"If-None-Match": "*"})
    assert r.status == 412
    assert open(disk(server, f"{d}/new.txt"), "rb").read() == b"first"


async def test_concurrent_writers_with_the_same_if_match_one_wins(api: Api, server: ServerThread, d: str) -> None:
    etag = (await put(api, f"{d}/race.txt", b"base")).body["etag"]
    payloads = [f"writer {i}".encode() * 1000 for i in range(12)]
    results = await asyncio.gather(*(put(api, f"{d}/race.txt", p, {"If-Match": etag}) for p in payloads))
    statuses = sorted(r.status for r in results)
    assert statuses == [200] + [412] * 11
    winner = next(p for p, r in zip(payloads, results) if r.status == 200)
    assert open(disk(server, f"{d}/race.txt"), "rb").read() == winner


async def test_concurrent_creators_with_if_none_match_one_wins(api: Api, server: ServerThread, d: str) -> None:
    payloads = [f"creator {i}".encode() for i in range(10)]
    results = await asyncio.gather(*(put(api, f"{d}/once.txt", p, {"If-None-Match": "*"}) for p in payloads))
    assert sorted(r.status for r in results) == [201] + [412] * 9


async def test_write_keeps_permission_bits(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/run.sh", b"#!/bin/sh\n")
    os.chmod(disk(server, f"{d}/run.sh"), 0o751)
    await put(api, f"{d}/run.sh", b"#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(os.stat(disk(server, f"{d}/run.sh")).st_mode) == 0o751


async def test_write_creates_parents(api: Api, server: ServerThread, d: str) -> None:
    assert (await put(api, f"{d}/a/b/c/deep.txt", b"deep")).status == 201
    assert open(disk(server, f"{d}/a/b/c/deep.txt"), "rb").read() == b"deep"


async def test_write_conflicts(api: Api, server: ServerThread, d: str) -> None:
    os.mkdir(disk(server, f"{d}/dir"))
    r = await put(api, f"{d}/dir", b"x")
    assert r.status == 409 and r.error_code == "is_a_directory"
    r = await api("PUT", "/api/v1/files/", raw=b"x")
    assert r.status == 409 and r.error_code == "is_a_directory"
    await put(api, f"{d}/file", b"x")
    r = await put(api, f"{d}/file/child.txt", b"x")
    assert r.status == 409 and r.error_code == "not_a_directory"
    r = await put(api, f"{d}/file/a/b.txt", b"x")
    assert r.status == 409 and r.error_code == "not_a_directory"
    r = await put(api, f"{d}/trailing/", b"x")
    assert r.status == 400
    assert leftovers(disk(server, d)) == []


async def test_write_through_symlink_writes_its_target(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/real.txt", b"old")
    os.symlink("real.txt", disk(server, f"{d}/link.txt"))
    assert (await put(api, f"{d}/link.txt", b"new")).status == 200
    assert os.path.islink(disk(server, f"{d}/link.txt"))
    assert open(disk(server, f"{d}/real.txt"), "rb").read() == b"new"
    # A dangling link inside the workspace: the write creates its target.
    os.symlink("later.txt", disk(server, f"{d}/pending"))
    assert (await put(api, f"{d}/pending", b"made")).status == 201
    assert open(disk(server, f"{d}/later.txt"), "rb").read() == b"made"


async def test_write_empty_and_chunked_bodies(api: Api, server: ServerThread, d: str) -> None:
    assert (await put(api, f"{d}/empty.txt", b"")).status == 201
    assert os.path.getsize(disk(server, f"{d}/empty.txt")) == 0
    data = os.urandom(3 << 20)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"PUT {url(d + '/chunked.bin')} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    for i in range(0, len(data), 100_000):
        piece = data[i : i + 100_000]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    assert open(disk(server, f"{d}/chunked.bin"), "rb").read() == data


# -- limits: 413 and 507 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(servers: ServerPool) -> ServerThread:
    """A server with --max-upload-size 1M."""
    return servers.get("--max-upload-size", "1M")


async def test_body_over_max_upload_size_is_413_and_nothing_changes(small: ServerThread) -> None:
    os.makedirs(os.path.join(small.workspace, "lim"), exist_ok=True)
    target = os.path.join(small.workspace, "lim", "keep.txt")
    with open(target, "wb") as f:
        f.write(b"original")
    r = await small.request("PUT", url("lim/keep.txt"), raw=b"x" * ((1 << 20) + 1))
    assert r.status == 413 and r.error_code == "body_too_large"
    assert open(target, "rb").read() == b"original"
    r = await small.request("PUT", url("lim/new/deep/file.txt"), raw=b"x" * ((1 << 20) + 1))
    assert r.status == 413
    assert not os.path.exists(os.path.join(small.workspace, "lim", "new"))  # not even the parents
    assert (await small.request("PUT", url("lim/keep.txt"), raw=b"x" * (1 << 20))).status == 200
    assert leftovers(small.workspace) == []


async def test_chunked_body_over_max_upload_size_is_413(small: ServerThread) -> None:
    os.makedirs(os.path.join(small.workspace, "lim2"), exist_ok=True)
    target = os.path.join(small.workspace, "lim2", "keep.txt")
    with open(target, "wb") as f:
        f.write(b"original")
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    writer.write(
        f"PUT {url('lim2/keep.txt')} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    chunk = b"y" * 65536
    try:
        for _ in range(40):  # 2.5 MiB, over the 1 MiB limit
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    await asyncio.sleep(0.2)  # the temporary file is removed in the thread pool
    assert open(target, "rb").read() == b"original"
    assert leftovers(small.workspace) == []


async def test_expect_continue_over_limit_is_refused_before_the_body(small: ServerThread) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    writer.write(
        f"PUT {url('lim/x.bin')} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {10 << 20}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413")


async def test_precondition_failure_with_expect_continue_is_answered_at_once(
    api: Api, server: ServerThread, d: str
) -> None:
    await put(api, f"{d}/exists.txt", b"x")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"PUT {url(d + '/exists.txt')} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
        "If-None-Match: *\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 412"), head


async def test_disk_full_is_507_and_nothing_half_written(servers: ServerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the disk fills up after 1 MiB of a 3 MiB write."""
    server = servers.fresh()
    try:
        target = os.path.join(server.workspace, "full.bin")
        with open(target, "wb") as f:
            f.write(b"original")
        real_write = AtomicWriter.write

        def failing_write(self: AtomicWriter, data: Any) -> None:
            if self.size + len(data) > (1 << 20):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(self, data)

        monkeypatch.setattr(AtomicWriter, "write", failing_write)
        r = await server.request("PUT", url("full.bin"), raw=os.urandom(3 << 20))
        assert r.status == 507 and r.error_code == "insufficient_storage"
        r = await server.request("PUT", url("new/full.bin"), raw=os.urandom(3 << 20))
        assert r.status == 507
        monkeypatch.undo()
        assert open(target, "rb").read() == b"original"
        assert not os.path.exists(os.path.join(server.workspace, "new"))
        assert leftovers(server.workspace) == []
        assert (await server.request("PUT", url("full.bin"), raw=b"fine")).status == 200
    finally:
        server.stop()


async def test_disk_full_on_a_real_small_file_system(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    """A 2 MiB tmpfs as a folder of the workspace (needs root and mount rights; skipped elsewhere)."""
    import subprocess

    workspace = os.path.join(os.fspath(tmp_path), "ws")
    small_fs = os.path.join(workspace, "small")
    os.makedirs(small_fs)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small_fs], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    server = servers.fresh(workspace=workspace)
    try:
        with open(os.path.join(small_fs, "keep.bin"), "wb") as f:
            f.write(b"k" * (512 << 10))
        r = await server.request("PUT", url("small/keep.bin"), raw=b"n" * (3 << 20))
        assert r.status == 507 and r.error_code == "insufficient_storage"
        assert open(os.path.join(small_fs, "keep.bin"), "rb").read() == b"k" * (512 << 10)
        assert leftovers(small_fs) == []
        # Space is back: the same write of something that fits works.
        assert (await server.request("PUT", url("small/keep.bin"), raw=b"n" * (256 << 10))).status == 200
    finally:
        server.stop()
        subprocess.run(["umount", "-l", small_fs], capture_output=True)


async def test_client_gone_mid_body_leaves_nothing(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/kept.txt", b"kept")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        f"PUT {url(d + '/kept.txt')} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {4 << 20}\r\n\r\n".encode()
    )
    sock.sendall(b"z" * (1 << 20))
    await asyncio.sleep(0.3)
    sock.close()
    for _ in range(50):
        await asyncio.sleep(0.05)
        if not leftovers(disk(server, d)):
            break
    assert leftovers(disk(server, d)) == []
    assert open(disk(server, f"{d}/kept.txt"), "rb").read() == b"kept"


# -- delete ----------------------------------------------------------------------------------


async def test_delete_file_and_missing(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/x.txt", b"x")
    r = await api("DELETE", url(f"{d}/x.txt"))
    assert r.status == 204 and r.raw == b""
    assert not os.path.exists(disk(server, f"{d}/x.txt"))
    r = await api("DELETE", url(f"{d}/x.txt"))
    assert r.status == 404 and r.error_code == "not_found"


async def test_delete_directory_needs_recursive(api: Api, server: ServerThread, d: str) -> None:
    os.mkdir(disk(server, f"{d}/empty"))
    assert (await api("DELETE", url(f"{d}/empty"))).status == 204
    await put(api, f"{d}/full/a/b.txt", b"x")
    r = await api("DELETE", url(f"{d}/full"))
    assert r.status == 409 and r.error_code == "directory_not_empty"
    assert os.path.exists(disk(server, f"{d}/full/a/b.txt"))
    assert (await api("DELETE", url(f"{d}/full", recursive="false"))).status == 409
    assert (await api("DELETE", url(f"{d}/full", recursive="maybe"))).status == 400
    assert (await api("DELETE", url(f"{d}/full", recursive="true"))).status == 204
    assert not os.path.exists(disk(server, f"{d}/full"))


@pytest.mark.parametrize("path", ["", ".", "./", "src/..", "a/b/../.."])
async def test_delete_root_is_refused(api: Api, server: ServerThread, path: str) -> None:
    r = await api("DELETE", "/api/v1/files/" + urllib.parse.quote(path, safe="") + "?recursive=true")
    assert r.status == 403 and r.error_code == "cannot_delete_root"
    assert os.path.isdir(server.workspace)


async def test_delete_state_directory_is_refused(api: Api, server: ServerThread) -> None:
    r = await api("DELETE", url(".wsruntime", recursive="true"))
    assert r.status == 403 and r.error_code == "protected_path"
    assert os.path.isdir(server.config.state_dir)


async def test_delete_symlink_deletes_the_link(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/target/keep.txt", b"keep")
    os.symlink("target", disk(server, f"{d}/dirlink"))
    os.symlink("target/keep.txt", disk(server, f"{d}/filelink"))
    assert (await api("DELETE", url(f"{d}/dirlink", recursive="true"))).status == 204
    assert (await api("DELETE", url(f"{d}/filelink"))).status == 204
    assert not os.path.lexists(disk(server, f"{d}/dirlink")) and not os.path.lexists(disk(server, f"{d}/filelink"))
    assert open(disk(server, f"{d}/target/keep.txt"), "rb").read() == b"keep"


async def test_delete_if_match(api: Api, server: ServerThread, d: str) -> None:
    etag = (await put(api, f"{d}/x.txt", b"1")).body["etag"]
    await put(api, f"{d}/x.txt", b"2")
    r = await api("DELETE", url(f"{d}/x.txt"), headers={"If-Match": etag})
    assert r.status == 412
    assert os.path.exists(disk(server, f"{d}/x.txt"))
    current = (await api("GET", url(f"{d}/x.txt"))).headers["ETag"]
    assert (await api("DELETE", url(f"{d}/x.txt"), headers={"If-Match": current})).status == 204


# -- move and mkdir ----------------------------------------------------------------------------


async def move(api: Api, source: str, target: str, **extra: Any) -> Response:
    headers = extra.pop("headers", None)
    return await api("POST", "/api/v1/files/move", body={"from": source, "to": target, **extra}, headers=headers)


async def test_move_and_rename(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/a.txt", b"a")
    r = await move(api, f"{d}/a.txt", f"{d}/new/parents/b.txt")
    assert r.status == 200 and r.body == {"path": f"{d}/new/parents/b.txt"}
    assert not os.path.exists(disk(server, f"{d}/a.txt"))
    assert open(disk(server, f"{d}/new/parents/b.txt"), "rb").read() == b"a"
    r = await move(api, f"{d}/missing", f"{d}/x")
    assert r.status == 404
    # A directory moves with its content.
    r = await move(api, f"{d}/new", f"{d}/renamed")
    assert r.status == 200
    assert os.path.exists(disk(server, f"{d}/renamed/parents/b.txt"))


async def test_move_onto_existing(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/a.txt", b"a")
    await put(api, f"{d}/b.txt", b"b")
    r = await move(api, f"{d}/a.txt", f"{d}/b.txt")
    assert r.status == 409 and r.error_code == "already_exists"
    assert open(disk(server, f"{d}/b.txt"), "rb").read() == b"b"
    r = await move(api, f"{d}/a.txt", f"{d}/b.txt", overwrite=True)
    assert r.status == 200
    assert open(disk(server, f"{d}/b.txt"), "rb").read() == b"a"
    os.makedirs(disk(server, f"{d}/dir/inner"))
    await put(api, f"{d}/c.txt", b"c")
    r = await move(api, f"{d}/c.txt", f"{d}/dir", overwrite=True)
    assert r.status == 409 and r.error_code == "is_a_directory"
    r = await move(api, f"{d}/dir", f"{d}/c.txt", overwrite=True)
    assert r.status == 409


async def test_move_into_itself_and_root(api: Api, d: str) -> None:
    await put(api, f"{d}/dir/x.txt", b"x")
    r = await move(api, f"{d}/dir", f"{d}/dir/sub/dir")
    assert r.status == 400 and r.error_code == "invalid_move"
    r = await move(api, "", f"{d}/root")
    assert r.status == 403
    r = await move(api, f"{d}/dir", "")
    assert r.status == 409
    r = await move(api, f"{d}/dir", f"{d}/dir")
    assert r.status == 200


async def test_move_preconditions(api: Api, server: ServerThread, d: str) -> None:
    etag = (await put(api, f"{d}/a.txt", b"1")).body["etag"]
    await put(api, f"{d}/a.txt", b"2")
    r = await move(api, f"{d}/a.txt", f"{d}/b.txt", headers={"If-Match": etag})
    assert r.status == 412
    await put(api, f"{d}/c.txt", b"c")
    r = await move(api, f"{d}/a.txt", f"{d}/c.txt", overwrite=True, headers={"If-None-Match": "*"})
    assert r.status == 412
    assert open(disk(server, f"{d}/c.txt"), "rb").read() == b"c"
    current = (await api("GET", url(f"{d}/a.txt"))).headers["ETag"]
    assert (await move(api, f"{d}/a.txt", f"{d}/b.txt", headers={"If-Match": current})).status == 200


async def test_move_symlink_moves_the_link(api: Api, server: ServerThread, d: str) -> None:
    await put(api, f"{d}/t.txt", b"t")
    os.symlink(os.path.join(disk(server, d), "t.txt"), disk(server, f"{d}/l"))  # absolute, inside
    assert (await move(api, f"{d}/l", f"{d}/moved-link")).status == 200
    assert os.path.islink(disk(server, f"{d}/moved-link"))
    assert open(disk(server, f"{d}/t.txt"), "rb").read() == b"t"


async def test_move_bad_bodies(api: Api, d: str) -> None:
    for body in ({"from": "a"}, {"from": 1, "to": "b"}, {"from": "a", "to": "b", "overwrite": "yes"}, {}):
        r = await api("POST", "/api/v1/files/move", body=body)
        assert r.status == 400, body


async def test_mkdir(api: Api, server: ServerThread, d: str) -> None:
    r = await api("POST", "/api/v1/files/mkdir", body={"path": f"{d}/a/b/c"})
    assert r.status == 201 and r.body == {"path": f"{d}/a/b/c", "created": True}
    assert os.path.isdir(disk(server, f"{d}/a/b/c"))
    r = await api("POST", "/api/v1/files/mkdir", body={"path": f"{d}/a/b/c"})
    assert r.status == 409 and r.error_code == "already_exists"
    r = await api("POST", "/api/v1/files/mkdir", body={"path": f"{d}/a/b/c", "exist_ok": True})
    assert r.status == 200 and r.body["created"] is False
    await put(api, f"{d}/f", b"x")
    assert (await api("POST", "/api/v1/files/mkdir", body={"path": f"{d}/f"})).status == 409
    assert (await api("POST", "/api/v1/files/mkdir", body={"path": f"{d}/f", "exist_ok": True})).status == 409
    r = await api("POST", "/api/v1/files/mkdir", body={"path": f"{d}/f/sub"})
    assert r.status == 409 and r.error_code == "not_a_directory"
    assert (await api("POST", "/api/v1/files/mkdir", body={"path": 5})).status == 400


# -- listing ----------------------------------------------------------------------------------


async def test_list_order_and_shape(api: Api, server: ServerThread, d: str) -> None:
    for name in ("b.py", "A.txt", ".hidden", "zdir/x", "adir/y"):
        await put(api, f"{d}/{name}", b"12")
    os.symlink("adir", disk(server, f"{d}/link"))
    os.symlink("nowhere", disk(server, f"{d}/broken"))
    os.symlink("/etc", disk(server, f"{d}/outward"))
    r = await api("GET", "/api/v1/files?" + urllib.parse.urlencode({"path": d}))
    assert r.status == 200
    body = r.body
    assert body["path"] == d and body["truncated"] is False and body["total"] == 8
    names = [e["name"] for e in body["entries"]]
    assert names == ["adir", "zdir", ".hidden", "A.txt", "b.py", "broken", "link", "outward"]
    by_name = {e["name"]: e for e in body["entries"]}
    assert by_name["adir"]["type"] == "directory" and by_name["adir"]["path"] == f"{d}/adir"
    assert by_name["b.py"] == {
        "name": "b.py",
        "path": f"{d}/b.py",
        "type": "file",
        "size": 2,
        "modified": by_name["b.py"]["modified"],
        "mime": "text/x-python",
    }
    assert by_name["link"]["type"] == "symlink" and by_name["link"]["target"] == "adir"
    assert by_name["link"]["size"] == 4 and by_name["link"]["target_type"] == "directory"
    assert by_name["broken"]["target"] == "nowhere" and by_name["broken"]["target_type"] is None
    assert by_name["outward"]["target"] == "/etc" and by_name["outward"]["target_type"] is None


async def test_list_hidden_and_limit(api: Api, d: str) -> None:
    for name in (".a", ".b", "c", "d", "e"):
        await put(api, f"{d}/{name}", b"")
    await put(api, f"{d}/sub/x", b"")
    r = await api("GET", f"/api/v1/files?path={d}&hidden=false")
    assert [e["name"] for e in r.body["entries"]] == ["sub", "c", "d", "e"]
    r = await api("GET", f"/api/v1/files?path={d}&limit=3")
    assert [e["name"] for e in r.body["entries"]] == ["sub", ".a", ".b"]
    assert r.body["truncated"] is True and r.body["total"] == 6
    r = await api("GET", f"/api/v1/files?path={d}&limit=6")
    assert r.body["truncated"] is False
    r = await api("GET", url(d, limit=2, hidden="false"))
    assert [e["name"] for e in r.body["entries"]] == ["sub", "c"] and r.body["truncated"] is True
    for bad in ("limit=-1", "limit=x", "hidden=maybe"):
        assert (await api("GET", f"/api/v1/files?path={d}&{bad}")).status == 400


async def test_list_errors(api: Api, d: str) -> None:
    r = await api("GET", f"/api/v1/files?path={d}/missing")
    assert r.status == 404 and r.error_code == "not_found"
    await put(api, f"{d}/f.txt", b"")
    r = await api("GET", f"/api/v1/files?path={d}/f.txt")
    assert r.status == 400 and r.error_code == "not_a_directory"
    root = await api("GET", "/api/v1/files")
    assert root.status == 200 and root.body["path"] == ""


async def test_list_survives_odd_entries(api: Api, server: ServerThread, d: str) -> None:
    """A FIFO, a symlink loop, a broken link and a name that is not UTF-8 never fail a listing."""
    base = disk(server, d)
    os.mkfifo(os.path.join(base, "fifo"))
    os.symlink("loop2", os.path.join(base, "loop1"))
    os.symlink("loop1", os.path.join(base, "loop2"))
    os.symlink("gone", os.path.join(base, "dangling"))
    with open(os.path.join(os.fsencode(base), b"bad-\xff-name"), "wb") as f:
        f.write(b"x")
    unreadable = os.path.join(base, "locked")
    os.mkdir(unreadable)
    os.chmod(unreadable, 0)
    try:
        r = await api("GET", f"/api/v1/files?path={d}")
    finally:
        os.chmod(unreadable, 0o755)
    assert r.status == 200
    by_name = {e["name"]: e for e in r.body["entries"]}
    assert by_name["fifo"]["type"] == "other"
    assert by_name["loop1"]["type"] == "symlink" and by_name["loop1"]["target_type"] is None
    assert by_name["dangling"]["target_type"] is None
    assert by_name["bad-\ufffd-name"]["invalid_name"] is True
    assert by_name["locked"]["type"] == "directory"


async def test_listing_a_huge_directory_does_not_hold_up_other_requests(
    servers: ServerPool, tmp_path: os.PathLike[str]
) -> None:
    """100k entries are listed in the thread pool: /health answers while the listing is under way."""
    workspace = os.path.join(os.fspath(tmp_path), "ws")
    big = os.path.join(workspace, "big")
    os.makedirs(big)
    for i in range(100_000):
        os.close(os.open(os.path.join(big, f"f{i:06d}.txt"), os.O_CREAT | os.O_WRONLY, 0o644))
    server = servers.fresh(workspace=workspace)
    try:
        order: list[str] = []

        async def listing() -> Response:
            r = await server.request("GET", "/api/v1/files?path=big", timeout=120)
            order.append("listing")
            return r

        async def health() -> None:
            await asyncio.sleep(0.02)  # the listing has started
            for _ in range(5):
                assert (await server.request("GET", "/health")).status == 200
            order.append("health")

        r, _ = await asyncio.gather(listing(), health())
        assert order == ["health", "listing"]
        assert r.status == 200 and r.body["total"] == 100_000 and len(r.body["entries"]) == 100_000
        assert r.body["entries"][0]["name"] == "f000000.txt"
        limited = await server.request("GET", "/api/v1/files?path=big&limit=10")
        assert len(limited.body["entries"]) == 10 and limited.body["truncated"] is True
    finally:
        server.stop()


# -- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["upload", "move", "mkdir"])
async def test_files_named_like_actions_stay_reachable(api: Api, server: ServerThread, name: str) -> None:
    assert (await api("PUT", f"/api/v1/files/{name}", raw=b"content")).status in (200, 201)
    r = await api("GET", f"/api/v1/files/{name}")
    assert r.status == 200 and r.raw == b"content"
    assert (await api("DELETE", f"/api/v1/files/{name}")).status == 204


async def test_post_to_a_file_is_405(api: Api, d: str) -> None:
    r = await api("POST", url(f"{d}/x"), raw=b"")
    assert r.status == 405
    assert r.headers["Allow"] == "GET, HEAD, PUT, DELETE, OPTIONS"


async def test_preflight_for_upload_allows_post(servers: ServerPool) -> None:
    server = servers.get("--allow-origin", "http://app.example")
    r = await server.request(
        "OPTIONS",
        "/api/v1/files/upload",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status == 204
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    r = await server.request("OPTIONS", "/api/v1/files/some/file.txt", headers={"Origin": "http://app.example"})
    assert "PUT" in r.headers["Access-Control-Allow-Methods"]
    assert "If-Match" in r.headers["Access-Control-Allow-Headers"]


async def test_token_is_required(secured: ServerThread) -> None:
    for method, path in [
        ("GET", "/api/v1/files"),
        ("GET", "/api/v1/files/x"),
        ("PUT", "/api/v1/files/x"),
        ("DELETE", "/api/v1/files/x"),
        ("POST", "/api/v1/files/upload"),
        ("POST", "/api/v1/files/move"),
        ("POST", "/api/v1/files/mkdir"),
        ("GET", "/api/v1/search?q=x"),
    ]:
        r = await secured.request(method, path, raw=b"x" if method in ("PUT", "POST") else None)
        assert r.status == 401, (method, path)
    assert not os.path.exists(os.path.join(secured.workspace, "x"))
