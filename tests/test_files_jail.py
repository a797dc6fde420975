"""The traversal corpus (tests/test_paths.py HOSTILE and CONTROL) against EVERY Files endpoint that takes a path.

List ``?path=``, read (raw, JSON, HEAD; path percent-encoded whole and as
segments), write (raw and JSON), delete, upload (part filenames and the
target directory), move (``from`` and ``to``), mkdir and search ``path``:
nothing outside the workspace is ever read, listed or written, and the answer
is 403, 400 or 404 — never 200, never 500. The one 2xx: DELETE of a path
whose last component is a symlink in the workspace deletes that link (and
only it), as API.md's delete of a symlink must.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Response, ServerPool, ServerThread
from tests.test_files_upload import BOUNDARY, multipart
from tests.test_paths import CONTROL, HOSTILE, make_hostile_workspace

REFUSED = {400, 403, 404}
CORPUS = HOSTILE + CONTROL
TOKEN = secrets.token_hex(16)  # the secret's content: it must never appear in any answer


class Jail:
    """A server over the hostile workspace, and a fingerprint of everything outside it."""

    def __init__(self, server: ServerThread, base: str) -> None:
        self.server = server
        self.base = base
        self.root = server.workspace
        self.outside = os.path.join(base, "outside")
        self.links = {
            os.path.join(top, name): os.readlink(os.path.join(top, name))
            for top, dirs, files in os.walk(self.root)
            for name in dirs + files
            if os.path.islink(os.path.join(top, name))
        }
        self.before = self.fingerprint()

    def fingerprint(self) -> dict[str, Any]:
        tree = {}
        for top, dirs, files in os.walk(self.outside):
            for name in dirs + files:
                path = os.path.join(top, name)
                tree[path] = open(path, "rb").read() if os.path.isfile(path) else "dir"
        return {
            "outside": tree,
            "tmp_new": os.path.lexists("/tmp/new"),
            "passwd": hashlib.sha256(open("/etc/passwd", "rb").read()).hexdigest(),
            "root_entries": sorted(os.listdir("/")),
            "base_entries": sorted(os.listdir(self.base)),
        }

    def check_untouched(self, where: str) -> None:
        assert self.fingerprint() == self.before, where

    def restore_links(self) -> None:
        """Put back a link a DELETE removed (that was allowed: it removes the link, not its target)."""
        for path, target in self.links.items():
            if not os.path.lexists(path):
                os.symlink(target, path)


@pytest.fixture(scope="module")
def jail(servers: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jail]:
    base = os.fspath(tmp_path_factory.mktemp("jail"))
    root = make_hostile_workspace(base)
    with open(os.path.join(base, "outside", "secret.txt"), "w") as f:
        f.write(TOKEN)
    server = servers.fresh(workspace=root)
    try:
        yield Jail(server, base)
    finally:
        server.stop()


def assert_refused(r: Response, where: str) -> None:
    assert r.status in REFUSED, f"{where} -> {r.status} {r.raw[:200]!r}"
    assert TOKEN.encode() not in r.raw, where
    if r.raw:
        body = json.loads(r.raw)
        assert set(body["error"]) == {"code", "message", "details"}, where
        if r.status == 403:
            assert body["error"]["code"] == "path_outside_workspace", where


def encodings(path: str) -> list[str]:
    """The path percent-encoded whole (``%2F`` too: Tornado decodes it once) and segment by segment."""
    return [urllib.parse.quote(path, safe=""), urllib.parse.quote(path, safe="/")]


@pytest.mark.parametrize("path", CORPUS)
async def test_list(jail: Jail, path: str) -> None:
    for query in ({"path": path}, {"path": path, "hidden": "false", "limit": "5"}):
        r = await jail.server.request("GET", "/api/v1/files?" + urllib.parse.urlencode(query))
        assert_refused(r, f"list {path!r}")
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_read(jail: Jail, path: str) -> None:
    for encoded in encodings(path):
        for method, suffix, headers in [
            ("GET", "", {}),
            ("GET", "?format=json", {}),
            ("GET", "", {"Range": "bytes=0-3"}),
            ("HEAD", "", {}),
        ]:
            r = await jail.server.request(method, f"/api/v1/files/{encoded}{suffix}", headers=headers)
            assert r.status in REFUSED, f"{method} {encoded}{suffix} -> {r.status}"
            assert TOKEN.encode() not in r.raw
            if method == "GET":
                assert_refused(r, f"read {encoded}{suffix}")
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_write(jail: Jail, path: str) -> None:
    for encoded in encodings(path):
        r = await jail.server.request("PUT", f"/api/v1/files/{encoded}", raw=b"pwned")
        assert_refused(r, f"PUT {encoded}")
        r = await jail.server.request("PUT", f"/api/v1/files/{encoded}?format=json", body={"content": "pwned"})
        assert_refused(r, f"PUT json {encoded}")
        r = await jail.server.request(
            "PUT", f"/api/v1/files/{encoded}", raw=b"pwned", headers={"If-None-Match": "*", "Expect": "100-continue"}
        )
        assert_refused(r, f"PUT create-only {encoded}")
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_delete(jail: Jail, path: str) -> None:
    for encoded in encodings(path):
        r = await jail.server.request("DELETE", f"/api/v1/files/{encoded}?recursive=true")
        if r.status == 204:
            # Only a link itself may go: the path's parents resolve inside and its last part is a symlink.
            parent = os.path.realpath(os.path.join(jail.root, os.path.dirname(path.rstrip("/")) or "."))
            removed = os.path.join(parent, os.path.basename(path.rstrip("/")))
            assert parent == jail.root or parent.startswith(jail.root + os.sep), path
            assert removed in jail.links, path
            jail.restore_links()
        else:
            assert_refused(r, f"DELETE {encoded}")
        jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_upload_part_names(jail: Jail, path: str) -> None:
    # A raw CR or LF cannot be sent inside a header: those are refused as malformed parts, also 400.
    body = multipart([("harmless.txt", b"ok"), (path, b"pwned")])
    r = await jail.server.request(
        "POST", "/api/v1/files/upload", raw=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    assert_refused(r, f"upload filename {path!r}")
    assert not os.path.exists(os.path.join(jail.root, "harmless.txt"))
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_upload_directory(jail: Jail, path: str) -> None:
    body = multipart([("dropped.txt", b"pwned")])
    r = await jail.server.request(
        "POST",
        "/api/v1/files/upload?" + urllib.parse.urlencode({"path": path, "overwrite": "true"}),
        raw=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert_refused(r, f"upload to {path!r}")
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_move_from_and_to(jail: Jail, path: str) -> None:
    victim = os.path.join(jail.root, "victim.txt")
    with open(victim, "wb") as f:
        f.write(b"victim")
    for body in (
        {"from": path, "to": "moved-here", "overwrite": True},
        {"from": "victim.txt", "to": path, "overwrite": True},
        {"from": "victim.txt", "to": path + "/victim.txt", "overwrite": False},
    ):
        r = await jail.server.request("POST", "/api/v1/files/move", body=body)
        assert_refused(r, f"move {body}")
    assert open(victim, "rb").read() == b"victim"
    assert not os.path.lexists(os.path.join(jail.root, "moved-here"))
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_mkdir(jail: Jail, path: str) -> None:
    for body in ({"path": path}, {"path": path + "/sub", "exist_ok": True}):
        r = await jail.server.request("POST", "/api/v1/files/mkdir", body=body)
        assert_refused(r, f"mkdir {body}")
    jail.check_untouched(path)


@pytest.mark.parametrize("path", CORPUS)
async def test_search(jail: Jail, path: str) -> None:
    for query in ({"q": TOKEN, "path": path}, {"glob": "*", "path": path}, {"q": "x", "glob": "*.txt", "path": path}):
        r = await jail.server.request("GET", "/api/v1/search?" + urllib.parse.urlencode(query))
        assert_refused(r, f"search {query}")
    jail.check_untouched(path)


async def test_search_never_follows_links_out(jail: Jail) -> None:
    """Searching the whole workspace (links to / and outside included) finds nothing outside."""
    r = await jail.server.request("GET", "/api/v1/search?" + urllib.parse.urlencode({"q": TOKEN}))
    assert r.status == 200 and r.body["matches"] == []
    r = await jail.server.request("GET", "/api/v1/search?glob=secret*")
    assert r.status == 200 and r.body["matches"] == []


async def test_listing_the_workspace_shows_links_without_following(jail: Jail) -> None:
    r = await jail.server.request("GET", "/api/v1/files")
    assert r.status == 200
    by_name = {e["name"]: e for e in r.body["entries"]}
    assert by_name["out"]["type"] == "symlink" and by_name["out"]["target_type"] is None
    assert by_name["inside-link"]["target_type"] == "directory"
    assert TOKEN.encode() not in r.raw


async def test_the_corpus_is_complete() -> None:
    assert len(CORPUS) >= 48
