"""The git parsers, name validation and the runner's environment — pure functions, checked against real git."""

from __future__ import annotations

import random
import subprocess
from typing import Any

from tests.git_helpers import GIT_ENV
from wsruntime_ext.git.parse import (
    is_branch_name,
    is_revision,
    parse_log,
    parse_progress,
    parse_push_porcelain,
    parse_raw_numstat,
    parse_refs,
    parse_status,
)
from wsruntime_ext.git.runner import ProgressThrottle, batch_ssh_command, build_env, classify, clean_output
from wsruntime_ext.procs import Completed


def git_accepts_branch(name: str) -> bool:
    done = subprocess.run(
        ["git", "check-ref-format", f"refs/heads/{name}"], env=GIT_ENV, capture_output=True, timeout=10
    )
    return done.returncode == 0


def test_branch_names_agree_with_git_check_ref_format() -> None:
    rng = random.Random(8)
    alphabet = [
        "a",
        "b",
        "/",
        ".",
        "-",
        "@",
        "{",
        "}",
        "~",
        "^",
        ":",
        "?",
        "*",
        "[",
        "\\",
        " ",
        "\t",
        "ü",
        "lock",
        "\x7f",
    ]
    names = [
        "main",
        "feature/x",
        "a..b",
        "a/.b",
        ".a",
        "a.",
        "a.lock",
        "a.lock/b",
        "a//b",
        "/a",
        "a/",
        "@",
        "a@{b",
        "@{",
        "ü",
        "x y",
        "-x",
        "HEAD",
        "a-b",
        "v1.0",
        "refs/heads/x",
        "a@b",
        "{a}",
    ]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(250)]
    for name in names:
        # Stricter than git on purpose: a leading "-" reads as an option, "HEAD" and "@" as HEAD itself.
        expected = git_accepts_branch(name) and not name.startswith("-") and name not in ("HEAD", "@")
        assert is_branch_name(name) == expected, repr(name)


def test_revisions() -> None:
    for good in ("HEAD", "main~2", "a..b", "v1.0^{commit}", "main@{1}", "abc123", "origin/main"):
        assert is_revision(good), good
    for bad in ("", "-x", "--all", "a b", "a\nb", "a\x00"):
        assert not is_revision(bad), bad


def test_parse_status_every_kind_of_line() -> None:
    raw = b"\0".join(
        [
            b"# branch.oid 1234567890abcdef1234567890abcdef12345678",
            b"# branch.head feature/\xc3\xbc",
            b"# branch.upstream origin/feature/\xc3\xbc",
            b"# branch.ab +2 -3",
            b"# stash 4",
            b"1 .M N... 100644 100644 100644 aaaa bbbb with space.txt",
            b"1 A. S... 000000 160000 160000 aaaa bbbb sub",
            b"2 R. N... 100644 100644 100644 aaaa bbbb R87 new\nname.txt",
            b"old\tname.txt",
            b"u UU N... 100644 100644 100644 100644 aaaa bbbb cccc both.txt",
            b"u DU N... 100644 000000 100644 100644 aaaa bbbb cccc ours-deleted.txt",
            b'? untracked "q".txt',
            b"? nested/",
            b"! ignored.log",
            b"",
        ]
    )
    st = parse_status(raw)
    assert (st.oid, st.head, st.upstream, st.ahead, st.behind, st.stashes) == (
        "1234567890abcdef1234567890abcdef12345678",
        "feature/ü",
        "origin/feature/ü",
        2,
        3,
        4,
    )
    assert not st.upstream_gone
    entries = {e.path: e for e in st.entries}
    assert entries["with space.txt"].status == "modified" and not entries["with space.txt"].staged
    assert entries["sub"].submodule and entries["sub"].status == "added" and entries["sub"].staged
    renamed = entries["new\nname.txt"]
    assert (renamed.status, renamed.orig_path, renamed.index) == ("renamed", "old\tname.txt", "R")
    assert entries["both.txt"].status == "conflicted" and entries["both.txt"].conflict == "both_modified"
    assert entries["ours-deleted.txt"].conflict == "deleted_by_us" and not entries["ours-deleted.txt"].staged
    assert entries['untracked "q".txt'].status == "untracked"
    assert entries["nested/"].status == "untracked" and entries["ignored.log"].status == "ignored"


def test_parse_status_initial_detached_and_gone() -> None:
    st = parse_status(b"# branch.oid (initial)\0# branch.head main\0")
    assert st.oid is None and st.head == "main" and st.entries == []
    st = parse_status(b"# branch.oid abc\0# branch.head (detached)\0")
    assert st.head is None
    st = parse_status(b"# branch.oid abc\0# branch.head x\0# branch.upstream origin/x\0")
    assert st.upstream_gone and (st.ahead, st.behind) == (0, 0)


def test_parse_log_keeps_every_character() -> None:
    record = [
        b"a" * 40,
        b"aaaaaaa",
        b"N\xc3\xa4me",
        b"n@x",
        b"1700000000",
        b"C",
        b"c@x",
        b"1700000001",
        b"p1 p2",
        b"HEAD -> main, tag: v1",
        b'subject "with" \x1e',
        b"body\n\n\twith tab\n",
    ]
    raw = (
        b"\0".join(record)
        + b"\0"
        + b"\0".join([b"b" * 40, b"bbbbbbb", b"", b"", b"0", b"", b"", b"0", b"", b"", b"s", b""])
        + b"\0"
    )
    commits = parse_log(raw)
    assert len(commits) == 2
    first = commits[0]
    assert first["author_name"] == "Näme" and first["parents"] == ["p1", "p2"]
    assert first["subject"] == 'subject "with" \x1e' and first["body"] == "body\n\n\twith tab"
    assert first["date"] == "2023-11-14T22:13:20.000Z" and first["committer_date"] == "2023-11-14T22:13:21.000Z"
    assert first["refs"] == ["HEAD -> main", "tag: v1"]
    assert commits[1]["parents"] == [] and commits[1]["refs"] == []


def test_parse_refs() -> None:
    raw = (
        b"refs/heads/main\0abc\0refs/remotes/origin/main\0origin/main\0ahead 1, behind 2\0*\0\0001700000000\0s\0\n"
        b"refs/heads/old\0def\0refs/remotes/origin/old\0origin/old\0gone\0 \0\0001700000000\0t\0\n"
        b"refs/remotes/origin/HEAD\0abc\0\0\0\0 \0refs/remotes/origin/main\0001700000000\0s\0\n"
    )
    refs = parse_refs(raw)
    assert [r.refname for r in refs] == ["refs/heads/main", "refs/heads/old", "refs/remotes/origin/HEAD"]
    assert refs[0].head and refs[0].ahead_behind == (1, 2, False) and refs[0].upstream == "origin/main"
    assert refs[1].ahead_behind == (0, 0, True) and not refs[1].head
    assert refs[2].symref == "refs/remotes/origin/main"


def test_parse_raw_numstat_renames_and_binary() -> None:
    raw = (
        b":100644 100644 aaa bbb M\0a file.txt\0"
        b":100644 100644 aaa aaa R100\0old\tname\0new\nname\0"
        b":000000 100644 000 ccc A\0image.png\0"
        b"3\t1\ta file.txt\0"
        b"0\t0\t\0old\tname\0new\nname\0"
        b"-\t-\timage.png\0"
    )
    assert parse_raw_numstat(raw) == [
        {"path": "a file.txt", "status": "modified", "additions": 3, "deletions": 1, "binary": False},
        {
            "path": "new\nname",
            "orig_path": "old\tname",
            "status": "renamed",
            "additions": 0,
            "deletions": 0,
            "binary": False,
        },
        {"path": "image.png", "status": "added", "additions": 0, "deletions": 0, "binary": True},
    ]


def test_parse_push_porcelain_and_progress() -> None:
    out = (
        b"To /tmp/remote.git\n"
        b"!\trefs/heads/main:refs/heads/main\t[rejected] (fetch first)\n"
        b"*\trefs/heads/x:refs/heads/x\t[new branch]\n"
        b"Done\n"
    )
    refs = parse_push_porcelain(out)
    assert [(r.result, r.destination, r.summary) for r in refs] == [
        ("rejected", "refs/heads/main", "[rejected] (fetch first)"),
        ("created", "refs/heads/x", "[new branch]"),
    ]
    assert parse_progress("Writing objects:  45% (9/20), 1.2 MiB | 3 MiB/s") == {
        "line": "Writing objects:  45% (9/20), 1.2 MiB | 3 MiB/s",
        "phase": "Writing objects",
        "percent": 45,
        "done": 9,
        "total": 20,
    }
    assert parse_progress("remote: Counting objects: 100% (3/3), done.")["phase"] == "Counting objects"
    assert parse_progress("To /tmp/remote.git") == {"line": "To /tmp/remote.git"}


def test_progress_throttle_keeps_phase_changes_and_completion() -> None:
    published: list[dict[str, Any]] = []
    throttle = ProgressThrottle("push", lambda topic, fields: published.append(fields), interval=3600)
    for line in [
        "Counting objects:  10% (1/10)",
        "Counting objects:  50% (5/10)",
        "Counting objects: 100% (10/10)",
        "Writing objects:  10% (1/10)",
        "Writing objects:  20% (2/10)",
        "Writing objects: 100% (10/10), done.",
    ]:
        throttle(line)
    assert [(e["phase"], e["percent"]) for e in published] == [
        ("Counting objects", 10),
        ("Counting objects", 100),
        ("Writing objects", 10),
        ("Writing objects", 100),
    ]
    assert all(e["operation"] == "push" for e in published)


def test_environment_never_prompts_and_never_redirects() -> None:
    env = build_env(
        {
            "PATH": "/usr/bin",
            "HOME": "/h",
            "GIT_DIR": "/elsewhere",
            "GIT_INDEX_FILE": "x",
            "LANG": "de_DE",
            "GIT_TRACE": "1",
            "LANGUAGE": "de",
        }
    )
    assert "GIT_DIR" not in env and "GIT_INDEX_FILE" not in env and "GIT_TRACE" not in env and "LANGUAGE" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GCM_INTERACTIVE"] == "never" and env["LC_ALL"] == "C"
    assert env["GIT_ASKPASS"] == env["SSH_ASKPASS"]
    assert subprocess.run([env["GIT_ASKPASS"], "Password:"], capture_output=True).returncode != 0
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"] and env["HOME"] == "/h"
    assert build_env({"GIT_SSH_COMMAND": "ssh -i key"})["GIT_SSH_COMMAND"] == "ssh -i key"
    assert batch_ssh_command("/usr/bin/ssh -i ~/.ssh/k") == "/usr/bin/ssh -i ~/.ssh/k -o BatchMode=yes"
    assert batch_ssh_command("plink -batch") == "plink -batch"


def test_classify_and_clean_output() -> None:
    def failed(stderr: str) -> Completed:
        return Completed(["git"], 128, b"", stderr.encode())

    cases = {
        "fatal: not a git repository (or any of the parent directories): .git": (409, "not_a_git_repository"),
        "fatal: Unable to create '/r/.git/index.lock': File exists.": (409, "git_locked"),
        "fatal: detected dubious ownership in repository at '/r'": (409, "git_unsafe_repository"),
        "error: could not lock config file .git/config: File exists": (409, "git_locked"),
        "fatal: cannot lock ref 'refs/heads/main': Unable to create '/r/.git/refs/heads/main.lock'": (
            409,
            "git_locked",
        ),
        "fatal: could not read Username for 'https://h': terminal prompts disabled": (502, "git_auth_failed"),
        "git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.": (
            502,
            "git_auth_failed",
        ),
        "fatal: unable to access 'https://h/': Could not resolve host: h": (502, "git_remote_error"),
        "*** Please tell me who you are.": (422, "git_identity_missing"),
        "fatal: something new": (502, "git_failed"),
    }
    for stderr, expected in cases.items():
        error = classify(failed(stderr), "x")
        assert (error.status_code, error.code) == expected, stderr
    text = clean_output(
        b"fatal: unable to access 'https://user:s3cret@host/r.git/'\nWriting objects: 10%\rWriting objects: 100%\n"
    )
    assert "s3cret" not in text and "user:***@host" in text
    assert "Writing objects: 100%" in text and "10%" not in text
