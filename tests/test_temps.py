"""The registry of the runtime's own temporary files (temps.py): what a crash leaves is removed, nothing else.

A "crash" here is a writer whose temporary file was created and written but
neither committed nor aborted — what a SIGKILL leaves; test_temps_process.py
kills a real runtime.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest

from wsruntime_ext.paths import AtomicWriter, atomic_write
from wsruntime_ext.temps import TempRegistry


def _setup(tmp_path: pathlib.Path) -> tuple[str, str, TempRegistry]:
    workspace = str(tmp_path / "ws")
    state = os.path.join(workspace, ".wsruntime")
    os.makedirs(state)
    return workspace, state, TempRegistry(state, [workspace])


def _crashed_writer(target: str, temps: TempRegistry, data: bytes = b"partial") -> str:
    writer = AtomicWriter(target, temps=temps)
    writer.write(data)
    writer.file.flush()
    writer.file.close()  # the process "dies": no commit, no abort
    temps.close()  # … and lets go of its journal
    return writer.temp_path


def test_a_temporary_left_by_a_crash_is_removed_at_the_next_start(tmp_path: pathlib.Path) -> None:
    workspace, state, temps = _setup(tmp_path)
    with open(os.path.join(workspace, "doc.txt"), "wb") as f:
        f.write(b"old")
    left = _crashed_writer(os.path.join(workspace, "doc.txt"), temps)
    assert os.path.exists(left)
    report = TempRegistry(state, [workspace]).clean()
    assert report == {"records": 1, "removed": 1, "refused": 0}
    assert not os.path.exists(left)
    with open(os.path.join(workspace, "doc.txt"), "rb") as f:
        assert f.read() == b"old"
    assert [n for n in os.listdir(temps.directory) if n != ".lock"] == []


def test_finished_writes_leave_no_record(tmp_path: pathlib.Path) -> None:
    workspace, _state, temps = _setup(tmp_path)
    atomic_write(os.path.join(workspace, "a.txt"), b"a", temps=temps)
    writer = AtomicWriter(os.path.join(workspace, "b.txt"), temps=temps)
    writer.write(b"b")
    writer.abort()
    with pytest.raises(RuntimeError), AtomicWriter(os.path.join(workspace, "c.txt"), temps=temps) as failing:
        failing.write(b"c")
        raise RuntimeError("a failed write")
    assert temps.outstanding() == {}
    temps.close()
    assert TempRegistry(os.path.dirname(temps.directory), [workspace]).records() == []  # every record closed
    assert sorted(os.listdir(workspace)) == [".wsruntime", "a.txt"]


def test_a_users_file_that_looks_like_a_temporary_is_never_touched(tmp_path: pathlib.Path) -> None:
    workspace, state, temps = _setup(tmp_path)
    mine = os.path.join(workspace, ".notes.txt.0123456789ab.wsrt-tmp")
    with open(mine, "wb") as f:
        f.write(b"a user's file")
    left = _crashed_writer(os.path.join(workspace, "notes.txt"), temps)
    TempRegistry(state, [workspace]).clean()
    assert not os.path.exists(left)
    with open(mine, "rb") as f:
        assert f.read() == b"a user's file"


def _forge(temps: TempRegistry, token: str, path: str) -> None:
    with open(os.path.join(temps.directory, token), "wb") as f:
        f.write(os.fsencode(path))


def test_records_that_do_not_name_a_temporary_of_ours_are_refused(tmp_path: pathlib.Path) -> None:
    workspace, state, temps = _setup(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {
        # the token in the name differs from the record's
        "aaaaaaaaaaaa": os.path.join(workspace, ".x.bbbbbbbbbbbb.wsrt-tmp"),
        # not a temporary's name at all
        "cccccccccccc": os.path.join(workspace, "precious.txt"),
        # a temporary's name, but outside every root
        "dddddddddddd": str(outside / ".y.dddddddddddd.wsrt-tmp"),
    }
    for token, path in victims.items():
        with open(path, "wb") as f:
            f.write(b"keep")
        _forge(temps, token, path)
    # through a symlinked directory: the link leads outside
    os.symlink(str(outside), os.path.join(workspace, "link"))
    through_link = str(outside / ".z.eeeeeeeeeeee.wsrt-tmp")
    with open(through_link, "wb") as f:
        f.write(b"keep")
    _forge(temps, "eeeeeeeeeeee", os.path.join(workspace, "link", ".z.eeeeeeeeeeee.wsrt-tmp"))
    # a symlink with a temporary's name: neither it nor what it points at is removed
    target = os.path.join(workspace, "target.txt")
    with open(target, "wb") as f:
        f.write(b"keep")
    link_name = os.path.join(workspace, ".t.ffffffffffff.wsrt-tmp")
    os.symlink(target, link_name)
    _forge(temps, "ffffffffffff", link_name)

    report = TempRegistry(state, [workspace]).clean()
    assert report["removed"] == 0
    assert report["refused"] == 5
    for path in [*victims.values(), through_link, target]:
        with open(path, "rb") as f:
            assert f.read() == b"keep", path
    assert os.path.islink(link_name)
    assert [n for n in os.listdir(temps.directory) if n != ".lock"] == []  # refused records are dropped too


def test_the_clean_up_reads_the_records_not_the_workspace(tmp_path: pathlib.Path, monkeypatch: Any) -> None:
    """A large workspace starts at once: only the records directory is listed, only recorded paths touched."""
    workspace, state, temps = _setup(tmp_path)
    for i in range(200):
        os.makedirs(os.path.join(workspace, f"d{i}"))
        with open(os.path.join(workspace, f"d{i}", "f.txt"), "wb") as f:
            f.write(b"x")
    left = [_crashed_writer(os.path.join(workspace, f"d{i}", "f.txt"), temps) for i in (3, 77)]
    listed: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def listdir(path: Any = ".") -> list[str]:
        listed.append(os.fspath(path))
        return real_listdir(path)

    def scandir(path: Any = ".") -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "walk", lambda *a, **k: pytest.fail("the clean-up walked a tree"))
    report = TempRegistry(state, [workspace]).clean()
    monkeypatch.undo()
    assert report["removed"] == 2
    assert listed == [temps.directory]
    assert not any(os.path.exists(p) for p in left)


def test_a_live_runtime_keeps_its_temporaries(tmp_path: pathlib.Path) -> None:
    """A second runtime on the same state directory does not remove what the first is writing."""
    workspace, state, temps = _setup(tmp_path)
    assert temps.acquire()
    writer = AtomicWriter(os.path.join(workspace, "busy.txt"), temps=temps)
    writer.write(b"half")
    report = TempRegistry(state, [workspace]).clean()
    assert report["removed"] == 0
    assert os.path.exists(writer.temp_path)
    writer.commit()
    with open(os.path.join(workspace, "busy.txt"), "rb") as f:
        assert f.read() == b"half"


def test_writes_go_on_when_the_records_directory_was_removed(tmp_path: pathlib.Path) -> None:
    workspace, _state, temps = _setup(tmp_path)
    os.rmdir(temps.directory)
    atomic_write(os.path.join(workspace, "a.txt"), b"a", temps=temps)
    with open(os.path.join(workspace, "a.txt"), "rb") as f:
        assert f.read() == b"a"
    assert temps.outstanding() == {}
