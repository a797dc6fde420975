"""Push, pull and fetch, with progress events while they run."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.base import ApiError
from wsruntime_ext.git.core import OVERWRITTEN, GitCore, Repository, bad_field, check_branch_name, check_remote_name
from wsruntime_ext.git.parse import decode, parse_push_porcelain
from wsruntime_ext.git.runner import ProgressThrottle, classify, clean_output
from wsruntime_ext.procs import Completed


class RemoteOps(GitCore):
    """Operations that talk to remotes; they never prompt and always time out."""

    # -- remotes: push, pull, fetch -----------------------------------------------------------------

    def progress(self, operation: str) -> ProgressThrottle:
        return ProgressThrottle(operation, self.publish)

    async def push(
        self,
        remote: str | None = None,
        branch: str | None = None,
        set_upstream: bool | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Push a branch (default: the current one) to its upstream, or to ``origin`` under the same name."""
        if remote is not None:
            check_remote_name(remote)
        if branch is not None:
            check_branch_name(branch)
        await self.repository()
        local = branch or await self.current_branch()
        if local is None:
            raise ApiError(409, "detached_head", "HEAD is detached: name the branch to push")
        if await self.branch_commit(local) is None:
            if branch is not None:
                raise ApiError(404, "branch_not_found", f"No branch named {branch!r}", branch=branch)
            raise ApiError(409, "no_commits", f"{local!r} has no commits yet: there is nothing to push")
        remotes = await (self.check_remote(remote) if remote is not None else self.remotes())
        upstream = await self.upstream(local)
        if upstream is not None and upstream.remote != "." and remote in (None, upstream.remote):
            target_remote, target_branch = upstream.remote, upstream.branch
            set_up = bool(set_upstream)
        else:
            target_remote, target_branch = remote or self.default_remote(remotes), local
            set_up = (upstream is None) if set_upstream is None else set_upstream
        destination = f"refs/heads/{target_branch}"
        args = ["push", "--porcelain", "--progress"]
        args += [*(["--force-with-lease"] if force else []), *(["--set-upstream"] if set_up else [])]
        args += [target_remote, f"refs/heads/{local}:{destination}"]
        self.publish(
            "git_progress", {"operation": "push", "line": f"pushing {local} to {target_remote}/{target_branch}"}
        )
        done = await self.runner.stream(args, self.progress("push"), env=await self.network_env())
        output = clean_output(done.stderr + done.stdout)
        pushed = next((r for r in parse_push_porcelain(done.stdout) if r.destination == destination), None)
        if pushed is not None and pushed.flag == "!":
            raise ApiError(
                409,
                "push_rejected",
                f"The remote rejected the push: {pushed.summary}"
                + (" — pull first" if "fetch first" in pushed.summary or "non-fast-forward" in pushed.summary else ""),
                reason=pushed.summary,
                remote=target_remote,
                branch=target_branch,
                output=output,
            )
        if done.returncode != 0:
            raise classify(done, "push")
        self.publish("git_changed", {"operation": "push"})
        upstream_after = await self.upstream(local)
        return {
            "remote": target_remote,
            "branch": target_branch,
            "local_branch": local,
            "upstream": f"{upstream_after.remote}/{upstream_after.branch}" if upstream_after else None,
            "upstream_set": set_up,
            "result": pushed.result if pushed else "unknown",
            "forced": force,
            "output": output,
        }

    async def pull(
        self, remote: str | None = None, branch: str | None = None, rebase: bool | None = None
    ) -> dict[str, Any]:
        """Fetch and merge (or rebase onto) the upstream, or ``remote``/``branch``; conflicts → 409 with the paths."""
        if remote is not None:
            check_remote_name(remote)
        if branch is not None:
            check_branch_name(branch)
        async with self.writing():
            repo = await self.repository()
            current = await self.current_branch()
            if current is None:
                raise ApiError(409, "detached_head", "HEAD is detached: check out a branch to pull into")
            remotes = await (self.check_remote(remote) if remote is not None else self.remotes())
            upstream = await self.upstream(current)
            if remote is None and branch is None:
                if upstream is None:
                    raise ApiError(
                        409,
                        "no_upstream",
                        f"{current!r} has no upstream: name the remote and branch, or push first",
                        branch=current,
                    )
                target_remote, target_ref = upstream.remote, upstream.ref
            elif remote is None:
                target_remote = upstream.remote if upstream else self.default_remote(remotes)
                target_ref = f"refs/heads/{branch}"
            elif branch is None:
                same = upstream is not None and upstream.remote == remote
                target_remote, target_ref = remote, upstream.ref if upstream and same else f"refs/heads/{current}"
            else:
                target_remote, target_ref = remote, f"refs/heads/{branch}"
            if rebase is None:
                # git's own pull.rebase and pull.ff decide; with neither set, merge (git would refuse
                # divergent branches otherwise). An explicit --no-rebase would override pull.ff=only.
                configured = await self.runner.run(["config", "--get-regexp", r"^pull\.(rebase|ff)$"], read_only=True)
                settings = dict(line.partition(" ")[::2] for line in decode(configured.stdout).splitlines())
                value = settings.get("pull.rebase", "false").strip().lower()
                rebasing = value not in ("false", "no", "off", "0", "")
                mode = [] if settings else ["--no-rebase"]
            else:
                rebasing = rebase
                mode = ["--rebase"] if rebase else ["--no-rebase"]
            before = await self.head_commit()
            done = await self.runner.stream(
                ["pull", "--progress", "--no-edit", *mode, target_remote, target_ref],
                self.progress("pull"),
                env=await self.network_env(),
            )
            output = clean_output(done.stderr + done.stdout)
            if done.returncode != 0:
                raise await self._pull_failure(repo, done, output, target_remote, target_ref)
            after = await self.head_commit()
        self.publish("git_changed", {"operation": "pull"})
        short = target_ref[len("refs/heads/") :] if target_ref.startswith("refs/heads/") else target_ref
        return {
            "updated": before != after,
            "from": before,
            "to": after,
            "remote": target_remote,
            "branch": short,
            "rebase": rebasing,
            "output": output,
        }

    async def _pull_failure(self, repo: Repository, done: Completed, output: str, remote: str, ref: str) -> ApiError:
        st = await self.raw_status()
        conflict = await self.unresolved_conflicts(
            repo, "The {operation} stopped on conflicts: resolve them and commit, or abort", st, output=output
        )
        if conflict is not None:
            self.publish("git_changed", {"operation": "pull", "conflict": True})
            return conflict
        text = decode(done.stderr + done.stdout)
        if OVERWRITTEN.search(text):
            return ApiError(
                409,
                "local_changes_conflict",
                "Pulling would overwrite local changes: commit, stash or discard them first",
                output=output,
                **await self.overwritten_paths(repo, "FETCH_HEAD", text),
            )
        if "cannot pull with rebase" in text or "cannot rebase" in text:
            changed = [e.path for e in st.entries if e.kind != "untracked"]
            return ApiError(
                409,
                "local_changes_conflict",
                "Rebasing needs a clean work tree: commit, stash or discard the changes first",
                output=output,
                **self.split_paths(repo, changed),
            )
        if "couldn't find remote ref" in text.lower():
            return ApiError(404, "remote_branch_not_found", f"{remote} has no {ref}", remote=remote, branch=ref)
        if "refusing to merge unrelated histories" in text:
            return ApiError(409, "unrelated_histories", "The branches share no history", output=output)
        if "Not possible to fast-forward" in text:
            return ApiError(
                409,
                "not_fast_forward",
                "The branches have diverged and pull.ff=only allows only a fast-forward: pass rebase",
                output=output,
            )
        return classify(done, "pull")

    async def fetch(self, remote: str | None = None, all_remotes: bool = False, prune: bool = False) -> dict[str, Any]:
        """Fetch a remote (default: the upstream's, else origin) or all of them; reports the refs that moved."""
        if remote is not None:
            check_remote_name(remote)
            if all_remotes:
                raise bad_field("remote", "Give either remote or all, not both")
        async with self.writing():
            await self.repository()
            remotes = await (self.check_remote(remote) if remote is not None else self.remotes())
            if remote is None and not all_remotes:
                current = await self.current_branch()
                upstream = await self.upstream(current) if current else None
                remote = upstream.remote if upstream and upstream.remote != "." else self.default_remote(remotes)
            before = await self._remote_refs()
            args = ["fetch", "--progress", *(["--prune"] if prune else [])]
            args += ["--all"] if all_remotes else [str(remote)]
            done = await self.runner.stream(args, self.progress("fetch"), env=await self.network_env())
            if done.returncode != 0:
                raise classify(done, "fetch")
            after = await self._remote_refs()
        updated = [
            {"ref": name, "from": before.get(name), "to": after.get(name)}
            for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)
        ]
        if updated:
            self.publish("git_changed", {"operation": "fetch"})
        return {
            "remote": None if all_remotes else remote,
            "updated": updated,
            "output": clean_output(done.stderr + done.stdout),
        }

    async def _remote_refs(self) -> dict[str, str]:
        """Remote-tracking branches → commit (symbolic ones like origin/HEAD left out)."""
        done = await self.git(
            "for-each-ref", "--format=%(objectname)%00%(symref)%00%(refname:short)", "refs/remotes", read_only=True
        )
        refs = {}
        for line in done.stdout.split(b"\n"):
            fields = line.split(b"\0")
            if len(fields) == 3 and not fields[1]:
                refs[decode(fields[2])] = decode(fields[0])
        return refs
