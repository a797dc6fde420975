"""Version control on real repositories: status, log, diff, commit, stage, unstage, discard, branches, checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerPool, ServerThread
from tests.git_helpers import (
    AUTHOR,
    commit_file,
    git,
    git_env,
    git_server,
    make_repo,
    paths_of,
    read,
    vc,
    write,
)

AWKWARD = [
    "with space.txt",
    'double"quote.txt',
    "single'quote.txt",
    "new\nline.txt",
    "tab\there.txt",
    "ünïcödé-文件.txt",
    "-leading-dash.txt",
    ":(glob)magic*.txt",
    "back\\slash.txt",
    "dir with space/inner file.txt",
]


@pytest.fixture
def repo(tmp_path: os.PathLike[str]) -> str:
    return make_repo(os.path.join(os.fspath(tmp_path), "repo"), {"README.md": "hello\n", "src/app.py": "x = 1\n"})


@pytest.fixture
def server(servers: ServerPool, repo: str) -> Iterator[ServerThread]:
    with git_server(servers, repo) as server:
        yield server


# -- status -----------------------------------------------------------------------------------------


async def test_status_of_a_clean_repository(server: ServerThread, repo: str) -> None:
    r = await vc(server, "GET", "status")
    assert r.status == 200, r.body
    body = r.body
    assert body["branch"] == "main" and body["detached"] is False
    assert body["clean"] is True and body["files"] == []
    assert body["upstream"] is None and (body["ahead"], body["behind"]) == (0, 0)
    assert body["head"] == git(repo, "rev-parse", "HEAD").strip()
    assert body["workspace_prefix"] == "" and body["in_progress"] is None


async def test_status_reports_awkward_names_exactly(server: ServerThread, repo: str) -> None:
    for name in AWKWARD:
        write(repo, name, "content\n")
    write(repo, "README.md", "changed\n")
    os.remove(os.path.join(repo, "src/app.py"))
    files = paths_of((await vc(server, "GET", "status")).body)
    assert set(files) == {*AWKWARD, "README.md", "src/app.py"}
    for name in AWKWARD:
        assert files[name]["status"] == "untracked" and (files[name]["index"], files[name]["worktree"]) == ("?", "?")
    assert files["README.md"] == {
        "path": "README.md",
        "index": ".",
        "worktree": "M",
        "status": "modified",
        "staged": False,
    }
    assert files["src/app.py"]["status"] == "deleted"

    # Staging them by name stages exactly those, whatever the characters (no globbing, no magic) —
    # but a client path with a control character is refused (API.md): those are staged with "all".
    nameable = [n for n in AWKWARD if "\n" not in n and "\t" not in n]
    r = await vc(server, "POST", "stage", {"paths": nameable})
    assert r.status == 200, r.body
    files = paths_of(r.body)
    for name in AWKWARD:
        assert files[name]["staged"] is (name in nameable), name
        assert files[name]["status"] == ("added" if name in nameable else "untracked"), name
    assert files["README.md"]["staged"] is False
    r = await vc(server, "POST", "stage", {"paths": ["new\nline.txt"]})
    assert (r.status, r.error_code) == (400, "invalid_path")
    files = paths_of((await vc(server, "POST", "stage", {"all": True})).body)
    assert all(files[name]["status"] == "added" for name in AWKWARD)

    # A rename shows with its original path.
    git(repo, "commit", "-q", "-m", "awkward")
    git(repo, "mv", "new\nline.txt", "renamed\tnow.txt")
    files = paths_of((await vc(server, "GET", "status")).body)
    assert files["renamed\tnow.txt"]["status"] == "renamed"
    assert files["renamed\tnow.txt"]["orig_path"] == "new\nline.txt"
    assert files["renamed\tnow.txt"]["index"] == "R"


async def test_status_untracked_modes(server: ServerThread, repo: str) -> None:
    write(repo, "newdir/a.txt", "a")
    write(repo, "newdir/b.txt", "b")
    assert set(paths_of((await vc(server, "GET", "status")).body)) == {"newdir/a.txt", "newdir/b.txt"}
    normal = paths_of((await vc(server, "GET", "status?untracked=normal")).body)
    assert normal["newdir"]["directory"] is True and normal["newdir"]["status"] == "untracked"
    assert (await vc(server, "GET", "status?untracked=no")).body["files"] == []
    r = await vc(server, "GET", "status?untracked=some")
    assert r.status == 400 and r.error_code == "invalid_parameter"


async def test_status_detached_head_and_stashes(server: ServerThread, repo: str) -> None:
    first = git(repo, "rev-parse", "HEAD").strip()
    commit_file(repo, "b.txt", "b", "second")
    write(repo, "README.md", "stash me\n")
    git(repo, "stash", "-q")
    git(repo, "checkout", "-q", "--detach", first)
    body = (await vc(server, "GET", "status")).body
    assert body["detached"] is True and body["branch"] is None and body["head"] == first
    assert body["stashes"] == 1


async def test_status_survives_a_held_index_lock_but_writes_get_git_locked(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "changed\n")
    lock = os.path.join(repo, ".git", "index.lock")
    with open(lock, "w"):
        pass
    try:
        r = await vc(server, "GET", "status")
        assert r.status == 200 and paths_of(r.body)["README.md"]["status"] == "modified"
        r = await vc(server, "POST", "stage", {"paths": ["README.md"]})
        assert r.status == 409 and r.error_code == "git_locked", r.body
        r = await vc(server, "POST", "commit", {"message": "x", "all": True})
        assert r.status == 409 and r.error_code == "git_locked", r.body
        assert os.path.exists(lock)  # someone else's lock is never removed
    finally:
        os.remove(lock)
    assert (await vc(server, "POST", "stage", {"paths": ["README.md"]})).status == 200


async def test_not_a_repository(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    workspace = os.path.join(os.fspath(tmp_path), "plain")
    make_repo(os.path.join(workspace, "inner"), {"a": "a"})
    make_repo(os.path.join(workspace, "group", "deeper"), {"b": "b"})
    with git_server(servers, workspace) as server:
        r = await vc(server, "GET", "status")
        assert r.status == 409 and r.error_code == "not_a_git_repository", r.body
        assert r.body["error"]["details"]["nested_repositories"] == ["inner", "group/deeper"]
        # Every endpoint answers 409 the same way, never a 500.
        requests = [
            ("GET", "log", None),
            ("GET", "diff", None),
            ("GET", "branches", None),
            ("POST", "commit", {"message": "m"}),
            ("POST", "stage", {"all": True}),
            ("POST", "unstage", {"all": True}),
            ("POST", "discard", {"all": True}),
            ("POST", "abort", None),
            ("POST", "push", {}),
            ("POST", "pull", {}),
            ("POST", "fetch", {}),
            ("POST", "branches", {"name": "x"}),
            ("DELETE", "branches/x", None),
            ("POST", "checkout", {"branch": "x"}),
        ]
        for method, endpoint, body in requests:
            r = await vc(server, method, endpoint, body)
            assert (r.status, r.error_code) == (409, "not_a_git_repository"), (method, endpoint, r.body)
        # A workspace inside a bare repository is not a work tree either.
        bare = os.path.join(os.fspath(tmp_path), "bare.git")
        git(os.fspath(tmp_path), "init", "-q", "--bare", bare)
    with git_server(servers, bare) as server:
        r = await vc(server, "GET", "status")
        assert (r.status, r.error_code) == (409, "not_a_git_repository"), r.body


async def test_repository_created_later_is_found(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    workspace = os.path.join(os.fspath(tmp_path), "later")
    os.makedirs(workspace)
    with git_server(servers, workspace) as server:
        assert (await vc(server, "GET", "status")).status == 409
        make_repo(workspace, {"a.txt": "a"})
        r = await vc(server, "GET", "status")
        assert r.status == 200 and r.body["branch"] == "main"
        shutil.rmtree(os.path.join(workspace, ".git"))
        assert (await vc(server, "GET", "status")).error_code == "not_a_git_repository"


async def test_unknown_workspace_is_404(server: ServerThread) -> None:
    r = await server.request("GET", "/api/v1/workspaces/other/version-control/status")
    assert r.status == 404 and r.error_code == "workspace_not_found"
    r = await server.request("POST", "/api/v1/workspaces/other/version-control/commit", body={"message": "m"})
    assert r.status == 404 and r.error_code == "workspace_not_found"


# -- log ----------------------------------------------------------------------------------------------


async def test_log_pages_and_round_trips_messages(server: ServerThread, repo: str) -> None:
    subject = 'Subject with "quotes", tabs\tand ünïcödé 文字 %x00 %H \x1e'
    body = "Body line one\n\n  indented line\twith tab\n\n# not a comment\nlast line"
    write(repo, "msg.txt", "m")
    git(repo, "add", "msg.txt")
    git(repo, "commit", "-q", "--cleanup=verbatim", "-F", "-", input=f"{subject}\n\n{body}\n".encode())
    for i in range(5):
        commit_file(repo, "counter.txt", str(i), f"commit {i}")

    r = await vc(server, "GET", "log?limit=3")
    assert r.status == 200
    page = r.body
    assert [c["subject"] for c in page["commits"]] == ["commit 4", "commit 3", "commit 2"]
    assert page["has_more"] is True
    page2 = (await vc(server, "GET", "log?limit=3&skip=3")).body
    assert [c["subject"] for c in page2["commits"]] == ["commit 1", "commit 0", subject]
    assert page2["has_more"] is True
    last = (await vc(server, "GET", "log?limit=3&skip=6")).body
    assert [c["subject"] for c in last["commits"]] == ["initial"] and last["has_more"] is False

    special = page2["commits"][2]
    assert special["subject"] == subject and special["body"] == body
    assert special["author_name"] == AUTHOR[0] and special["author_email"] == AUTHOR[1]
    assert special["hash"].startswith(special["short_hash"]) and len(special["hash"]) == 40
    assert special["date"].endswith("Z") and len(special["parents"]) == 1
    assert page["commits"][0]["refs"] == ["HEAD -> main"]


async def test_log_ref_and_path(server: ServerThread, repo: str) -> None:
    commit_file(repo, "src/app.py", "x = 2\n", "change app")
    commit_file(repo, "other.txt", "o", "other")
    assert [c["subject"] for c in (await vc(server, "GET", "log?path=src")).body["commits"]] == [
        "change app",
        "initial",
    ]
    assert [c["subject"] for c in (await vc(server, "GET", "log?ref=HEAD~1")).body["commits"]] == [
        "change app",
        "initial",
    ]
    assert [c["subject"] for c in (await vc(server, "GET", "log?ref=HEAD~2..HEAD")).body["commits"]] == [
        "other",
        "change app",
    ]
    # A file whose name is pathspec magic is taken literally.
    commit_file(repo, ":(glob)*", "g", "magic name")
    assert [c["subject"] for c in (await vc(server, "GET", "log?path=%3A%28glob%29%2A")).body["commits"]] == [
        "magic name"
    ]
    for ref in ("nope", "HEAD~99"):
        r = await vc(server, "GET", f"log?ref={ref}")
        assert (r.status, r.error_code) == (404, "ref_not_found"), ref
    for query in ("ref=--all", "ref=", "limit=0", "limit=1001", "skip=-1", "path=..%2F..%2Fetc"):
        r = await vc(server, "GET", f"log?{query}")
        assert r.status in (400, 403), query


async def test_log_of_an_empty_repository(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    repo = make_repo(os.path.join(os.fspath(tmp_path), "empty"))
    with git_server(servers, repo) as server:
        assert (await vc(server, "GET", "log")).body == {"commits": [], "has_more": False}
        body = (await vc(server, "GET", "status")).body
        assert body["head"] is None and body["branch"] == "main"
        branches = (await vc(server, "GET", "branches")).body
        assert branches["current"] == "main" and branches["branches"] == []


# -- commit ---------------------------------------------------------------------------------------------


async def test_commit_what_is_staged(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "staged\n")
    git(repo, "add", "README.md")
    write(repo, "src/app.py", "not staged\n")
    r = await vc(server, "POST", "commit", {"message": "Update readme\n\nWith a body."})
    assert r.status == 201, r.body
    assert r.body["branch"] == "main" and r.body["subject"] == "Update readme"
    assert r.body["hash"] == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "log", "-1", "--format=%B").strip() == "Update readme\n\nWith a body."
    assert paths_of((await vc(server, "GET", "status")).body)["src/app.py"]["staged"] is False


async def test_commit_files_commits_exactly_those(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "staged but not listed\n")
    git(repo, "add", "README.md")
    write(repo, "src/app.py", "listed\n")
    write(repo, "new file.txt", "listed and new\n")
    r = await vc(server, "POST", "commit", {"message": "two files", "files": ["src/app.py", "new file.txt"]})
    assert r.status == 201, r.body
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").split("\n")
    assert set(filter(None, committed)) == {"src/app.py", "new file.txt"}
    files = paths_of((await vc(server, "GET", "status")).body)
    assert files == {"README.md": files["README.md"]} and files["README.md"]["staged"] is True


async def test_commit_all_stages_tracked_changes_only(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "changed\n")
    os.remove(os.path.join(repo, "src/app.py"))
    write(repo, "untracked.txt", "u")
    r = await vc(server, "POST", "commit", {"message": "all", "all": True})
    assert r.status == 201, r.body
    assert git(repo, "show", "--name-status", "--format=", "HEAD").split() == ["M", "README.md", "D", "src/app.py"]
    assert set(paths_of((await vc(server, "GET", "status")).body)) == {"untracked.txt"}


async def test_commit_amend_and_author(server: ServerThread, repo: str) -> None:
    before = git(repo, "rev-parse", "HEAD").strip()
    r = await vc(
        server,
        "POST",
        "commit",
        {"message": "reworded", "amend": True, "author": {"name": "Ada Lövelace", "email": "ada@example.org"}},
    )
    assert r.status == 201, r.body
    assert r.body["amended"] is True and r.body["hash"] != before
    assert git(repo, "log", "-1", "--format=%an|%ae|%cn|%s") == f"Ada Lövelace|ada@example.org|{AUTHOR[0]}|reworded\n"
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"


async def test_commit_refusals(server: ServerThread, repo: str) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    for body, code in [
        ({"message": ""}, "empty_message"),
        ({"message": " \n\t\n"}, "empty_message"),
        ({}, "invalid_field"),
        ({"message": 5}, "invalid_field"),
        ({"message": "nul\x00"}, "invalid_field"),
        ({"message": "m", "files": "README.md"}, "invalid_field"),
        ({"message": "m", "files": []}, "invalid_field"),
        ({"message": "m", "files": ["README.md"], "all": True}, "invalid_field"),
        ({"message": "m", "amend": "yes"}, "invalid_field"),
        ({"message": "m", "author": {"name": "A"}}, "invalid_field"),
        ({"message": "m", "author": {"name": "A <x>", "email": "a@b"}}, "invalid_field"),
        ({"message": "m", "author": "A <a@b>"}, "invalid_field"),
    ]:
        r = await vc(server, "POST", "commit", body)
        assert (r.status, r.error_code) == (400, code), (body, r.body)
    r = await vc(server, "POST", "commit", {"message": "nothing"})
    assert (r.status, r.error_code) == (409, "nothing_to_commit"), r.body
    r = await vc(server, "POST", "commit", {"message": "m", "files": ["../outside"]})
    assert (r.status, r.error_code) == (403, "path_outside_workspace")
    r = await vc(server, "POST", "commit", {"message": "m", "files": ["no/such/file"]})
    assert (r.status, r.error_code) == (404, "path_not_found"), r.body
    assert r.body["error"]["details"]["paths"] == ["no/such/file"]
    write(repo, ".gitignore", "*.log\n")
    write(repo, "debug.log", "x")
    r = await vc(server, "POST", "commit", {"message": "m", "files": ["debug.log"]})
    assert (r.status, r.error_code) == (409, "path_ignored"), r.body
    assert git(repo, "rev-parse", "HEAD").strip() == head


async def test_commit_refused_by_a_hook(server: ServerThread, repo: str) -> None:
    hook = os.path.join(repo, ".git", "hooks", "pre-commit")
    write(repo, ".git/hooks/pre-commit", "#!/bin/sh\necho 'lint: trailing whitespace in README.md' >&2\nexit 1\n")
    os.chmod(hook, 0o755)
    head = git(repo, "rev-parse", "HEAD").strip()
    write(repo, "README.md", "changed \n")
    r = await vc(server, "POST", "commit", {"message": "m", "all": True})
    assert (r.status, r.error_code) == (409, "hook_failed"), r.body
    assert "lint: trailing whitespace" in r.body["error"]["details"]["output"]
    assert git(repo, "rev-parse", "HEAD").strip() == head
    os.chmod(hook, 0o644)  # a hook that is not executable does not run
    assert (await vc(server, "POST", "commit", {"message": "m", "all": True})).status == 201


async def test_a_hook_that_hangs_is_stopped_with_504(server: ServerThread, repo: str) -> None:
    assert server.runtime is not None
    hook = os.path.join(repo, ".git", "hooks", "pre-commit")
    write(repo, ".git/hooks/pre-commit", "#!/bin/sh\nsleep 300\n")
    os.chmod(hook, 0o755)
    server.runtime.ctx.git.runner.hook_timeout = 1.0
    write(repo, "README.md", "changed\n")
    r = await vc(server, "POST", "commit", {"message": "m", "all": True})
    assert (r.status, r.error_code) == (504, "git_timeout"), r.body
    # The hook's process tree was stopped with git, and the runtime serves on.
    sleepers = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True).stdout.split()
    assert not [p for p in sleepers if os.path.exists(f"/proc/{p}") and repo in os.readlink(f"/proc/{p}/cwd")]
    assert (await vc(server, "GET", "status")).status == 200


async def test_empty_repository_refusals(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    repo = make_repo(os.path.join(os.fspath(tmp_path), "unborn"))
    with git_server(servers, repo) as server:
        for method, endpoint, body in [
            ("POST", "branches", {"name": "x"}),
            ("POST", "commit", {"message": "m", "amend": True}),
            ("POST", "push", {}),
        ]:
            r = await vc(server, method, endpoint, body)
            assert r.status == 409 and r.error_code in ("no_commits", "nothing_to_commit"), (endpoint, r.body)
        assert (await vc(server, "POST", "branches", {"name": "x"})).error_code == "no_commits"
        write(repo, "first.txt", "1")
        r = await vc(server, "POST", "commit", {"message": "first", "files": ["first.txt"]})
        assert r.status == 201 and r.body["branch"] == "main", r.body


async def test_commit_without_any_identity_is_422(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    repo = make_repo(os.path.join(os.fspath(tmp_path), "anon"), {"a.txt": "a"})
    empty_home = os.path.join(os.fspath(tmp_path), "empty-home")
    os.makedirs(empty_home)
    with git_server(servers, repo, env=git_env(home=empty_home)) as server:
        write(repo, "a.txt", "changed")
        r = await vc(server, "POST", "commit", {"message": "m", "all": True})
        assert (r.status, r.error_code) == (422, "git_identity_missing"), r.body
        # Refused before anything was staged.
        assert paths_of((await vc(server, "GET", "status")).body)["a.txt"]["staged"] is False
        # An author in the request is enough (it is the committer too when git has none).
        r = await vc(server, "POST", "commit", {"message": "m", "all": True, "author": {"name": "N", "email": "n@x"}})
        assert r.status == 201, r.body
        assert git(repo, "log", "-1", "--format=%an %ae / %cn %ce") == "N n@x / N n@x\n"


# -- diff ------------------------------------------------------------------------------------------------


async def test_diff_worktree_staged_ref_and_binary(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "hello\nworld\n")
    write(repo, "src/app.py", "x = 2\n")
    git(repo, "add", "src/app.py")
    write(repo, "image.bin", bytes(range(256)))
    git(repo, "add", "image.bin")

    worktree = (await vc(server, "GET", "diff")).body
    assert [f["path"] for f in worktree["files"]] == ["README.md"]
    assert worktree["files"][0] == {
        "path": "README.md",
        "status": "modified",
        "additions": 1,
        "deletions": 0,
        "binary": False,
    }
    assert "+world" in worktree["diff"] and worktree["truncated"] is False

    staged = (await vc(server, "GET", "diff?staged=true")).body
    by_path = {f["path"]: f for f in staged["files"]}
    assert set(by_path) == {"src/app.py", "image.bin"}
    assert by_path["image.bin"]["binary"] is True and by_path["image.bin"]["status"] == "added"
    assert by_path["src/app.py"]["additions"] == 1 and by_path["src/app.py"]["deletions"] == 1
    assert "Binary files" in staged["diff"] and "-x = 1" in staged["diff"]

    against_head = (await vc(server, "GET", "diff?ref=HEAD&path=src")).body
    assert [f["path"] for f in against_head["files"]] == ["src/app.py"]
    assert (await vc(server, "GET", "diff?ref=nope")).error_code == "ref_not_found"


async def test_diff_of_an_untracked_file_and_awkward_names(server: ServerThread, repo: str) -> None:
    name = 'new file "ü" :(glob)*.txt'
    write(repo, name, "one\ntwo\n")
    r = await vc(server, "GET", "diff")
    assert r.body["files"] == []  # untracked files are not in the work tree diff of everything
    body = (await vc(server, "GET", "diff?path=" + urllib.parse.quote(name))).body
    assert body["files"] == [{"path": name, "status": "untracked", "additions": 2, "deletions": 0, "binary": False}]
    assert "+one" in body["diff"] and "+two" in body["diff"]
    git(repo, "add", "--", name)
    git(repo, "commit", "-q", "-m", "add")
    os.rename(os.path.join(repo, name), os.path.join(repo, "renamed.txt"))
    git(repo, "add", "-A")
    staged = (await vc(server, "GET", "diff?staged=true")).body
    assert staged["files"] == [
        {"path": "renamed.txt", "orig_path": name, "status": "renamed", "additions": 0, "deletions": 0, "binary": False}
    ]


# -- stage, unstage, discard ---------------------------------------------------------------------------------


async def test_stage_unstage_round_trip(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "changed\n")
    write(repo, "new.txt", "n")
    os.remove(os.path.join(repo, "src/app.py"))
    r = await vc(server, "POST", "stage", {"all": True})
    assert r.status == 200
    assert {p: f["index"] for p, f in paths_of(r.body).items()} == {"README.md": "M", "new.txt": "A", "src/app.py": "D"}
    r = await vc(server, "POST", "unstage", {"paths": ["new.txt", "src"]})
    files = paths_of(r.body)
    assert files["new.txt"]["status"] == "untracked" and files["src/app.py"]["staged"] is False
    assert files["README.md"]["staged"] is True
    r = await vc(server, "POST", "unstage", {"all": True})
    assert not any(f["staged"] for f in r.body["files"])
    bad_bodies: list[dict[str, Any]] = [
        {},
        {"paths": []},
        {"paths": ["a"], "all": True},
        {"paths": [1]},
        {"all": "yes"},
    ]
    for body in bad_bodies:
        r = await vc(server, "POST", "stage", body)
        assert (r.status, r.error_code) == (400, "invalid_field"), body
    assert (await vc(server, "POST", "stage", {"paths": ["/etc/passwd"]})).status == 403
    assert (await vc(server, "POST", "stage", {"paths": ["a\x01b"]})).status == 400


async def test_unstage_before_the_first_commit(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    repo = make_repo(os.path.join(os.fspath(tmp_path), "unborn"))
    write(repo, "a.txt", "a")
    git(repo, "add", "a.txt")
    with git_server(servers, repo) as server:
        r = await vc(server, "POST", "unstage", {"paths": ["a.txt"]})
        assert r.status == 200, r.body
        assert paths_of(r.body)["a.txt"]["status"] == "untracked"


async def test_discard(server: ServerThread, repo: str) -> None:
    write(repo, "README.md", "changed\n")
    write(repo, "src/app.py", "staged\n")
    git(repo, "add", "src/app.py")
    write(repo, "src/new.txt", "untracked")

    # Untracked files in the way: refused, and nothing changed.
    r = await vc(server, "POST", "discard", {"paths": ["README.md", "src"]})
    assert (r.status, r.error_code) == (409, "untracked_files"), r.body
    assert r.body["error"]["details"]["paths"] == ["src/new.txt"]
    assert read(repo, "README.md") == "changed\n" and os.path.exists(os.path.join(repo, "src/new.txt"))

    # Tracked only: back to the index (the staged change stays).
    r = await vc(server, "POST", "discard", {"paths": ["README.md", "src/app.py"]})
    assert r.status == 200, r.body
    assert read(repo, "README.md") == "hello\n" and read(repo, "src/app.py") == "staged\n"
    assert set(paths_of(r.body)) == {"src/app.py", "src/new.txt"}

    # With staged: back to HEAD; with untracked: the new file goes too.
    r = await vc(server, "POST", "discard", {"paths": ["src"], "staged": True, "untracked": True})
    assert r.status == 200, r.body
    assert read(repo, "src/app.py") == "x = 1\n" and not os.path.exists(os.path.join(repo, "src/new.txt"))
    assert r.body["clean"] is True
    r = await vc(server, "POST", "discard", {"paths": ["no-such-file"]})
    assert (r.status, r.error_code) == (404, "path_not_found")


async def test_discard_all_keeps_ignored_files_and_nested_repositories(server: ServerThread, repo: str) -> None:
    write(repo, ".gitignore", "*.log\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore logs")
    write(repo, "keep.log", "ignored")
    write(repo, "junk/file.txt", "untracked")
    make_repo(os.path.join(repo, "nested"), {"n.txt": "n"})
    r = await vc(server, "POST", "discard", {"all": True, "untracked": True})
    assert r.status == 200, r.body
    assert not os.path.exists(os.path.join(repo, "junk"))
    assert os.path.exists(os.path.join(repo, "keep.log")) and os.path.exists(os.path.join(repo, "nested", "n.txt"))


# -- nested repositories and sub-folder workspaces ------------------------------------------------------------


async def test_nested_repository_is_reported_not_descended(server: ServerThread, repo: str) -> None:
    make_repo(os.path.join(repo, "vendor", "lib"), {"lib.py": "pass\n"})
    write(repo, "vendor/lib/lib.py", "changed inside the nested repository\n")
    write(repo, "top.txt", "t")
    files = paths_of((await vc(server, "GET", "status")).body)
    assert set(files) == {"vendor/lib", "top.txt"}
    assert files["vendor/lib"]["nested_repo"] is True and files["vendor/lib"]["status"] == "untracked"
    # Stage all adds the workspace's own files, never the nested repository as a gitlink.
    files = paths_of((await vc(server, "POST", "stage", {"all": True})).body)
    assert files["top.txt"]["staged"] is True and files["vendor/lib"]["staged"] is False
    for paths in (["vendor/lib/lib.py"], ["vendor/lib"]):
        r = await vc(server, "POST", "stage", {"paths": paths})
        assert (r.status, r.error_code) == (409, "path_in_nested_repository"), r.body
        assert r.body["error"]["details"]["nested_repository"] == "vendor/lib"
    assert "vendor" not in git(repo, "ls-files", "--stage")


async def test_workspace_in_a_sub_folder_of_a_repository(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    top = make_repo(os.path.join(os.fspath(tmp_path), "mono"), {"pkg/app/a.txt": "a\n", "other/b.txt": "b\n"})
    workspace = os.path.join(top, "pkg", "app")
    with git_server(servers, workspace) as server:
        write(top, "pkg/app/a.txt", "changed\n")
        write(top, "pkg/app/new.txt", "n")
        write(top, "other/b.txt", "changed elsewhere\n")
        write(top, "other/c.txt", "staged elsewhere")
        git(top, "add", "other/c.txt")
        body = (await vc(server, "GET", "status")).body
        assert body["workspace_prefix"] == "pkg/app"
        assert set(paths_of(body)) == {"a.txt", "new.txt"}  # workspace-relative; the rest left out
        assert body["staged_outside_workspace"] == 1 and body["clean"] is False

        r = await vc(server, "POST", "stage", {"all": True})
        assert {p: f["staged"] for p, f in paths_of(r.body).items()} == {"a.txt": True, "new.txt": True}
        assert git(top, "diff", "--name-only").split() == ["other/b.txt"]  # outside: untouched

        diff = (await vc(server, "GET", "diff?staged=true")).body
        assert sorted(f["path"] for f in diff["files"]) == ["a.txt", "new.txt"]
        assert "other/" not in diff["diff"]

        r = await vc(server, "POST", "commit", {"message": "pkg only", "files": ["a.txt", "new.txt"]})
        assert r.status == 201, r.body
        assert sorted(git(top, "show", "--name-only", "--format=", "HEAD").split()) == [
            "pkg/app/a.txt",
            "pkg/app/new.txt",
        ]
        log = (await vc(server, "GET", "log?path=")).body["commits"]
        assert [c["subject"] for c in log] == ["pkg only", "initial"]
        assert (await vc(server, "GET", "branches")).body["current"] == "main"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
async def test_repository_owned_by_someone_else(servers: ServerPool, tmp_path: os.PathLike[str]) -> None:
    top = make_repo(os.path.join(os.fspath(tmp_path), "foreign"), {"sub/a.txt": "a"})
    os.chown(top, 4242, 4242)
    # The workspace itself: trusted, the operator chose it.
    with git_server(servers, top) as server:
        assert (await vc(server, "GET", "status")).status == 200
    # A sub-folder: the repository found above it belongs to someone else, and git refuses it.
    with git_server(servers, os.path.join(top, "sub")) as server:
        r = await vc(server, "GET", "status")
        assert (r.status, r.error_code) == (409, "git_unsafe_repository"), r.body


# -- branches and checkout ---------------------------------------------------------------------------------------


async def test_branches_create_checkout_delete(server: ServerThread, repo: str) -> None:
    first = git(repo, "rev-parse", "HEAD").strip()
    second = commit_file(repo, "b.txt", "b", "second")
    r = await vc(server, "POST", "branches", {"name": "feature/x", "start_point": first})
    assert r.status == 201 and r.body["commit"] == first, r.body
    assert (await vc(server, "POST", "branches", {"name": "feature/x"})).error_code == "branch_exists"
    assert (await vc(server, "POST", "branches", {"name": "y", "start_point": "nope"})).error_code == "ref_not_found"
    for bad in ("-x", "a..b", "a b", "HEAD", "x.lock", "a/.b", "@", "x~1", ""):
        r = await vc(server, "POST", "branches", {"name": bad})
        assert r.status == 400, bad
    branches = (await vc(server, "GET", "branches")).body
    assert branches["current"] == "main"
    by_name = {b["name"]: b for b in branches["branches"]}
    assert by_name["main"]["commit"] == second and by_name["main"]["current"] is True
    assert by_name["feature/x"]["commit"] == first and by_name["feature/x"]["upstream"] is None

    r = await vc(server, "POST", "checkout", {"branch": "feature/x"})
    assert r.status == 200 and r.body == {"branch": "feature/x", "commit": first, "created": False, "upstream": None}
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "feature/x"
    r = await vc(server, "POST", "checkout", {"branch": "new", "create": True, "start_point": "main"})
    assert r.status == 200 and r.body["created"] is True and r.body["commit"] == second
    r = await vc(server, "POST", "checkout", {"branch": "main", "create": True})
    assert (r.status, r.error_code) == (409, "branch_exists")
    r = await vc(server, "POST", "checkout", {"branch": "does-not-exist"})
    assert (r.status, r.error_code) == (404, "branch_not_found")
    r = await vc(server, "POST", "checkout", {"branch": "main", "start_point": "HEAD"})
    assert r.status == 400

    # Delete: the current branch is refused; an unmerged one needs force; slashes in the URL work.
    assert (await vc(server, "DELETE", "branches/new")).error_code == "branch_is_current"
    git(repo, "checkout", "-q", "main")
    commit_file(repo, "c.txt", "c", "on main")
    git(repo, "checkout", "-q", "new")
    commit_file(repo, "d.txt", "d", "only on new")
    git(repo, "checkout", "-q", "main")
    r = await vc(server, "DELETE", "branches/new")
    assert (r.status, r.error_code) == (409, "branch_not_merged"), r.body
    r = await vc(server, "DELETE", "branches/new?force=true")
    assert r.status == 200 and r.body["name"] == "new"
    r = await vc(server, "DELETE", "branches/feature%2Fx")
    assert r.status == 200 and r.body == {"name": "feature/x", "commit": first}
    assert (await vc(server, "DELETE", "branches/feature/x")).error_code == "branch_not_found"


async def test_checkout_that_would_overwrite_local_changes(server: ServerThread, repo: str) -> None:
    names = ["plain.txt", 'we"ird\nname.txt', "ü tab\tx.txt"]
    for name in names:
        write(repo, name, "1")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "three")
    git(repo, "checkout", "-q", "-b", "other")
    for name in names:
        write(repo, name, "2")
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "checkout", "-q", "main")
    for name in names:
        write(repo, name, "3")
    write(repo, "README.md", "a local change checkout can carry along\n")
    r = await vc(server, "POST", "checkout", {"branch": "other"})
    assert (r.status, r.error_code) == (409, "checkout_conflict"), r.body
    assert sorted(r.body["error"]["details"]["paths"]) == sorted(names)
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main" and read(repo, "plain.txt") == "3"


async def test_git_missing_is_503(server: ServerThread) -> None:
    assert server.runtime is not None
    runner = server.runtime.ctx.git.runner
    runner.git = "/nonexistent/git"
    server.runtime.ctx.git._repo = None
    try:
        r = await vc(server, "GET", "status")
        assert (r.status, r.error_code) == (503, "git_unavailable")
    finally:
        runner.git = "git"
