"""Push, pull and fetch against real remotes: a bare repository, a second clone, an HTTP remote that says 401."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerPool, ServerThread
from tests.git_helpers import commit_file, git, git_server, make_repo, paths_of, read, vc, write

CONFLICTED = 'conflict ü "file".txt'


@pytest.fixture
def remote(tmp_path: os.PathLike[str]) -> dict[str, str]:
    """A bare repository with one commit on main, and two clones of it: ``ws`` (served) and ``other``."""
    base = os.fspath(tmp_path)
    bare = os.path.join(base, "remote.git")
    git(base, "init", "-q", "--bare", "-b", "main", bare)
    seed = make_repo(os.path.join(base, "seed"), {"README.md": "hello\n", CONFLICTED: "base\n"})
    git(seed, "push", "-q", bare, "main")
    ws = os.path.join(base, "ws")
    other = os.path.join(base, "other")
    git(base, "clone", "-q", bare, ws)
    git(base, "clone", "-q", bare, other)
    return {"bare": bare, "ws": ws, "other": other}


@pytest.fixture
def server(servers: ServerPool, remote: dict[str, str]) -> Iterator[ServerThread]:
    with git_server(servers, remote["ws"]) as server:
        assert server.runtime is not None
        # A remote that hangs would turn into a 504 here, not a stuck test (nothing asserts a time).
        server.runtime.ctx.git.runner.network_timeout = 30
        yield server


async def test_push_defaults_to_upstream_and_sets_one_for_a_new_branch(
    server: ServerThread, remote: dict[str, str]
) -> None:
    ws = remote["ws"]
    commit_file(ws, "a.txt", "a", "on main")
    status = (await vc(server, "GET", "status")).body
    assert (status["upstream"], status["ahead"], status["behind"]) == ("origin/main", 1, 0)
    r = await vc(server, "POST", "push", {})
    assert r.status == 200, r.body
    assert (r.body["remote"], r.body["branch"], r.body["result"]) == ("origin", "main", "fast_forward")
    assert git(remote["bare"], "rev-parse", "main") == git(ws, "rev-parse", "HEAD")

    assert (await vc(server, "POST", "checkout", {"branch": "feature/new", "create": True})).status == 200
    commit_file(ws, "b.txt", "b", "on feature")
    assert (await vc(server, "GET", "status")).body["upstream"] is None
    r = await vc(server, "POST", "push", {})
    assert r.status == 200, r.body
    assert r.body["branch"] == "feature/new" and r.body["result"] == "created"
    assert r.body["upstream"] == "origin/feature/new" and r.body["upstream_set"] is True
    status = (await vc(server, "GET", "status")).body
    assert (status["upstream"], status["ahead"]) == ("origin/feature/new", 0)
    # Pushing again: nothing new.
    r = await vc(server, "POST", "push", {})
    assert r.status == 200 and r.body["result"] == "up_to_date"
    # An explicit branch to another name on the same remote is not a thing: push names a local branch.
    r = await vc(server, "POST", "push", {"branch": "no-such-branch"})
    assert (r.status, r.error_code) == (404, "branch_not_found")


async def test_rejected_push_then_fetch_and_pull_merge(server: ServerThread, remote: dict[str, str]) -> None:
    ws, other = remote["ws"], remote["other"]
    commit_file(other, "other.txt", "from the other clone", "other first")
    git(other, "push", "-q", "origin", "main")
    commit_file(ws, "mine.txt", "mine", "mine")

    r = await vc(server, "POST", "push", {})
    assert (r.status, r.error_code) == (409, "push_rejected"), r.body
    assert (
        "fetch first" in r.body["error"]["details"]["reason"]
        or "non-fast-forward" in r.body["error"]["details"]["reason"]
    )

    r = await vc(server, "POST", "fetch", {})
    assert r.status == 200, r.body
    assert [u["ref"] for u in r.body["updated"]] == ["origin/main"]
    assert r.body["updated"][0]["to"] == git(other, "rev-parse", "HEAD").strip()
    status = (await vc(server, "GET", "status")).body
    assert (status["ahead"], status["behind"]) == (1, 1)

    before = git(ws, "rev-parse", "HEAD").strip()
    r = await vc(server, "POST", "pull", {})
    assert r.status == 200, r.body
    assert r.body["updated"] is True and r.body["from"] == before and r.body["to"] != before
    assert r.body["rebase"] is False
    assert len(git(ws, "rev-list", "--parents", "-n", "1", "HEAD").split()) == 3  # a merge commit
    assert read(ws, "other.txt") == "from the other clone"
    assert (await vc(server, "POST", "push", {})).status == 200

    r = await vc(server, "POST", "pull", {})
    assert r.status == 200 and r.body["updated"] is False


async def test_pull_conflict_reports_the_paths_and_abort_restores(server: ServerThread, remote: dict[str, str]) -> None:
    ws, other = remote["ws"], remote["other"]
    commit_file(other, CONFLICTED, "theirs\n", "theirs")
    git(other, "push", "-q", "origin", "main")
    mine = commit_file(ws, CONFLICTED, "mine\n", "mine")

    for rebase, operation in ((False, "merge"), (True, "rebase")):
        r = await vc(server, "POST", "pull", {"rebase": rebase})
        assert (r.status, r.error_code) == (409, "merge_conflict"), r.body
        details = r.body["error"]["details"]
        assert details["paths"] == [CONFLICTED] and details["operation"] == operation
        status = (await vc(server, "GET", "status")).body
        assert status["in_progress"] == operation
        entry = paths_of(status)[CONFLICTED]
        assert entry["status"] == "conflicted" and entry["conflict"] == "both_modified"
        r = await vc(server, "POST", "abort")
        assert r.status == 200 and r.body["aborted"] == operation and r.body["in_progress"] is None
        assert git(ws, "rev-parse", "HEAD").strip() == mine and read(ws, CONFLICTED) == "mine\n"
    r = await vc(server, "POST", "abort")
    assert (r.status, r.error_code) == (409, "nothing_in_progress")


async def test_resolving_a_pull_conflict_through_the_api(server: ServerThread, remote: dict[str, str]) -> None:
    ws, other = remote["ws"], remote["other"]
    commit_file(other, CONFLICTED, "theirs\n", "theirs")
    git(other, "push", "-q", "origin", "main")
    commit_file(ws, CONFLICTED, "mine\n", "mine")
    write(ws, "README.md", "an unrelated local change\n")
    assert (await vc(server, "POST", "pull", {})).error_code == "merge_conflict"
    # A partial commit is not possible in the middle of a merge.
    r = await vc(server, "POST", "commit", {"message": "m", "files": ["README.md"]})
    assert (r.status, r.error_code) == (409, "merge_in_progress"), r.body
    # Nor a commit, nor a switch of branches, while a path is still conflicted: 409 with the paths, not a 502.
    head = git(ws, "rev-parse", "HEAD").strip()
    git(ws, "branch", "elsewhere", "HEAD~1")
    for op, body in (
        ("commit", {"message": "too early"}),
        ("checkout", {"branch": "elsewhere"}),
        ("checkout", {"branch": "fresh", "create": True}),
    ):
        r = await vc(server, "POST", op, body)
        assert (r.status, r.error_code) == (409, "merge_conflict"), (op, r.body)
        details = r.body["error"]["details"]
        assert details["paths"] == [CONFLICTED] and details["operation"] == "merge", r.body
    assert git(ws, "rev-parse", "HEAD").strip() == head and git(ws, "branch", "--show-current").strip() == "main"
    assert "fresh" not in git(ws, "branch", "--list", "fresh")
    write(ws, CONFLICTED, "both\n")
    assert (await vc(server, "POST", "stage", {"paths": [CONFLICTED]})).status == 200
    r = await vc(server, "POST", "commit", {"message": "Merge theirs"})
    assert r.status == 201, r.body
    assert len(git(ws, "rev-list", "--parents", "-n", "1", "HEAD").split()) == 3
    status = (await vc(server, "GET", "status")).body
    assert status["in_progress"] is None and (status["ahead"], status["behind"]) == (2, 0)
    assert paths_of(status)["README.md"]["staged"] is False  # the unrelated change stayed out of the merge
    assert (await vc(server, "POST", "push", {})).status == 200


async def test_pull_of_unrelated_history_and_fast_forward_only(
    server: ServerThread, remote: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    stranger = make_repo(os.path.join(os.fspath(tmp_path), "stranger"), {"s.txt": "s"})
    git(remote["ws"], "remote", "add", "stranger", stranger)
    r = await vc(server, "POST", "pull", {"remote": "stranger", "branch": "main"})
    assert (r.status, r.error_code) == (409, "unrelated_histories"), r.body
    commit_file(remote["other"], "o.txt", "o", "theirs")
    git(remote["other"], "push", "-q", "origin", "main")
    commit_file(remote["ws"], "w.txt", "w", "mine")
    git(remote["ws"], "config", "pull.ff", "only")
    r = await vc(server, "POST", "pull", {})
    assert (r.status, r.error_code) == (409, "not_fast_forward"), r.body
    r = await vc(server, "POST", "pull", {"rebase": True})
    assert r.status == 200 and r.body["rebase"] is True, r.body
    assert git(remote["ws"], "log", "--format=%s").split("\n")[:3] == ["mine", "theirs", "initial"]


async def test_pull_refuses_to_overwrite_local_changes(server: ServerThread, remote: dict[str, str]) -> None:
    ws, other = remote["ws"], remote["other"]
    commit_file(other, "README.md", "theirs\n", "theirs")
    git(other, "push", "-q", "origin", "main")
    write(ws, "README.md", "uncommitted local change\n")
    r = await vc(server, "POST", "pull", {})
    assert (r.status, r.error_code) == (409, "local_changes_conflict"), r.body
    assert r.body["error"]["details"]["paths"] == ["README.md"]
    assert read(ws, "README.md") == "uncommitted local change\n"


async def test_pull_needs_an_upstream(server: ServerThread, remote: dict[str, str]) -> None:
    assert (await vc(server, "POST", "checkout", {"branch": "local-only", "create": True})).status == 200
    r = await vc(server, "POST", "pull", {})
    assert (r.status, r.error_code) == (409, "no_upstream"), r.body
    commit_file(remote["other"], "x.txt", "x", "x")
    git(remote["other"], "push", "-q", "origin", "main")
    r = await vc(server, "POST", "pull", {"remote": "origin", "branch": "main"})
    assert r.status == 200 and r.body["updated"] is True, r.body
    assert read(remote["ws"], "x.txt") == "x"
    r = await vc(server, "POST", "pull", {"remote": "origin", "branch": "no-such-branch"})
    assert (r.status, r.error_code) == (404, "remote_branch_not_found"), r.body


async def test_force_push_is_with_lease(server: ServerThread, remote: dict[str, str]) -> None:
    ws = remote["ws"]
    commit_file(ws, "a.txt", "a", "to be amended")
    assert (await vc(server, "POST", "push", {})).status == 200
    r = await vc(server, "POST", "commit", {"message": "amended", "amend": True})
    assert r.status == 201
    r = await vc(server, "POST", "push", {})
    assert (r.status, r.error_code) == (409, "push_rejected")
    r = await vc(server, "POST", "push", {"force": True})
    assert r.status == 200 and r.body["result"] == "forced", r.body
    assert git(remote["bare"], "log", "-1", "--format=%s", "main").strip() == "amended"

    # The lease: someone else pushed since our last fetch, so force does not overwrite their work.
    commit_file(remote["other"], "theirs.txt", "t", "theirs")
    git(remote["other"], "pull", "-q", "--rebase", "origin", "main")
    git(remote["other"], "push", "-q", "--force", "origin", "main")
    r = await vc(server, "POST", "commit", {"message": "amended again", "amend": True})
    r = await vc(server, "POST", "push", {"force": True})
    assert (r.status, r.error_code) == (409, "push_rejected"), r.body
    assert "stale info" in r.body["error"]["details"]["reason"]


async def test_remote_branch_checkout_and_branch_listing(server: ServerThread, remote: dict[str, str]) -> None:
    other = remote["other"]
    git(other, "checkout", "-q", "-b", "topic")
    topic = commit_file(other, "t.txt", "t", "topic work")
    git(other, "push", "-q", "origin", "topic")
    assert (await vc(server, "POST", "fetch", {"prune": True})).status == 200
    branches = (await vc(server, "GET", "branches")).body
    remote_names = {b["name"]: b for b in branches["remote_branches"]}
    assert set(remote_names) == {"origin/main", "origin/topic"}
    assert remote_names["origin/topic"] == {
        **remote_names["origin/topic"],
        "remote": "origin",
        "branch": "topic",
        "commit": topic,
    }
    main = next(b for b in branches["branches"] if b["name"] == "main")
    assert main["upstream"] == "origin/main" and (main["ahead"], main["behind"]) == (0, 0)

    r = await vc(server, "POST", "checkout", {"branch": "topic"})
    assert r.status == 200, r.body
    assert r.body == {"branch": "topic", "commit": topic, "created": True, "upstream": "origin/topic"}

    # The remote branch goes away: the local branch's upstream is "gone".
    git(other, "push", "-q", "origin", "--delete", "topic")
    assert (await vc(server, "POST", "fetch", {"prune": True})).body["updated"] == [
        {"ref": "origin/topic", "from": topic, "to": None}
    ]
    status = (await vc(server, "GET", "status")).body
    assert status["upstream"] == "origin/topic" and status["upstream_gone"] is True


async def test_remote_refusals(server: ServerThread, remote: dict[str, str], servers: ServerPool) -> None:
    r = await vc(server, "POST", "push", {"remote": "nope"})
    assert (r.status, r.error_code) == (404, "remote_not_found")
    for body in ({"remote": "-x"}, {"remote": 5}, {"branch": "a..b"}, {"force": "yes"}, {"set_upstream": 1}):
        r = await vc(server, "POST", "push", body)
        assert r.status == 400, body
    assert (await vc(server, "POST", "fetch", {"remote": "origin", "all": True})).status == 400
    assert (await vc(server, "POST", "pull", {"rebase": "no"})).status == 400
    git(remote["ws"], "checkout", "-q", "--detach")
    assert (await vc(server, "POST", "push", {})).error_code == "detached_head"
    assert (await vc(server, "POST", "pull", {})).error_code == "detached_head"

    lonely = make_repo(os.path.join(os.path.dirname(remote["ws"]), "lonely"), {"a": "a"})
    with git_server(servers, lonely) as alone:
        assert (await vc(alone, "POST", "push", {})).error_code == "no_remote"
        assert (await vc(alone, "POST", "fetch", {})).error_code == "no_remote"


# -- failing remotes ----------------------------------------------------------------------------------------


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._refuse()

    def do_POST(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_401() -> Iterator[str]:
    """An HTTP git remote on 127.0.0.1 that answers every request with 401."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/repo.git"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def silent_remote() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/repo.git"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


async def test_authentication_failure_is_502_and_never_prompts(
    server: ServerThread, remote: dict[str, str], http_401: str
) -> None:
    git(remote["ws"], "remote", "add", "secure", http_401)
    for method, endpoint, body in [
        ("POST", "push", {"remote": "secure"}),
        ("POST", "fetch", {"remote": "secure"}),
        ("POST", "pull", {"remote": "secure", "branch": "main"}),
    ]:
        r = await vc(server, method, endpoint, body)
        assert (r.status, r.error_code) == (502, "git_auth_failed"), (endpoint, r.body)
        assert "Username" in r.body["error"]["details"]["git_message"] or "401" in r.body["error"]["details"]["output"]


async def test_a_remote_that_never_answers_times_out_with_504(
    server: ServerThread, remote: dict[str, str], silent_remote: str
) -> None:
    assert server.runtime is not None
    git(remote["ws"], "remote", "add", "silent", silent_remote)
    server.runtime.ctx.git.runner.network_timeout = 1.0
    r = await vc(server, "POST", "fetch", {"remote": "silent"})
    assert (r.status, r.error_code) == (504, "git_timeout"), r.body
    # The runtime is fine afterwards, and no git child is left running.
    assert (await vc(server, "GET", "status")).status == 200
    assert not [p for p in server.runtime.ctx.procs.running if "fetch" in p.argv]


async def test_push_and_pull_publish_progress_and_changed_events(server: ServerThread, remote: dict[str, str]) -> None:
    assert server.runtime is not None
    ctx = server.runtime.ctx

    async def subscribe() -> Any:
        return ctx.hub.subscribe({"git_progress", "git_changed"})

    subscription = server.call(subscribe)
    try:
        write(remote["ws"], "big.bin", os.urandom(1 << 20))  # enough objects to report progress
        git(remote["ws"], "add", "big.bin")
        git(remote["ws"], "commit", "-q", "-m", "big")
        assert (await vc(server, "POST", "push", {})).status == 200
        git(remote["other"], "pull", "-q", "--no-rebase", "origin", "main")
        commit_file(remote["other"], "o.txt", "o", "other")
        git(remote["other"], "push", "-q", "origin", "main")
        assert (await vc(server, "POST", "pull", {})).status == 200

        async def drain() -> list[dict[str, Any]]:
            return [e.data for e in subscription.get_nowait(10000)]

        events = server.call(drain)
    finally:

        async def close() -> None:
            subscription.close()

        server.call(close)
    progress = [e for e in events if e["type"] == "git_progress"]
    assert {e["operation"] for e in progress} == {"push", "pull"}
    assert any(e.get("phase") == "Writing objects" and isinstance(e.get("percent"), int) for e in progress)
    # Ours name the operation (the file watcher may publish its own, plain git_changed too).
    changed = [e["operation"] for e in events if e["type"] == "git_changed" and "operation" in e]
    assert changed == ["push", "pull"]
    # Progress comes while the operation runs: before its git_changed.
    last_push_progress = max(
        i for i, e in enumerate(events) if e.get("operation") == "push" and e["type"] == "git_progress"
    )
    assert last_push_progress < next(
        i for i, e in enumerate(events) if e.get("operation") == "push" and e["type"] == "git_changed"
    )
