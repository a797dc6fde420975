"""Branches: list, check out, create and delete."""

from __future__ import annotations

import asyncio
from typing import Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.git.core import OVERWRITTEN, GitCore, bad_field, check_branch_name, check_revision
from wsruntime_ext.git.parse import REF_FORMAT, decode, is_branch_name, parse_refs
from wsruntime_ext.git.runner import classify


class BranchOps(GitCore):
    """Operations on local and remote-tracking branches."""

    # -- branches ---------------------------------------------------------------------------------

    async def branches(self) -> dict[str, Any]:
        """Local branches with upstream, ahead/behind and commit; remote-tracking branches."""
        await self.repository()
        refs_done, remotes = await asyncio.gather(
            self.git("for-each-ref", f"--format={REF_FORMAT}", "refs/heads", "refs/remotes", read_only=True),
            self.remotes(),
        )
        local: list[dict[str, Any]] = []
        remote_branches: list[dict[str, Any]] = []
        current = None
        for ref in parse_refs(refs_done.stdout):
            if ref.refname.startswith("refs/heads/"):
                name = ref.refname[len("refs/heads/") :]
                ahead, behind, gone = ref.ahead_behind
                if ref.head:
                    current = name
                local.append(
                    {
                        "name": name,
                        "current": ref.head,
                        "upstream": ref.upstream or None,
                        "ahead": ahead,
                        "behind": behind,
                        "upstream_gone": gone,
                        "commit": ref.commit,
                        "subject": ref.subject,
                        "date": ref.date,
                    }
                )
            elif ref.refname.startswith("refs/remotes/") and not ref.symref:
                short = ref.refname[len("refs/remotes/") :]
                remote = max((r for r in remotes if short.startswith(r + "/")), key=len, default=short.split("/")[0])
                remote_branches.append(
                    {
                        "name": short,
                        "remote": remote,
                        "branch": short[len(remote) + 1 :],
                        "commit": ref.commit,
                        "subject": ref.subject,
                        "date": ref.date,
                    }
                )
        detached = False
        head = None
        if current is None:
            current = await self.current_branch()  # a branch before its first commit has no ref yet
            detached = current is None
            head = await self.head_commit() if detached else None
        else:
            head = next(b["commit"] for b in local if b["current"])
        return {
            "current": current,
            "detached": detached,
            "head": head,
            "branches": local,
            "remote_branches": remote_branches,
            "remotes": remotes,
        }

    async def checkout(self, branch: str, create: bool = False, start_point: str | None = None) -> dict[str, Any]:
        """Switch to a branch (a remote's branch of that name becomes a tracking branch), or create it first."""
        check_branch_name(branch)
        if start_point is not None:
            check_revision(start_point, "start_point")
            if not create:
                raise bad_field("start_point", "start_point only applies with create: true")
        async with self.writing():
            repo = await self.repository()
            exists = await self.branch_commit(branch) is not None
            created = create
            if create:
                if exists:
                    raise ApiError(409, "branch_exists", f"A branch named {branch!r} already exists", branch=branch)
                if start_point is not None:
                    await self.resolve_commit(start_point, "start_point")
                args = ["checkout", "-b", branch, *([start_point] if start_point else []), "--"]
                target = start_point or "HEAD"
            elif exists:
                args, target = ["checkout", branch, "--"], f"refs/heads/{branch}"
            else:
                remote_ref = await self._remote_branch_for(branch)
                args, target, created = ["checkout", "-b", branch, "--track", remote_ref, "--"], remote_ref, True
            done = await self.runner.run(args)
            if done.returncode != 0:
                text = decode(done.stderr)
                if OVERWRITTEN.search(text):
                    raise ApiError(
                        409,
                        "checkout_conflict",
                        "Switching would overwrite local changes: commit, stash or discard them first",
                        branch=branch,
                        **await self.overwritten_paths(repo, target, text),
                    )
                conflict = await self.unresolved_conflicts(
                    repo, "The {operation} has unresolved conflicts: resolve and commit, or abort, before switching"
                )
                if conflict is not None:
                    raise conflict
                raise classify(done, "checkout")
            commit = await self.head_commit()
            upstream = await self.upstream(branch)
        self.publish("git_changed", {"operation": "checkout", "branch": branch})
        return {
            "branch": branch,
            "commit": commit,
            "created": created,
            "upstream": f"{upstream.remote}/{upstream.branch}" if upstream else None,
        }

    async def _remote_branch_for(self, branch: str) -> str:
        """The remote-tracking branch ``<remote>/<branch>`` to check out as a new local branch, or 404/409."""
        remotes = await self.remotes()
        found = []
        for remote in remotes:
            done = await self.runner.run(
                ["rev-parse", "-q", "--verify", f"refs/remotes/{remote}/{branch}"], read_only=True
            )
            if done.returncode == 0:
                found.append(remote)
        if not found:
            raise ApiError(404, "branch_not_found", f"No branch named {branch!r}", branch=branch)
        if len(found) > 1 and "origin" not in found:
            raise ApiError(
                409,
                "ambiguous_branch",
                f"Several remotes have a branch {branch!r}: create it with a start_point",
                branch=branch,
                remotes=found,
            )
        remote = "origin" if "origin" in found else found[0]
        return f"{remote}/{branch}"

    async def create_branch(self, name: str, start_point: str | None = None) -> dict[str, Any]:
        """A new branch at ``start_point`` (default HEAD) without switching to it."""
        check_branch_name(name, "name")
        if start_point is not None:
            check_revision(start_point, "start_point")
        async with self.writing():
            await self.repository()
            if await self.branch_commit(name) is not None:
                raise ApiError(409, "branch_exists", f"A branch named {name!r} already exists", branch=name)
            if start_point is not None:
                await self.resolve_commit(start_point, "start_point")
            elif await self.head_commit() is None:
                raise ApiError(409, "no_commits", "There is no commit yet to start a branch from")
            await self.git("branch", "--", name, *([start_point] if start_point else []), action="branch")
            commit = await self.branch_commit(name)
            upstream = await self.upstream(name)
        self.publish("git_changed", {"operation": "branch_create", "branch": name})
        return {
            "name": name,
            "commit": commit,
            "upstream": f"{upstream.remote}/{upstream.branch}" if upstream else None,
        }

    async def delete_branch(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete a local branch; one not merged needs ``force``; the current one cannot be deleted."""
        if not is_branch_name(name):
            raise ApiError(404, "branch_not_found", f"No branch named {name!r}", branch=name)
        async with self.writing():
            await self.repository()
            commit = await self.branch_commit(name)
            if commit is None:
                raise ApiError(404, "branch_not_found", f"No branch named {name!r}", branch=name)
            done = await self.runner.run(["branch", "-D" if force else "-d", "--", name])
            if done.returncode != 0:
                text = decode(done.stderr)
                if "not fully merged" in text:
                    raise ApiError(
                        409,
                        "branch_not_merged",
                        f"{name!r} has commits that are not merged: pass force=true to delete it anyway",
                        branch=name,
                    )
                if "checked out at" in text or "Cannot delete branch" in text:
                    raise ApiError(409, "branch_is_current", f"{name!r} is checked out: switch away first", branch=name)
                raise classify(done, "branch")
        self.publish("git_changed", {"operation": "branch_delete", "branch": name})
        return {"name": name, "commit": commit}
