"""``GET /api/v1/search``: the same answers from ripgrep and from the Python walk."""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerPool, ServerThread
from wsruntime_ext.files.search import GlobFilter

BACKENDS = ["python", pytest.param("rg", marks=pytest.mark.skipif(not shutil.which("rg"), reason="rg not installed"))]


def build(root: str) -> None:
    files = {
        "src/app.py": "import os\nprint('Hello World')\n# TODO: hello again\n",
        "src/lib/util.py": "def hello():\n    return 'hello'\n",
        "src/lib/b.txt": "hello from b\n",
        "src/b.txt": "hello from src\n",
        "README.md": "# Project\nSay hello.\n",
        ".hidden/notes.txt": "hello hidden\n",
        ".git/config": "hello git\n",
        "node_modules/pkg/index.js": "hello modules\n",
        "sub/node_modules/x.js": "hello nested modules\n",
        "data.bin": "hello\x00binary\n",
        "regex.txt": "a+b\naab\n",
        "long.txt": "hello " + "x" * 2000 + "\n",
        "latin1.txt": "caf\xe9 hello\n",
    }
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(text.encode("latin-1") if rel == "latin1.txt" else text.encode("utf-8"))
    os.makedirs(os.path.join(root, "huge"))
    with open(os.path.join(root, "huge", "min.js"), "w") as f:  # a minified bundle: one line of megabytes
        f.write("first line\n" + "y" * 5_000_000 + "needle-in-huge\n")
    os.symlink("src/app.py", os.path.join(root, "link.py"))  # not followed
    os.symlink("/etc", os.path.join(root, "etc-link"))
    os.makedirs(os.path.join(root, ".wsruntime"), exist_ok=True)
    with open(os.path.join(root, ".wsruntime", "state.txt"), "w") as f:
        f.write("hello state\n")


@pytest.fixture(scope="module", params=BACKENDS)
def searcher(
    request: pytest.FixtureRequest, servers: ServerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    root = os.fspath(tmp_path_factory.mktemp("search"))
    build(root)
    server = servers.fresh(workspace=root)
    assert server.runtime is not None
    search = server.runtime.ctx.search
    search.rg = shutil.which("rg") if request.param == "rg" else None
    assert search.backend == request.param
    try:
        yield server
    finally:
        server.stop()


async def search(server: ServerThread, **query: Any) -> Any:
    r = await server.request("GET", "/api/v1/search?" + urllib.parse.urlencode(query))
    assert r.status == 200, r.raw
    return r.body


async def test_content_search(searcher: ServerThread) -> None:
    body = await search(searcher, q="hello")
    assert body["truncated"] is False and body["timed_out"] is False
    found = [(m["path"], m["line"]) for m in body["matches"]]
    # Path order (siblings by name, depth first); hidden files in; .git, node_modules, binary, links, state out.
    assert found == [
        (".hidden/notes.txt", 1),
        ("README.md", 2),
        ("latin1.txt", 1),
        ("long.txt", 1),
        ("src/app.py", 3),
        ("src/b.txt", 1),
        ("src/lib/b.txt", 1),
        ("src/lib/util.py", 1),
        ("src/lib/util.py", 2),
    ]
    texts = {m["path"]: m["text"] for m in body["matches"]}
    assert texts["src/app.py"] == "# TODO: hello again"
    assert len(texts["long.txt"]) == 500
    assert texts["latin1.txt"] == "caf\ufffd hello"


async def test_case_glob_and_path(searcher: ServerThread) -> None:
    body = await search(searcher, q="hello", ignore_case="true", glob="*.py")
    assert [(m["path"], m["line"]) for m in body["matches"]] == [
        ("src/app.py", 2),
        ("src/app.py", 3),
        ("src/lib/util.py", 1),
        ("src/lib/util.py", 2),
    ]
    body = await search(searcher, q="hello", path="src/lib")
    assert [m["path"] for m in body["matches"]] == ["src/lib/b.txt", "src/lib/util.py", "src/lib/util.py"]
    body = await search(searcher, q="hello", glob="!*.py", path="src")
    assert [m["path"] for m in body["matches"]] == ["src/b.txt", "src/lib/b.txt"]


async def test_literal_and_regex(searcher: ServerThread) -> None:
    body = await search(searcher, q="a+b", glob="regex.txt")
    assert [(m["line"], m["text"]) for m in body["matches"]] == [(1, "a+b")]
    body = await search(searcher, q="a+b", regex="true", glob="regex.txt")
    assert [(m["line"], m["text"]) for m in body["matches"]] == [(2, "aab")]
    r = await searcher.request("GET", "/api/v1/search?q=%28unclosed&regex=true")
    assert r.status == 400 and r.error_code == "invalid_regex"


async def test_both_backends_agree_on_huge_lines_line_breaks_and_regex_dialect(searcher: ServerThread) -> None:
    # A match at the end of a 5 MB line (ripgrep's JSON message for it is bigger than what is read whole).
    body = await search(searcher, q="needle-in-huge", path="huge")
    assert [(m["path"], m["line"], m["text"]) for m in body["matches"]] == [("huge/min.js", 2, "y" * 500)]
    # A pattern with a line break: no line holds one.
    for query in ({"q": "a\nb"}, {"q": "a\\nb", "regex": "true"}):
        assert (await search(searcher, **query))["matches"] == [], query
    # What ripgrep's regex has not, Python's refuses too.
    for pattern in ("(?=x)", "a(?!b)", "(?<=a)b", "(a)\\1"):
        r = await searcher.request("GET", "/api/v1/search?" + urllib.parse.urlencode({"q": pattern, "regex": "true"}))
        assert r.status == 400 and r.error_code == "invalid_regex", (pattern, r.raw)


async def test_limit_truncates(searcher: ServerThread) -> None:
    body = await search(searcher, q="hello", limit=3)
    assert len(body["matches"]) == 3 and body["truncated"] is True
    body = await search(searcher, q="hello", limit=9)
    assert len(body["matches"]) == 9 and body["truncated"] is False


async def test_name_search(searcher: ServerThread) -> None:
    body = await search(searcher, glob="*.txt")
    assert [m["path"] for m in body["matches"]] == [
        ".hidden/notes.txt",
        "latin1.txt",
        "long.txt",
        "regex.txt",
        "src/b.txt",
        "src/lib/b.txt",
    ]
    assert all(m["line"] is None and m["text"] is None for m in body["matches"])
    body = await search(searcher, glob="src/**/*.py")
    assert [m["path"] for m in body["matches"]] == ["src/app.py", "src/lib/util.py"]
    body = await search(searcher, glob="*.{md,bin}")
    assert [m["path"] for m in body["matches"]] == ["README.md", "data.bin"]


async def test_bad_queries(searcher: ServerThread) -> None:
    for query in ("?limit=0&q=x", "?q=x&limit=abc", "?q=x&regex=maybe", "?q=x&path=missing", "?q=%00"):
        r = await searcher.request("GET", "/api/v1/search" + query)
        assert r.status in (400, 404), query
    for query in ("?q=", "?glob=", "?q=x&q=y"):  # the API's query rule: never empty, never repeated
        r = await searcher.request("GET", "/api/v1/search" + query)
        assert r.status == 400 and r.error_code == "invalid_parameter", query
    for query in ("", "?regex=true"):  # nothing asked, nothing found
        assert (await search(searcher)) == {"matches": [], "truncated": False, "timed_out": False}
        r = await searcher.request("GET", "/api/v1/search" + query)
        assert r.status == 200 and r.body["matches"] == []
    r = await searcher.request("GET", "/api/v1/search?q=x&path=missing")
    assert r.status == 404


def test_glob_filter() -> None:
    assert GlobFilter("*.py").accepts("deep/dir/x.py", "x.py")
    assert not GlobFilter("src/*.py").accepts("other/x.py", "x.py")
    assert not GlobFilter("!*.py").accepts("x.py", "x.py")
