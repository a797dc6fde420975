"""The workspace jail and atomic writes (paths.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from wsruntime_ext import paths
from wsruntime_ext.base import ApiError
from wsruntime_ext.paths import AtomicWriter, atomic_write, resolve_in_workspace


def make_hostile_workspace(base: str) -> str:
    """A workspace ``base/ws`` with symlinks of every kind next to a secret in ``base/outside``;
    returns the workspace's real path (shared with the HTTP jail tests)."""
    root = os.path.join(base, "ws")
    outside = os.path.join(base, "outside")
    os.makedirs(os.path.join(root, "src", "deep"))
    os.makedirs(outside)
    with open(os.path.join(outside, "secret.txt"), "w") as f:
        f.write("secret")
    with open(os.path.join(root, "src", "app.py"), "w") as f:
        f.write("print()")
    os.symlink(outside, os.path.join(root, "out"))  # directory link out
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(root, "secret-link"))  # file link out
    os.symlink("../outside", os.path.join(root, "rel-out"))  # relative link out
    os.symlink("out", os.path.join(root, "chain1"))  # chain: chain2 -> chain1 -> out -> outside
    os.symlink("chain1", os.path.join(root, "chain2"))
    os.symlink("/", os.path.join(root, "src", "rootlink"))  # nested link to /
    os.symlink(os.path.join(outside, "missing"), os.path.join(root, "dangling-out"))  # dangling, outside
    os.symlink("src", os.path.join(root, "inside-link"))  # a link that stays inside
    os.symlink("src/app.py", os.path.join(root, "app-link"))
    os.symlink("deep/../..", os.path.join(root, "src", "up-inside"))  # resolves to the root: allowed
    os.symlink("../../..", os.path.join(root, "src", "deep", "up-out"))  # resolves above the root
    os.symlink("loop-b", os.path.join(root, "loop-a"))
    os.symlink("loop-a", os.path.join(root, "loop-b"))
    return os.path.realpath(root)


@pytest.fixture
def jail(tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A workspace with symlinks of every kind next to a secret outside it."""
    yield make_hostile_workspace(os.fspath(tmp_path))


HOSTILE = [
    # absolute paths
    "/etc/passwd",
    "/",
    "//etc/passwd",
    "/tmp",
    # .. escapes
    "..",
    "../",
    "../..",
    "../../etc/passwd",
    "../outside/secret.txt",
    "src/../../outside/secret.txt",
    "src/deep/../../../outside",
    "./../outside",
    "src/./../..",
    "a/b/c/../../../../outside",
    "src/deep/../../../../../../../../etc/passwd",
    "../ws/../outside",
    ".././ws/../../outside",
    "nonexistent/../../outside/new.txt",
    # symlinks out, and chains of them
    "out",
    "out/secret.txt",
    "out/new-file.txt",
    "out/newdir/newfile",
    "secret-link",
    "rel-out",
    "rel-out/secret.txt",
    "chain1",
    "chain2",
    "chain2/secret.txt",
    "chain2/not/yet/there.txt",
    "src/rootlink",
    "src/rootlink/etc/passwd",
    "src/rootlink/tmp/new",
    "dangling-out",
    "src/deep/up-out",
    "src/deep/up-out/etc/passwd",
    "inside-link/../../outside",
    "src/up-inside/../outside",
    "out/../outside/secret.txt",  # out through the link first, as the kernel would
    "./out",
    "src//..//..//outside",
]

CONTROL = [
    "a\x00b",
    "src/app.py\x00.txt",
    "\x00",
    "line\nbreak",
    "tab\there",
    "esc\x1b[31m",
    "del\x7f",
    "cr\r",
]


@pytest.mark.parametrize("client_path", HOSTILE)
def test_hostile_path_is_refused(jail: str, client_path: str) -> None:
    with pytest.raises(ApiError) as info:
        resolve_in_workspace(jail, client_path)
    assert info.value.status_code == 403
    assert info.value.code == "path_outside_workspace"


@pytest.mark.parametrize("client_path", CONTROL)
def test_control_characters_are_refused(jail: str, client_path: str) -> None:
    with pytest.raises(ApiError) as info:
        resolve_in_workspace(jail, client_path)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_path"


def test_corpus_is_large() -> None:
    assert len(HOSTILE) + len(CONTROL) >= 40


@pytest.mark.parametrize(
    ("client_path", "rel"),
    [
        ("", ""),
        (".", ""),
        ("./", ""),
        ("src", "src"),
        ("src/", "src"),
        ("src/app.py", "src/app.py"),
        ("src//app.py", "src/app.py"),
        ("src/deep/..", "src"),
        ("src/deep/../app.py", "src/app.py"),
        ("src/../src/app.py", "src/app.py"),
        ("new/dir/file.txt", "new/dir/file.txt"),
        ("inside-link/app.py", "src/app.py"),
        ("src/up-inside", "src/up-inside"),
        ("..hidden", "..hidden"),
        ("...", "..."),
        ("~backup", "~backup"),
        ("%2e%2e", "%2e%2e"),  # already decoded once by the router: a literal name
        ("..\\..\\etc", "..\\..\\etc"),  # a backslash is an ordinary character on POSIX
        ("naïve/日本語.txt", "naïve/日本語.txt"),
    ],
)
def test_paths_inside_resolve(jail: str, client_path: str, rel: str) -> None:
    result = resolve_in_workspace(jail, client_path)
    assert result.rel == rel
    assert result.real == jail or result.real.startswith(jail + os.sep)


def test_symlink_inside_is_followed(jail: str) -> None:
    result = resolve_in_workspace(jail, "app-link")
    assert result.rel == "app-link"
    assert result.path == os.path.join(jail, "app-link")
    assert result.real == os.path.join(jail, "src", "app.py")


def test_final_link_can_be_operated_on_without_following(jail: str) -> None:
    # Deleting or listing the link itself must not be refused, nor follow it.
    result = resolve_in_workspace(jail, "secret-link", follow_final=False)
    assert result.path == os.path.join(jail, "secret-link")
    # ...but its parents are still jailed.
    with pytest.raises(ApiError):
        resolve_in_workspace(jail, "out/secret.txt", follow_final=False)


def test_symlink_loop_stays_inside(jail: str) -> None:
    result = resolve_in_workspace(jail, "loop-a")
    assert result.real.startswith(jail)


def test_not_a_string(jail: str) -> None:
    with pytest.raises(ApiError) as info:
        resolve_in_workspace(jail, 42)  # type: ignore[arg-type]
    assert info.value.status_code == 400


def test_lone_surrogates_are_refused(jail: str) -> None:
    with pytest.raises(ApiError) as info:
        resolve_in_workspace(jail, "bad\udcff")
    assert info.value.status_code == 400


# -- atomic writes --------------------------------------------------------------------


def _leftovers(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".wsrt-tmp")]


def test_atomic_write_creates_with_umask_mode(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(os.fspath(tmp_path), "new.txt")
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    st = atomic_write(target, b"hello")
    assert open(target, "rb").read() == b"hello"
    assert stat.S_IMODE(st.st_mode) == 0o666 & ~old_umask
    assert _leftovers(os.fspath(tmp_path)) == []


def test_atomic_write_keeps_mode(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(os.fspath(tmp_path), "run.sh")
    with open(target, "w") as f:
        f.write("old")
    os.chmod(target, 0o751)
    atomic_write(target, [b"new ", b"content"])
    assert open(target, "rb").read() == b"new content"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o751


def test_atomic_write_failure_leaves_old_file(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(os.fspath(tmp_path), "keep.txt")
    with open(target, "w") as f:
        f.write("original")

    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, chunks())
    assert open(target).read() == "original"
    assert _leftovers(os.fspath(tmp_path)) == []


def test_atomic_writer_abort_and_context(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(os.fspath(tmp_path), "x.bin")
    writer = AtomicWriter(target)
    writer.write(b"abc")
    writer.abort()
    assert not os.path.exists(target)
    with AtomicWriter(target) as w:
        w.write(b"xyz")
    assert open(target, "rb").read() == b"xyz"
    assert _leftovers(os.fspath(tmp_path)) == []


def test_atomic_write_onto_directory_fails_cleanly(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(os.fspath(tmp_path), "dir")
    os.mkdir(target)
    with pytest.raises(IsADirectoryError):
        atomic_write(target, b"x")
    assert os.path.isdir(target)
    assert _leftovers(os.fspath(tmp_path)) == []


def test_atomic_write_readers_never_see_partial(tmp_path: os.PathLike[str]) -> None:
    """Readers racing a stream of writes see one complete version or the other."""
    import threading

    target = os.path.join(os.fspath(tmp_path), "race.bin")
    a, b = b"a" * (256 << 10), b"b" * (256 << 10)
    atomic_write(target, a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            with open(target, "rb") as f:
                data = f.read()
            seen.add(data[:1] if data in (a, b) else b"torn")

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        atomic_write(target, a if i % 2 else b)
    stop.set()
    thread.join()
    assert b"torn" not in seen


def _reference_resolution(root: str, client_path: str) -> tuple[str, str] | None:
    """The jail's resolution done with os.path.realpath alone (what the fast path must equal)."""
    parts = [p for p in client_path.split("/") if p not in ("", ".")]
    joined = os.path.join(root, *parts)
    if parts[-1] == "..":
        return os.path.realpath(joined), os.path.realpath(joined)
    path = os.path.join(os.path.realpath(os.path.dirname(joined)), parts[-1])
    return path, os.path.realpath(path)


def test_fast_resolution_equals_realpath(jail: str) -> None:
    """Every path built from the fixture's names, links and ``..`` resolves exactly as os.path.realpath does."""
    import itertools

    def inside(path: str) -> bool:
        return path == jail or path.startswith(jail + os.sep)

    names = ["src", "deep", "app.py", "..", "out", "inside-link", "up-inside", "chain2", "rootlink", "missing"]
    checked = 0
    for depth in (1, 2, 3):
        for combo in itertools.product([*names, "loop-a"], repeat=depth):
            client_path = "/".join(combo)
            expected = _reference_resolution(jail, client_path)
            assert expected is not None
            try:
                got = resolve_in_workspace(jail, client_path, follow_final=False)
            except ApiError:
                # Refused: what realpath gives lies outside (the whole path for "..", else its parent).
                assert not inside(expected[1] if combo[-1] == ".." else os.path.dirname(expected[0])), client_path
                continue
            assert (got.path, got.real) == expected, client_path
            checked += 1
    assert checked > 100


def test_replacements_are_taken_once_forgotten_when_expired_and_purged_as_the_table_doubles() -> None:
    clock = [1000.0]
    replacing = paths.Replacements(clock=lambda: clock[0])
    replacing.add("/w/a")
    replacing.add("/w/a")  # two renames over one file in flight: two takes
    assert replacing.take("/w/a") and replacing.take("/w/a") and not replacing.take("/w/a")
    replacing.add("/w/b")
    replacing.discard("/w/b")  # the rename failed
    assert not replacing.take("/w/b")
    replacing.add("/w/c")
    clock[0] += replacing.TTL_S + 1
    assert not replacing.take("/w/c")  # too old to be the rename the watcher sees now
    # Renames nobody takes (the watcher off, an ignored folder): the expired ones go, and the table is
    # rebuilt only each time it doubles, not at every add once it is big.
    replacing.add("/w/expired")
    clock[0] += replacing.TTL_S + 1
    rebuilds, table = 0, replacing._pending
    for i in range(20_000):
        replacing.add(f"/w/live/{i}")
        if replacing._pending is not table:  # `table` held: a new table never reuses the old one's identity
            rebuilds, table = rebuilds + 1, replacing._pending
    assert rebuilds <= 3
    assert not replacing.take("/w/expired") and replacing.take("/w/live/0") and replacing.take("/w/live/19999")
