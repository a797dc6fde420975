"""Small writes landed in groups (files/group.py): each keeps every guarantee of a write alone."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import uuid
from typing import Any

import pytest

from tests.conftest import Response, ServerThread
from tests.test_files import Api, disk, leftovers, put
from wsruntime_ext import paths
from wsruntime_ext.config import parse_config
from wsruntime_ext.files import group
from wsruntime_ext.files.group import WriteGroups
from wsruntime_ext.files.handlers import SMALL_WRITE
from wsruntime_ext.files.service import FileService, Preconditions
from wsruntime_ext.paths import file_etag
from wsruntime_ext.temps import TempRegistry

NO_PRECONDITIONS = Preconditions(None, None)


@pytest.fixture
def d(server: ServerThread) -> str:
    """A fresh directory of the shared server's workspace for one test (its relative path)."""
    rel = "g-" + uuid.uuid4().hex[:10]
    os.mkdir(os.path.join(server.workspace, rel))
    return rel


@pytest.fixture
def groups(tmp_path: Any) -> WriteGroups:
    workspace, state = tmp_path / "ws", tmp_path / "state"
    workspace.mkdir()
    config = parse_config(["--workspace", str(workspace), "--state-dir", str(state)], {})
    return WriteGroups(FileService(config, TempRegistry(config.state_dir, [config.workspace])))


async def test_a_write_is_answered_after_its_directory_is_synced_and_a_group_syncs_it_once(
    groups: WriteGroups, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group, "WRITERS", 1)
    root = groups.files.root
    syncs: list[tuple[str, set[str]]] = []  # (directory, the files in place with their new content) at each fsync
    first_sync = threading.Event()
    release = threading.Event()
    expected = {f"f{i}.txt": f"content {i}".encode() for i in range(40)}

    def fsync_directory(path: str) -> None:
        landed = {n for n, data in expected.items() if _read(os.path.join(root, n)) == data}
        syncs.append((path, landed))
        if len(syncs) == 1:
            first_sync.set()
            assert release.wait(10)

    monkeypatch.setattr(group, "fsync_directory", fsync_directory)
    answered_after: dict[str, int] = {}  # file → how many directory fsyncs had begun when it was answered
    futures = []

    def write(name: str) -> None:
        future = groups.write(name, expected[name], NO_PRECONDITIONS)
        future.add_done_callback(lambda _f: answered_after.__setitem__(name, len(syncs)))
        futures.append(future)

    write("f0.txt")
    assert await asyncio.to_thread(first_sync.wait, 10)  # the writer waits in the first group's fsync
    for i in range(1, 40):
        write(f"f{i}.txt")
    release.set()
    results = await asyncio.gather(*futures)
    assert all(r[1]["created"] for r in results)
    # Queued while the thread was busy: taken 16 at a time, one directory fsync a group.
    assert len(syncs) == 1 + 3 and {directory for directory, _ in syncs} == {root}
    for name, count in answered_after.items():
        assert any(name in landed for _d, landed in syncs[:count]), name
    for name, data in expected.items():
        assert _read(os.path.join(root, name)) == data
    assert leftovers(root) == [] and groups.files.temps is not None and groups.files.temps.outstanding() == {}
    await asyncio.wrap_future(groups.close())


async def test_writes_of_one_file_in_a_group_land_in_order(
    groups: WriteGroups, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group, "WRITERS", 1)
    gate = threading.Event()
    real = paths.fsync_directory

    def slow_first(path: str) -> None:
        gate.wait(10)
        real(path)

    monkeypatch.setattr(group, "fsync_directory", slow_first)
    first = groups.write("same.txt", b"v0", NO_PRECONDITIONS)
    await asyncio.sleep(0.05)  # the thread holds v0's group in its fsync
    rest = [groups.write("same.txt", f"v{i}".encode(), NO_PRECONDITIONS) for i in range(1, 6)]
    gate.set()
    etags = [r[1]["etag"] for r in [await first, *await asyncio.gather(*rest)]]
    assert len(set(etags)) == 6  # each its own version, stamped after the one before
    assert _read(os.path.join(groups.files.root, "same.txt")) == b"v5"
    assert etags[-1] == file_etag(os.stat(os.path.join(groups.files.root, "same.txt")))
    await asyncio.wrap_future(groups.close())


async def test_closing_lands_what_is_queued_then_refuses(groups: WriteGroups) -> None:
    futures = [groups.write(f"c{i}.txt", b"x" * i, NO_PRECONDITIONS) for i in range(20)]
    closed = groups.close()
    with pytest.raises(RuntimeError):
        groups.write("late.txt", b"late", NO_PRECONDITIONS)
    await asyncio.wrap_future(closed)
    assert [r[1]["size"] for r in await asyncio.gather(*futures)] == list(range(20))
    assert not os.path.exists(os.path.join(groups.files.root, "late.txt"))


async def test_closing_before_any_write_is_done_at_once(groups: WriteGroups) -> None:
    await asyncio.wait_for(asyncio.wrap_future(groups.close()), 5)


async def test_a_failing_write_fails_alone_among_concurrent_ones(api: Api, server: ServerThread, d: str) -> None:
    """Good and bad writes sent together (so that they share groups): each gets the answer it would alone."""
    base = (await put(api, f"{d}/base.txt", b"base")).body["etag"]
    await put(api, f"{d}/plain", b"a file where a folder would be")
    os.symlink("/etc", disk(server, f"{d}/out"))
    bad: list[tuple[str, dict[str, str] | None, int, str]] = [
        (f"{d}/plain/below.txt", None, 409, "not_a_directory"),
        (f"{d}/base.txt", {"If-Match": '"stale"'}, 412, "precondition_failed"),
        (f"{d}/base.txt", {"If-None-Match": "*"}, 412, "precondition_failed"),
        (f"{d}/out/passwd", None, 403, "path_outside_workspace"),
        (f"{d}/dir/", None, 400, "invalid_path"),
    ]
    good = [(f"{d}/g{i}/n{i}.txt", f"good {i}".encode()) for i in range(25)]
    calls: list[Any] = [put(api, rel, data) for rel, data in good]
    calls += [put(api, rel, b"bad", headers) for rel, headers, _s, _c in bad]
    results: list[Response] = await asyncio.gather(*calls)
    for (rel, data), r in zip(good, results):
        assert r.status == 201, (rel, r.status, r.body)
        path = disk(server, rel)
        assert _read(path) == data and r.body["etag"] == file_etag(os.stat(path))
    for (rel, _h, status, code), r in zip(bad, results[len(good) :]):
        assert (r.status, r.error_code) == (status, code), rel
    assert _read(disk(server, f"{d}/base.txt")) == b"base"
    assert (await api("GET", f"/api/v1/files/{d}/base.txt")).headers["ETag"] == base
    assert not os.path.exists(disk(server, f"{d}/dir"))
    assert leftovers(disk(server, d)) == []


async def test_only_small_bodies_are_grouped(
    api: Api, server: ServerThread, d: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON body over SMALL_WRITE lands on its own, so that no small write waits behind its disk time."""
    assert server.runtime is not None
    groups = server.runtime.ctx.write_groups
    grouped: list[str] = []
    original = groups.write

    def spy(path: str, data: bytes, preconditions: Preconditions) -> Any:
        grouped.append(path)
        return original(path, data, preconditions)

    monkeypatch.setattr(groups, "write", spy)
    big = "b" * (SMALL_WRITE + 1)
    r = await api("PUT", f"/api/v1/files/{d}/big.txt?format=json", body={"content": big})
    assert r.status == 201 and _read(disk(server, f"{d}/big.txt")) == big.encode()
    r = await api("PUT", f"/api/v1/files/{d}/small.txt?format=json", body={"content": "small"})
    assert r.status == 201 and _read(disk(server, f"{d}/small.txt")) == b"small"
    assert (await put(api, f"{d}/raw.txt", b"raw")).status == 201
    assert grouped == [f"{d}/small.txt", f"{d}/raw.txt"]


@pytest.mark.parametrize("step", ["write", "start_writeback"])
async def test_a_full_disk_is_507_for_a_grouped_write_and_leaves_nothing(
    api: Api, server: ServerThread, d: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    await put(api, f"{d}/kept.txt", b"kept")

    def full(self: paths.AtomicWriter, *args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paths.AtomicWriter, step, full)
    results = await asyncio.gather(put(api, f"{d}/kept.txt", b"new"), put(api, f"{d}/sub/new.txt", b"new"))
    assert [(r.status, r.error_code) for r in results] == [(507, "insufficient_storage")] * 2
    monkeypatch.undo()
    assert _read(disk(server, f"{d}/kept.txt")) == b"kept" and not os.path.exists(disk(server, f"{d}/sub"))
    assert leftovers(disk(server, d)) == []


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
