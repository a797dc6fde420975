"""Status, history, diff, commit, stage, unstage, discard and abort: the work tree and the index."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from typing import Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.git.core import GitCore, Repository, bad_field, check_revision
from wsruntime_ext.git.parse import LOG_FORMAT, StatusEntry, decode, parse_log, parse_raw_numstat
from wsruntime_ext.git.runner import classify, clean_output, literal, literal_top

DIFF_LIMIT = 4 << 20  # bytes of patch text in one diff answer; the file stats are always complete
_UNKNOWN_REVISION = re.compile(
    r"bad revision|unknown revision|ambiguous argument|bad default revision|invalid object name|not a valid object name"
    r"|Needed a single revision|bad object",
    re.I,
)
_DIFF_OPTIONS = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/"]
_NOTHING_TO_COMMIT = re.compile(
    r"nothing to commit|no changes added to commit|nothing added to commit|would make it empty", re.I
)
_ABORT_COMMANDS = {
    "merge": ["merge", "--abort"],
    "rebase": ["rebase", "--abort"],
    "am": ["am", "--abort"],
    "cherry_pick": ["cherry-pick", "--abort"],
    "revert": ["revert", "--abort"],
}


class WorkTreeOps(GitCore):
    """Operations on the work tree, the index and the history."""

    # -- status ------------------------------------------------------------------------------

    async def status(self, untracked: str = "all") -> dict[str, Any]:
        """API.md's status, for the files inside the workspace."""
        repo = await self.repository()
        if repo.prefix:
            st, outside = await asyncio.gather(
                self.raw_status(literal(""), untracked=untracked), self._staged_outside(repo)
            )
        else:
            st, outside = await self.raw_status(literal(""), untracked=untracked), 0
        files = [item for item in (self._file_entry(repo, e) for e in st.entries) if item is not None]
        return {
            "branch": st.head,
            "upstream": st.upstream,
            "ahead": st.ahead,
            "behind": st.behind,
            "detached": st.head is None,
            "clean": not files,
            "files": files,
            "head": st.oid,
            "upstream_gone": st.upstream_gone,
            "stashes": st.stashes,
            "in_progress": repo.in_progress(),
            "workspace_prefix": repo.prefix.rstrip("/"),
            "staged_outside_workspace": outside,
        }

    async def _staged_outside(self, repo: Repository) -> int:
        done = await self.runner.run(["diff", "--cached", "--name-only", "-z", "--no-renames"], read_only=True)
        return sum(1 for p in done.stdout.split(b"\0") if p and repo.to_workspace(decode(p)) is None)

    def _file_entry(self, repo: Repository, entry: StatusEntry) -> dict[str, Any] | None:
        path = repo.to_workspace(entry.path)
        if path is None or not path.strip("/"):
            return None
        item: dict[str, Any] = {
            "path": path.rstrip("/"),
            "index": entry.index,
            "worktree": entry.worktree,
            "status": entry.status,
            "staged": entry.staged,
        }
        if entry.orig_path is not None:
            orig = repo.to_workspace(entry.orig_path)
            if orig is None:
                item["orig_path_outside_workspace"] = True
            else:
                item["orig_path"] = orig
        if entry.conflict is not None:
            item["conflict"] = entry.conflict
        if path.endswith("/"):
            # git shows a directory it does not descend into: a nested repository, or (with
            # untracked=normal) a directory of untracked files.
            item["directory"] = True
            if os.path.lexists(os.path.join(repo.top, entry.path, ".git")):
                item["nested_repo"] = True
        elif entry.submodule:
            item["nested_repo"] = True
        return item

    # -- log ---------------------------------------------------------------------------------

    async def log(self, limit: int, skip: int, ref: str | None, path: str | None) -> dict[str, Any]:
        """Commits newest first, ``limit`` at a time from ``skip``; ``has_more`` when there are others."""
        if ref is not None:
            check_revision(ref)
        spec = [literal(self.jail(path))] if path is not None else []
        await self.repository()
        args = ["log", "-z", f"--format={LOG_FORMAT}", "--no-show-signature", f"--max-count={limit + 1}"]
        args += [f"--skip={skip}", *([ref] if ref else []), "--", *spec]
        done = await self.runner.run(args, read_only=True)
        if done.returncode != 0:
            text = decode(done.stderr)
            if ref is None and "does not have any commits yet" in text:
                return {"commits": [], "has_more": False}
            if ref is not None and _UNKNOWN_REVISION.search(text):
                raise ApiError(404, "ref_not_found", f"No commit named {ref!r}", ref=ref)
            raise classify(done, "log")
        commits = parse_log(done.stdout)
        if done.truncated:  # messages too large to read whole: drop the one cut off, the rest is a page
            commits = commits[:-1]
            return {"commits": commits[:limit], "has_more": True}
        return {"commits": commits[:limit], "has_more": len(commits) > limit}

    # -- commit --------------------------------------------------------------------------------

    async def commit(
        self,
        message: str,
        files: list[str] | None = None,
        all_tracked: bool = False,
        amend: bool = False,
        author: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Commit what is staged; with ``files`` exactly those files; with ``all_tracked`` every tracked change."""
        if not message.strip(" \t\n\r"):  # the white space git strips (parse.MESSAGE_PATTERN)
            raise bad_field("message", "The commit message is empty", "empty_message")
        if "\0" in message:
            raise bad_field("message", "The commit message contains a NUL character")
        if files is not None and all_tracked:
            raise bad_field("files", "Give either files or all, not both")
        if files is not None and not files:
            raise bad_field("files", "files is empty: leave it out to commit what is staged")
        rels = [self.jail(f, "files") for f in files] if files is not None else None
        env: dict[str, str] = {}
        if author is not None:
            env.update(GIT_AUTHOR_NAME=author["name"], GIT_AUTHOR_EMAIL=author["email"])
        async with self.writing():
            repo = await self.repository()
            await self._check_identity(env, author)
            if rels is not None:
                operation = repo.in_progress()
                if operation in ("merge", "cherry_pick", "revert"):
                    # Checked before staging anything: git refuses a partial commit here only afterwards.
                    raise ApiError(
                        409,
                        "merge_in_progress",
                        f"A {operation.replace('_', '-')} is in progress: commit everything (leave files out) or abort",
                        operation=operation,
                    )
                await self.check_not_nested(repo, rels)
                specs = [literal(r) for r in rels]
                await self._add(repo, specs, rels)
            elif all_tracked:
                await self.git("add", "-u", "--", literal(""), action="add")
            args = ["commit", "-F", "-", *(["--amend"] if amend else [])]
            if author is not None:
                # --author rather than the environment alone: an amend keeps the old author otherwise.
                args.append(f"--author={author['name']} <{author['email']}>")
            if rels is not None:
                args += ["--only", "--", *specs]
            done = await self.runner.run(args, input=message.encode("utf-8"), env=env, timeout=self.runner.hook_timeout)
            if done.returncode != 0:
                text = decode(done.stdout + done.stderr)
                if _NOTHING_TO_COMMIT.search(text):
                    raise ApiError(
                        409, "nothing_to_commit", "There is nothing to commit", output=clean_output(done.stdout)
                    )
                if "nothing to amend" in text:
                    raise ApiError(409, "no_commits", "There is no commit to amend yet")
                if "partial commit during a merge" in text:
                    raise ApiError(
                        409,
                        "merge_in_progress",
                        "A merge is in progress: commit everything (leave files out) or abort it",
                    )
                conflict = await self.unresolved_conflicts(
                    repo, "The {operation} has unresolved conflicts: resolve and stage them before committing, or abort"
                )
                if conflict is not None:
                    raise conflict
                error = classify(done, "commit")
                if error.code == "git_failed" and await self._commit_hook_present():
                    raise ApiError(
                        409,
                        "hook_failed",
                        "A commit hook of the repository refused the commit",
                        output=clean_output(done.stderr + done.stdout),
                    )
                raise error
            made = await self.git("log", "-1", "-z", "--format=%H%x00%h%x00%s%x00%D", read_only=True)
        fields = made.stdout.split(b"\0")
        decoration = decode(fields[3])
        branch = decoration.split("HEAD -> ", 1)[1].split(", ")[0] if "HEAD -> " in decoration else None
        self.publish("git_changed", {"operation": "commit"})
        return {
            "hash": decode(fields[0]),
            "short_hash": decode(fields[1]),
            "branch": branch,
            "subject": decode(fields[2]),
            "amended": amend,
        }

    async def _commit_hook_present(self) -> bool:
        """Whether the repository has a hook that can refuse a commit (core.hooksPath honoured)."""
        done = await self.runner.run(["rev-parse", "--git-path", "hooks"], read_only=True)
        hooks = os.path.join(self.workspace, decode(done.stdout).strip())
        names = ("pre-commit", "prepare-commit-msg", "commit-msg")
        return any(os.access(os.path.join(hooks, name), os.X_OK) for name in names)

    async def _check_identity(self, env: dict[str, str], author: dict[str, str] | None) -> None:
        """422 before anything changes when git has no identity to commit with (the request's author counts)."""
        # "git var NAME" is strict (it fails rather than guess); "git var -l" would print a guess.
        author_ident, committer_ident = await asyncio.gather(
            self.runner.run(["var", "GIT_AUTHOR_IDENT"], env=env, read_only=True),
            self.runner.run(["var", "GIT_COMMITTER_IDENT"], env=env, read_only=True),
        )
        if author_ident.returncode != 0:
            raise ApiError(
                422,
                "git_identity_missing",
                "git has no author identity: set user.name and user.email (git config), or pass an author",
            )
        if committer_ident.returncode != 0:
            if author is None:
                raise ApiError(
                    422, "git_identity_missing", "git has no committer identity: set user.name and user.email"
                )
            env.update(GIT_COMMITTER_NAME=author["name"], GIT_COMMITTER_EMAIL=author["email"])

    async def _add(self, repo: Repository, specs: Sequence[str], rels: Sequence[str]) -> None:
        """``git add -A`` for client paths: 404 for a path git knows nothing of, 409 for an ignored one."""
        done = await self.runner.run(["add", "-A", "--", *specs])
        if done.returncode == 0:
            return
        text = decode(done.stderr)
        if "did not match any files" in text:
            missing = self.missing_paths(rels)
            raise ApiError(404, "path_not_found", "No such file, and git does not know it", paths=missing or list(rels))
        if "ignored by one of your .gitignore files" in text:
            check = await self.runner.run(["check-ignore", "-z", "--", *rels], read_only=True)
            ignored = [decode(p) for p in check.stdout.split(b"\0") if p]
            raise ApiError(409, "path_ignored", "These paths are ignored by .gitignore", paths=ignored or list(rels))
        raise classify(done, "add")

    # -- stage, unstage, discard -----------------------------------------------------------------

    def _client_specs(self, paths: list[str] | None, all_paths: bool) -> tuple[list[str], list[str]]:
        if paths and all_paths:  # an empty list next to all: true is no contradiction
            raise bad_field("paths", "Give either paths or all, not both")
        if all_paths:
            return [""], [literal("")]
        if not paths:
            raise bad_field("paths", "paths must name at least one path (or pass all: true)")
        rels = [self.jail(p, "paths") for p in paths]
        return rels, [literal(r) for r in rels]

    async def stage(self, paths: list[str] | None, all_paths: bool = False) -> dict[str, Any]:
        """``git add -A`` of the paths (or of the whole workspace); nested repositories are never added."""
        rels, specs = self._client_specs(paths, all_paths)
        async with self.writing():
            repo = await self.repository()
            if all_paths:
                st = await self.raw_status(literal(""))
                nested = [e.path.rstrip("/") for e in st.entries if e.kind == "untracked" and e.path.endswith("/")]
                specs += [":(exclude,top,literal)" + p for p in nested]
            else:
                await self.check_not_nested(repo, rels)
            await self._add(repo, specs, rels)
        self.publish("git_changed", {"operation": "stage"})
        return await self.status()

    async def unstage(self, paths: list[str] | None, all_paths: bool = False) -> dict[str, Any]:
        """Take the paths out of the index (back to HEAD's version); the files are not touched."""
        _, specs = self._client_specs(paths, all_paths)
        async with self.writing():
            await self.repository()
            await self.git("reset", "-q", "--", *specs, action="reset")
        self.publish("git_changed", {"operation": "unstage"})
        return await self.status()

    async def discard(
        self, paths: list[str] | None, all_paths: bool = False, untracked: bool = False, staged: bool = False
    ) -> dict[str, Any]:
        """Throw local changes away: tracked files back to the index (``staged``: to HEAD); untracked files
        are deleted only with ``untracked``. All paths are checked before anything is changed."""
        rels, specs = self._client_specs(paths, all_paths)
        async with self.writing():
            repo = await self.repository()
            st = await self.raw_status(*specs)
            found = [e for e in st.entries if repo.to_workspace(e.path) is not None]
            new = [e for e in found if e.kind == "untracked"]
            tracked = [e for e in found if e.kind != "untracked"]
            if new and not untracked:
                raise ApiError(
                    409,
                    "untracked_files",
                    "Some paths are untracked: discarding deletes them, so pass untracked: true to confirm",
                    paths=[(repo.to_workspace(e.path) or "").rstrip("/") for e in new],
                )
            if not found and not all_paths:
                missing = self.missing_paths(rels)
                if missing:
                    raise ApiError(404, "path_not_found", "No such file, and git does not know it", paths=missing)
            if staged or any(e.kind == "unmerged" for e in tracked):
                if await self.head_commit() is None and tracked:
                    raise ApiError(409, "no_commits", "There is no commit yet to restore the files from")
            restore_from_head = [e for e in tracked if staged or e.kind == "unmerged"]
            restore_from_index = [e for e in tracked if not (staged or e.kind == "unmerged")]
            if restore_from_head:
                head_specs = self._entry_specs(restore_from_head)
                await self.git(
                    "restore", "--source=HEAD", "--staged", "--worktree", "--", *head_specs, action="restore"
                )
            if restore_from_index:
                # Only what differs from the index: "restore --worktree" of a path changed only in the
                # index has nothing to do (and of a new file staged, nothing to restore from).
                index_specs = self._entry_specs([e for e in restore_from_index if e.worktree != "."])
                if index_specs:
                    await self.git("restore", "--worktree", "--", *index_specs, action="restore")
            if new:
                await self.git("clean", "-f", "-d", "-q", "--", *specs, action="clean")
        self.publish("git_changed", {"operation": "discard"})
        return await self.status()

    @staticmethod
    def _entry_specs(entries: Sequence[StatusEntry]) -> list[str]:
        specs = []
        for e in entries:
            specs.append(literal_top(e.path))
            if e.orig_path is not None:
                specs.append(literal_top(e.orig_path))
        return specs

    async def abort(self) -> dict[str, Any]:
        """Abort the merge, rebase, am, cherry-pick or revert a conflict stopped half-way."""
        async with self.writing():
            repo = await self.repository()
            operation = repo.in_progress()
            if operation is None:
                raise ApiError(409, "nothing_in_progress", "No merge, rebase, cherry-pick or revert is in progress")
            await self.git(*_ABORT_COMMANDS[operation], action=operation.replace("_", "-"))
        self.publish("git_changed", {"operation": "abort", "aborted": operation})
        result = await self.status()
        result["aborted"] = operation
        return result

    # -- diff ---------------------------------------------------------------------------------------

    async def diff(self, path: str | None, staged: bool, ref: str | None) -> dict[str, Any]:
        """Unified diff and per-file stats: worktree vs index, ``staged``: index vs HEAD, ``ref``: vs that commit."""
        if ref is not None:
            check_revision(ref)
        rel = self.jail(path) if path is not None else None
        await self.repository()
        # The same unified diff whatever the user's diff config says: a/ b/ prefixes, no external
        # diff or textconv programs (binary files are marked as such), renames detected.
        base = [*_DIFF_OPTIONS, "-M", "--relative", "--submodule=short"]
        base += [*(["--cached"] if staged else []), *([ref] if ref else [])]
        spec = ["--", literal(rel or "")]
        stats, patch = await asyncio.gather(
            self.runner.run([*base, "--raw", "--numstat", "-z", *spec], read_only=True),
            self.runner.run([*base, *spec], read_only=True, output_limit=DIFF_LIMIT),
        )
        for done in (stats, patch):
            if done.returncode != 0:
                if ref is not None and _UNKNOWN_REVISION.search(decode(done.stderr)):
                    raise ApiError(404, "ref_not_found", f"No commit named {ref!r}", ref=ref)
                raise classify(done, "diff")
        files = parse_raw_numstat(stats.stdout)
        text, truncated = decode(patch.stdout), patch.truncated
        if not files and rel and not staged and ref is None:
            untracked = await self._untracked_diff(rel)
            if untracked is not None:
                files, text, truncated = untracked
        return {"diff": text, "files": files, "truncated": truncated, "staged": staged, "ref": ref}

    async def _untracked_diff(self, rel: str) -> tuple[list[dict[str, Any]], str, bool] | None:
        """An untracked file shown as all new: ``git diff --no-index /dev/null FILE``."""
        if not self.is_file(rel):
            return None
        listed = await self.runner.run(
            ["ls-files", "-z", "--others", "--exclude-standard", "--", literal(rel)], read_only=True
        )
        if not listed.stdout.strip(b"\0"):
            return None
        base = [*_DIFF_OPTIONS, "--no-index"]
        stats, patch = await asyncio.gather(
            self.runner.run([*base, "--raw", "--numstat", "-z", "--", "/dev/null", rel], read_only=True),
            self.runner.run([*base, "--", "/dev/null", rel], read_only=True, output_limit=DIFF_LIMIT),
        )
        if stats.returncode > 1 or patch.returncode > 1:  # 1 means "they differ"
            raise classify(patch if patch.returncode > 1 else stats, "diff")
        files = parse_raw_numstat(stats.stdout)
        for entry in files:
            entry.update(path=rel, status="untracked")
        return files, decode(patch.stdout), patch.truncated
