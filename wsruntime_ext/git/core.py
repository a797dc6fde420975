"""The core every group of git operations shares: finding the repository, running git, small queries.

:class:`Repository` says where the workspace sits in its repository (git's
own discovery from the workspace directory, cached while it stays valid);
:class:`GitCore` runs git through the :class:`GitRunner`, serialises writes,
jails client paths, and answers the small questions (current branch,
upstream, remotes, …) the operations ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Callable

from wsruntime_ext.base import ApiError
from wsruntime_ext.git.parse import (
    Status,
    decode,
    is_branch_name,
    is_remote_name,
    is_revision,
    parse_status,
)
from wsruntime_ext.git.runner import (
    GitRunner,
    batch_ssh_command,
    classify,
    literal,
)
from wsruntime_ext.paths import resolve_in_workspace
from wsruntime_ext.procs import Completed

log = logging.getLogger("wsruntime.git")

Publish = Callable[[str, dict], None]
RunBlocking = Callable[..., Awaitable[Any]]

UNTRACKED_MODES = ("all", "normal", "no")
OVERWRITTEN = re.compile(r"would be overwritten by|would be removed by", re.I)
_IN_PROGRESS_MARKERS = (
    ("rebase-merge", "rebase"),
    ("rebase-apply/applying", "am"),
    ("rebase-apply", "rebase"),
    ("MERGE_HEAD", "merge"),
    ("CHERRY_PICK_HEAD", "cherry_pick"),
    ("REVERT_HEAD", "revert"),
)


@dataclasses.dataclass(frozen=True)
class Repository:
    """Where the workspace sits in its repository: the work tree's top, the git dir, the workspace's prefix."""

    top: str
    git_dir: str
    prefix: str  # "" when the workspace is the top, else like "packages/app/"

    def to_workspace(self, repo_path: str) -> str | None:
        """A repository-relative path as a workspace-relative one; None when it lies outside the workspace."""
        if not self.prefix:
            return repo_path
        if repo_path.startswith(self.prefix) and len(repo_path) > len(self.prefix):
            return repo_path[len(self.prefix) :]
        return None

    def in_progress(self) -> str | None:
        """The operation a conflict stopped half-way (merge, rebase, am, cherry_pick, revert), if any."""
        for marker, operation in _IN_PROGRESS_MARKERS:
            if os.path.exists(os.path.join(self.git_dir, marker)):
                return operation
        return None


@dataclasses.dataclass
class Upstream:
    """A branch's upstream: the remote's name and the branch's ref there."""

    remote: str
    ref: str  # the branch on the remote, like refs/heads/main

    @property
    def branch(self) -> str:
        return self.ref[len("refs/heads/") :] if self.ref.startswith("refs/heads/") else self.ref


def bad_field(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, code, message, field=field)


def check_branch_name(name: str, field: str = "branch") -> str:
    if not is_branch_name(name):
        raise bad_field(field, f"{name!r} is not a valid branch name", "invalid_branch_name")
    return name


def check_revision(text: str, field: str = "ref") -> str:
    if not is_revision(text):
        raise bad_field(field, f"{text!r} is not a valid revision (no spaces or control characters, no leading '-')")
    return text


def check_remote_name(name: str, field: str = "remote") -> str:
    if not is_remote_name(name):
        raise bad_field(field, f"{name!r} is not a valid remote name")
    return name


class GitCore:
    """What every group of operations shares: running git, finding the repository, small queries."""

    def __init__(
        self,
        runner: GitRunner,
        workspace: str,
        run_blocking: RunBlocking,
        publish: Publish | None = None,
    ) -> None:
        self.runner = runner
        self.workspace = workspace
        self.run_blocking = run_blocking
        self._publish = publish
        self._repo: Repository | None = None
        self._lock: asyncio.Lock | None = None

    # -- plumbing -------------------------------------------------------------------------

    def publish(self, topic: str, fields: dict[str, Any]) -> None:
        if self._publish is not None:
            try:
                self._publish(topic, fields)
            except Exception:
                log.exception("publishing %s failed", topic)

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """One write to the repository at a time, so that our own calls never fight over index.lock."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            await asyncio.wait_for(self._lock.acquire(), self.runner.local_timeout)
        except asyncio.TimeoutError:
            raise ApiError(409, "git_locked", "Another git operation of this runtime is still running") from None
        try:
            yield
        finally:
            self._lock.release()

    async def git(self, *args: str, action: str | None = None, **kwargs: Any) -> Completed:
        """Run git and raise the classified error when it fails."""
        done = await self.runner.run(args, **kwargs)
        if done.returncode != 0:
            raise classify(done, action or args[0])
        return done

    def jail(self, client_path: str, field: str = "path") -> str:
        """A client path → its workspace-relative form; 403 outside the workspace (a final symlink is not followed)."""
        if not isinstance(client_path, str):
            raise bad_field(field, f"{field} must be a string")
        return resolve_in_workspace(self.workspace, client_path, follow_final=False).rel

    async def repository(self) -> Repository:
        """The repository holding the workspace (git's own discovery, cached while it stays valid) or 409."""
        cached = self._repo
        if cached is not None and self._still_valid(cached):
            return cached
        self._repo = None
        done = await self.runner.run(
            ["rev-parse", "--is-inside-work-tree", "--absolute-git-dir", "--show-toplevel", "--show-prefix"],
            read_only=True,
        )
        lines = done.stdout.decode("utf-8", "surrogateescape").split("\n")
        if done.returncode != 0 or lines[0] != "true" or len(lines) < 4:
            raise await self._not_a_repository(done)
        repo = Repository(top=lines[2], git_dir=lines[1], prefix=lines[3])
        self._repo = repo
        return repo

    def _still_valid(self, repo: Repository) -> bool:
        """The cached discovery still holds: the git dir exists and no repository appeared in between."""
        if not os.path.isdir(repo.git_dir) or not os.path.lexists(os.path.join(repo.top, ".git")):
            return False
        directory = self.workspace
        while len(directory) > len(repo.top):
            if os.path.lexists(os.path.join(directory, ".git")):
                return False
            directory = os.path.dirname(directory)
        return True

    async def _not_a_repository(self, done: Completed) -> ApiError:
        error = classify(done, "rev-parse")
        if done.returncode == 0 or done.stdout.startswith(b"false"):
            error = ApiError(
                409,
                "not_a_git_repository",
                "The workspace is inside a bare repository or a .git directory, not a work tree",
            )
        if error.code == "not_a_git_repository":
            nested = await self.run_blocking(find_nested_repositories, self.workspace)
            error.details["nested_repositories"] = nested
            if nested:
                error.message += f"; it contains {len(nested)} nested repositor{'y' if len(nested) == 1 else 'ies'}"
        return error

    # -- small queries ---------------------------------------------------------------------

    async def head_commit(self) -> str | None:
        done = await self.runner.run(["rev-parse", "-q", "--verify", "HEAD^{commit}"], read_only=True)
        return done.stdout.decode().strip() or None if done.returncode == 0 else None

    async def current_branch(self) -> str | None:
        """The checked-out branch (also before its first commit); None when HEAD is detached."""
        done = await self.runner.run(["symbolic-ref", "-q", "--short", "HEAD"], read_only=True)
        return decode(done.stdout).strip() or None if done.returncode == 0 else None

    async def resolve_commit(self, revision: str, field: str = "ref") -> str:
        """The commit a revision names, or 404 ``ref_not_found``."""
        done = await self.runner.run(
            ["rev-parse", "-q", "--verify", "--end-of-options", revision + "^{commit}"], read_only=True
        )
        if done.returncode != 0:
            raise ApiError(404, "ref_not_found", f"No commit named {revision!r}", **{field: revision})
        return done.stdout.decode().strip()

    async def branch_commit(self, name: str) -> str | None:
        done = await self.runner.run(["rev-parse", "-q", "--verify", f"refs/heads/{name}"], read_only=True)
        return done.stdout.decode().strip() or None if done.returncode == 0 else None

    async def remotes(self) -> list[str]:
        done = await self.git("remote", read_only=True)
        return [line for line in decode(done.stdout).splitlines() if line]

    async def upstream(self, branch: str) -> Upstream | None:
        done = await self.git(
            "for-each-ref",
            "--format=%(refname)%00%(upstream:remotename)%00%(upstream:remoteref)%00",
            f"refs/heads/{branch}",
            read_only=True,
        )
        for record in done.stdout.split(b"\n"):
            fields = record.split(b"\0")
            if len(fields) >= 3 and decode(fields[0]) == f"refs/heads/{branch}" and fields[1] and fields[2]:
                return Upstream(decode(fields[1]), decode(fields[2]))
        return None

    def default_remote(self, remotes: Sequence[str]) -> str:
        if "origin" in remotes:
            return "origin"
        if len(remotes) == 1:
            return remotes[0]
        if not remotes:
            raise ApiError(409, "no_remote", "The repository has no remote")
        raise ApiError(409, "no_remote", "There is no remote named origin: name the remote", remotes=list(remotes))

    async def check_remote(self, remote: str) -> list[str]:
        remotes = await self.remotes()
        if remote not in remotes:
            raise ApiError(404, "remote_not_found", f"No remote named {remote!r}", remote=remote, remotes=remotes)
        return remotes

    async def network_env(self) -> dict[str, str]:
        """Extra environment for push, pull and fetch: progress at once, a configured ssh made non-interactive."""
        env = {"GIT_PROGRESS_DELAY": "0"}
        done = await self.runner.run(["config", "--get", "core.sshCommand"], read_only=True)
        configured = decode(done.stdout).strip()
        if done.returncode == 0 and configured and "GIT_SSH_COMMAND" not in self.runner.base_env:
            env["GIT_SSH_COMMAND"] = batch_ssh_command(configured)
        return env

    async def raw_status(self, *pathspecs: str, untracked: str = "all") -> Status:
        done = await self.git(
            "status",
            "--porcelain=v2",
            "-z",
            "--branch",
            "--show-stash",
            f"--untracked-files={untracked}",
            "--",
            *pathspecs,
            read_only=True,
        )
        if done.truncated:
            # A partial listing would be a wrong one: say so instead.
            raise ApiError(
                502,
                "git_output_too_large",
                "git status printed more than the runtime reads; try untracked=normal, or ignore generated files",
            )
        return parse_status(done.stdout)

    def split_paths(self, repo: Repository, repo_paths: Sequence[str]) -> dict[str, list[str]]:
        """Repository paths → ``{"paths": [workspace-relative], "outside_workspace": [repository-relative]}``."""
        inside, outside = [], []
        for p in repo_paths:
            rel = repo.to_workspace(p)
            if rel is None:
                outside.append(p)
            else:
                inside.append(rel)
        result: dict[str, list[str]] = {"paths": inside}
        if outside:
            result["outside_workspace"] = outside
        return result

    async def unresolved_conflicts(
        self, repo: Repository, message: str, st: Status | None = None, **details: Any
    ) -> ApiError | None:
        """409 ``merge_conflict`` (``paths``, ``operation``) when the index still has conflicted entries, else None:
        what a merge, rebase or cherry-pick stopped on must be resolved (or aborted) before git goes on.
        ``st``: the status, when the caller has it already."""
        st = st if st is not None else await self.raw_status()
        conflicted = [e.path for e in st.entries if e.kind == "unmerged"]
        if not conflicted:
            return None
        operation = repo.in_progress() or "merge"
        return ApiError(
            409,
            "merge_conflict",
            message.format(operation=operation),
            operation=operation,
            **details,
            **self.split_paths(repo, conflicted),
        )

    def missing_paths(self, rels: Sequence[str]) -> list[str]:
        """The workspace paths that do not exist on disk (a few stats: cheap enough for the IOLoop)."""
        return [r for r in rels if not os.path.lexists(os.path.join(self.workspace, r))]

    def is_file(self, rel: str) -> bool:
        return os.path.isfile(os.path.join(self.workspace, rel))

    def nested_repository_of(self, repo: Repository, rel: str) -> str | None:
        """The nested repository a workspace path lies in or is (its workspace path), if any."""
        parts = [p for p in rel.split("/") if p]
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[:depth])
            if os.path.lexists(os.path.join(self.workspace, candidate, ".git")):
                return candidate
        return None

    async def check_not_nested(self, repo: Repository, rels: Sequence[str]) -> None:
        """409 when a path is inside a nested repository, or is one that this repository does not track."""
        for rel in rels:
            nested = self.nested_repository_of(repo, rel)
            if nested is None:
                continue
            if nested == rel.rstrip("/"):
                done = await self.runner.run(["ls-files", "-z", "--stage", "--", literal(rel)], read_only=True)
                if done.stdout.startswith(b"160000 "):
                    continue  # a submodule / gitlink this repository tracks: its pointer can be staged
            raise ApiError(
                409,
                "path_in_nested_repository",
                f"{rel!r} belongs to the nested repository {nested!r}, which this repository does not track",
                path=rel,
                nested_repository=nested,
            )

    async def overwritten_paths(self, repo: Repository, target: str, message: str) -> dict[str, list[str]]:
        """The local changes a switch or merge to ``target`` would overwrite: changed here ∩ changed there."""
        head = await self.head_commit()
        if head is not None:
            diff = await self.runner.run(
                ["diff", "--name-only", "-z", "--no-renames", "HEAD", target, "--"], read_only=True
            )
        else:
            diff = await self.runner.run(["ls-tree", "-r", "-z", "--name-only", target], read_only=True)
        there = {decode(p) for p in diff.stdout.split(b"\0") if p}
        st = await self.raw_status()
        here = {e.path for e in st.entries} | {e.orig_path for e in st.entries if e.orig_path}
        hit = sorted(there & here)
        if not hit:
            # Fall back to git's own list: the tab-indented lines of its message (names printed raw).
            hit = [line[1:] for line in message.splitlines() if line.startswith("\t")]
        return self.split_paths(repo, hit)


def find_nested_repositories(root: str, depth: int = 2, limit: int = 50) -> list[str]:
    """Workspace-relative directories (up to ``depth`` levels down) that hold a repository of their own."""
    found: list[str] = []
    level = [""]
    for _ in range(depth):
        below: list[str] = []
        for rel in level:
            try:
                with os.scandir(os.path.join(root, rel)) as it:
                    entries = sorted((e for e in it if e.is_dir(follow_symlinks=False)), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name in (".git", "node_modules", ".wsruntime"):
                    continue
                child = f"{rel}/{entry.name}" if rel else entry.name
                if os.path.lexists(os.path.join(entry.path, ".git")):
                    found.append(child)
                    if len(found) >= limit:
                        return found
                elif not entry.name.startswith("."):
                    below.append(child)
        level = below
    return found
