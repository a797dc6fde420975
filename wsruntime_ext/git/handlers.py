"""The HTTP side of version control: thin handlers that validate input and call the GitService."""

from __future__ import annotations

import re
from typing import Any

from wsruntime_ext.base import ApiError, ApiHandler
from wsruntime_ext.git.parse import PERSON_PATTERN
from wsruntime_ext.git.service import UNTRACKED_MODES, GitService
from wsruntime_ext.openapi import route

PREFIX = "/api/v1/workspaces/{workspace_id}/version-control"
_PERSON = re.compile(PERSON_PATTERN)


class GitHandler(ApiHandler):
    """Base of the version-control handlers: the workspace check and the service."""

    @property
    def git(self) -> GitService:
        return self.ctx.git

    def body(self, workspace_id: str) -> dict[str, Any]:
        """The JSON body, after the workspace id was checked (an unknown workspace is 404 whatever the body)."""
        self.check_workspace(workspace_id)
        return self.json_body()


class StatusHandler(GitHandler):
    async def get(self, workspace_id: str) -> None:
        self.check_workspace(workspace_id)
        untracked = self.query("untracked") or "all"
        if untracked not in UNTRACKED_MODES:
            raise ApiError(
                400, "invalid_parameter", "Query parameter 'untracked' must be all, normal or no", parameter="untracked"
            )
        self.send_json(await self.git.status(untracked))


class LogHandler(GitHandler):
    async def get(self, workspace_id: str) -> None:
        self.check_workspace(workspace_id)
        limit = self.query_int("limit", 50, 1, 1000)
        skip = self.query_int("skip", 0, 0)
        self.send_json(await self.git.log(limit, skip, self.query("ref"), self.query("path")))


class CommitHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        author = body.get("author")
        if author is not None:
            if not isinstance(author, dict):
                raise ApiError(
                    400, "invalid_field", "Field 'author' must be an object with name and email", field="author"
                )
            for key in ("name", "email"):
                value = self.field_str(author, key, required=True)
                if not _PERSON.fullmatch(value or ""):
                    raise ApiError(
                        400,
                        "invalid_field",
                        f"author.{key} must have a visible character and no '<', '>' or control characters",
                        field=f"author.{key}",
                    )
        result = await self.git.commit(
            self.field_str(body, "message", required=True) or "",
            files=self.field_str_list(body, "files"),
            all_tracked=self.field_bool(body, "all"),
            amend=self.field_bool(body, "amend"),
            author={"name": author["name"], "email": author["email"]} if author is not None else None,
        )
        self.send_json(result, 201)


class PushHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        set_upstream = body.get("set_upstream")
        self.send_json(
            await self.git.push(
                remote=self.field_str(body, "remote"),
                branch=self.field_str(body, "branch"),
                set_upstream=None if set_upstream is None else self.field_bool(body, "set_upstream"),
                force=self.field_bool(body, "force"),
            )
        )


class PullHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        rebase = body.get("rebase")
        self.send_json(
            await self.git.pull(
                remote=self.field_str(body, "remote"),
                branch=self.field_str(body, "branch"),
                rebase=None if rebase is None else self.field_bool(body, "rebase"),
            )
        )


class FetchHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        self.send_json(
            await self.git.fetch(
                remote=self.field_str(body, "remote"),
                all_remotes=self.field_bool(body, "all"),
                prune=self.field_bool(body, "prune"),
            )
        )


class BranchesHandler(GitHandler):
    async def get(self, workspace_id: str) -> None:
        self.check_workspace(workspace_id)
        self.send_json(await self.git.branches())

    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        result = await self.git.create_branch(
            self.field_str(body, "name", required=True) or "", self.field_str(body, "start_point")
        )
        self.send_json(result, 201)


class BranchHandler(GitHandler):
    async def delete(self, workspace_id: str, name: str) -> None:
        self.check_workspace(workspace_id)
        self.send_json(await self.git.delete_branch(name, force=self.query_bool("force")))


class CheckoutHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        self.send_json(
            await self.git.checkout(
                self.field_str(body, "branch", required=True) or "",
                create=self.field_bool(body, "create"),
                start_point=self.field_str(body, "start_point"),
            )
        )


class DiffHandler(GitHandler):
    async def get(self, workspace_id: str) -> None:
        self.check_workspace(workspace_id)
        self.send_json(await self.git.diff(self.query("path"), staged=self.query_bool("staged"), ref=self.query("ref")))


class StageHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        self.send_json(await self.git.stage(self.field_str_list(body, "paths"), self.field_bool(body, "all")))


class UnstageHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        self.send_json(await self.git.unstage(self.field_str_list(body, "paths"), self.field_bool(body, "all")))


class DiscardHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        body = self.body(workspace_id)
        self.send_json(
            await self.git.discard(
                self.field_str_list(body, "paths"),
                all_paths=self.field_bool(body, "all"),
                untracked=self.field_bool(body, "untracked"),
                staged=self.field_bool(body, "staged"),
            )
        )


class AbortHandler(GitHandler):
    async def post(self, workspace_id: str) -> None:
        self.check_workspace(workspace_id)
        self.send_json(await self.git.abort())


handlers = [
    route(f"{PREFIX}/status", StatusHandler),
    route(f"{PREFIX}/log", LogHandler),
    route(f"{PREFIX}/diff", DiffHandler),
    route(f"{PREFIX}/commit", CommitHandler),
    route(f"{PREFIX}/stage", StageHandler),
    route(f"{PREFIX}/unstage", UnstageHandler),
    route(f"{PREFIX}/discard", DiscardHandler),
    route(f"{PREFIX}/abort", AbortHandler),
    route(f"{PREFIX}/push", PushHandler),
    route(f"{PREFIX}/pull", PullHandler),
    route(f"{PREFIX}/fetch", FetchHandler),
    route(f"{PREFIX}/branches", BranchesHandler),
    route(f"{PREFIX}/branches/{{name}}", BranchHandler, name=".+"),
    route(f"{PREFIX}/checkout", CheckoutHandler),
]
