"""The OpenAPI description of the version-control endpoints: every route, every status code, every shape."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.git.parse import (
    BRANCH_NAME_PATTERN,
    MESSAGE_PATTERN,
    PERSON_PATTERN,
    REMOTE_NAME_PATTERN,
    REVISION_PATTERN,
)
from wsruntime_ext.openapi import errors, json_response, path_param, query_param, ref

PREFIX = "/api/v1/workspaces/{workspace_id}/version-control"
TAG = "version-control"
CLIENT_PATH_PATTERN = r"^[^\x00-\x1f\x7f]*$"

WHERE = (
    "\n\nThe repository is the one git finds from the workspace directory: the workspace may be the "
    "repository's top or a sub-folder of it. Paths in requests and answers are workspace-relative; "
    "changes outside a sub-folder workspace are left out (see `staged_outside_workspace` in status). "
    "Nested repositories inside the workspace are reported as such (`nested_repo`), never descended into."
)

_STATUS_TEXT = {
    "404": "`workspace_not_found`; or what the operation names does not exist (`ref_not_found`, "
    "`branch_not_found`, `remote_not_found`, `remote_branch_not_found`, `path_not_found`)",
    "409": "`not_a_git_repository` (details list `nested_repositories`), `git_locked` (index.lock or a ref "
    "lock held by another process, or another write of this runtime still running), "
    "`git_unsafe_repository` (owned by another user), or a conflict named in the description",
    "422": "`git_identity_missing`: no author/committer identity in git's config, the environment or the request",
    "502": "`git_failed` (git reported an error the runtime has no code for; details carry its output), "
    "`git_auth_failed`, `git_remote_error`, `git_output_too_large`",
    "503": "`git_unavailable`: git is not installed",
    "504": "`git_timeout`: git did not finish in time and was stopped",
}


def responses(ok_status: str, ok_description: str, schema: str, *codes: int, **notes: str) -> dict[str, Any]:
    """The success answer plus the error answers of ``codes`` (all with the error shape), described."""
    result = {ok_status: json_response(ok_description, ref(schema))}
    for status, response in errors(404, 409, 502, 503, 504, *codes).items():
        text = notes.get(f"s{status}") or _STATUS_TEXT.get(status)
        result[status] = {**response, "description": text} if text else response
    return result


def operation(
    summary: str,
    description: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": description + WHERE,
        "tags": [TAG],
        "parameters": [path_param("workspace_id", "The workspace id (see /health)"), *(parameters or [])],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    return op


def nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional field that may also be sent as null (meaning: not given)."""
    types = schema.get("type", "string")
    return {
        **schema,
        "type": [types, "null"] if isinstance(types, str) else [*types, "null"],
        "description": description,
    }


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
BRANCH = {"type": "string", "pattern": BRANCH_NAME_PATTERN}
REVISION = {"type": "string", "pattern": REVISION_PATTERN}
REMOTE = {"type": "string", "pattern": REMOTE_NAME_PATTERN}
CLIENT_PATH = {"type": "string", "pattern": CLIENT_PATH_PATTERN}
NULLABLE_STRING = {"type": ["string", "null"]}
COMMIT = {"type": ["string", "null"], "description": "a full commit hash; null before the first commit"}
PATHS_ONE_OF = [
    {"required": ["paths"], "properties": {"paths": {"type": "array", "minItems": 1}}},
    {"required": ["all"], "properties": {"all": {"const": True}}},
]

schemas: dict[str, Any] = {
    "GitProgressEvent": {
        "type": "object",
        "required": ["type", "operation", "line", "seq"],
        "description": "On `WS /api/v1/ws` while a push, pull or fetch runs: git's progress lines",
        "properties": {
            "type": {"const": "git_progress"},
            "operation": {"enum": ["push", "pull", "fetch"]},
            "line": {"type": "string"},
            "phase": {"type": "string", "examples": ["Writing objects"]},
            "percent": {"type": "integer", "minimum": 0, "maximum": 100},
            "done": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "minimum": 0},
            "seq": {"type": "integer", "minimum": 0, "description": "the hub's sequence number"},
        },
    },
    "GitFileStatus": {
        "type": "object",
        "required": ["path", "index", "worktree", "status", "staged"],
        "properties": {
            "path": {"type": "string", "description": "workspace-relative, exactly as on disk"},
            "orig_path": {"type": "string", "description": "the path before a rename or copy"},
            "orig_path_outside_workspace": {
                "type": "boolean",
                "description": "renamed from outside a sub-folder workspace",
            },
            "index": {"type": "string", "description": "porcelain-v2 letter of the index: . M A D R C T U ?"},
            "worktree": {"type": "string", "description": "porcelain-v2 letter of the work tree"},
            "status": {
                "type": "string",
                "enum": [
                    "modified",
                    "added",
                    "deleted",
                    "renamed",
                    "copied",
                    "untracked",
                    "conflicted",
                    "type_changed",
                    "ignored",
                ],
            },
            "staged": {"type": "boolean", "description": "the index holds a change of this path"},
            "conflict": {
                "type": "string",
                "enum": [
                    "both_deleted",
                    "added_by_us",
                    "deleted_by_them",
                    "added_by_them",
                    "deleted_by_us",
                    "both_added",
                    "both_modified",
                ],
            },
            "directory": {"type": "boolean", "description": "a directory git does not descend into"},
            "nested_repo": {"type": "boolean", "description": "a nested repository or submodule (not descended into)"},
        },
    },
    "GitStatus": {
        "type": "object",
        "required": ["branch", "upstream", "ahead", "behind", "detached", "clean", "files"],
        "properties": {
            "branch": {"type": ["string", "null"], "description": "null when HEAD is detached"},
            "upstream": {"type": ["string", "null"], "examples": ["origin/main"]},
            "ahead": {"type": "integer", "minimum": 0},
            "behind": {"type": "integer", "minimum": 0},
            "detached": BOOLEAN,
            "clean": {"type": "boolean", "description": "no changed or untracked file inside the workspace"},
            "files": {"type": "array", "items": ref("GitFileStatus")},
            "head": COMMIT,
            "upstream_gone": {"type": "boolean", "description": "the upstream is configured but its branch is gone"},
            "stashes": {"type": "integer", "minimum": 0},
            "in_progress": {
                "type": ["string", "null"],
                "enum": ["merge", "rebase", "am", "cherry_pick", "revert", None],
                "description": "an operation a conflict stopped half-way (see POST abort)",
            },
            "workspace_prefix": {
                "type": "string",
                "description": "where the workspace sits in the repository; empty when it is the top",
            },
            "staged_outside_workspace": {
                "type": "integer",
                "minimum": 0,
                "description": "staged changes outside a sub-folder workspace: a commit without files includes them",
            },
            "aborted": {"type": "string", "description": "POST abort: what was aborted"},
        },
    },
    "GitLogCommit": {
        "type": "object",
        "required": [
            "hash",
            "short_hash",
            "author_name",
            "author_email",
            "date",
            "subject",
            "body",
            "parents",
        ],
        "properties": {
            "hash": STRING,
            "short_hash": STRING,
            "author_name": STRING,
            "author_email": STRING,
            "date": {"type": ["string", "null"], "description": "author date, ISO 8601 UTC"},
            "committer_name": STRING,
            "committer_email": STRING,
            "committer_date": {"type": ["string", "null"]},
            "subject": {"type": "string", "description": "the message's first paragraph, joined into one line"},
            "body": {"type": "string", "description": "the rest of the message, exactly"},
            "parents": {"type": "array", "items": STRING},
            "refs": {"type": "array", "items": STRING, "examples": [["HEAD -> main", "origin/main", "tag: v1"]]},
        },
    },
    "GitLog": {
        "type": "object",
        "required": ["commits", "has_more"],
        "properties": {"commits": {"type": "array", "items": ref("GitLogCommit")}, "has_more": BOOLEAN},
    },
    "GitAuthor": {
        "type": "object",
        "required": ["name", "email"],
        "properties": {
            "name": {"type": "string", "pattern": PERSON_PATTERN},
            "email": {"type": "string", "pattern": PERSON_PATTERN},
        },
    },
    "GitCommitRequest": {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {
                "type": "string",
                "pattern": MESSAGE_PATTERN,
                "description": "the whole message; subject and body round-trip exactly",
            },
            "files": {
                "type": ["array", "null"],
                "minItems": 1,
                "items": CLIENT_PATH,
                "description": "commit exactly these paths (staged first, untracked ones too); other staged "
                "changes stay staged",
            },
            "all": nullable(BOOLEAN, "stage every change of tracked files inside the workspace first"),
            "amend": nullable(BOOLEAN, "replace the last commit"),
            "author": {"oneOf": [ref("GitAuthor"), {"type": "null"}]},
        },
        "not": {
            "required": ["files", "all"],
            "properties": {"files": {"type": "array"}, "all": {"const": True}},
        },
    },
    "GitCommitResult": {
        "type": "object",
        "required": ["hash", "short_hash", "branch", "subject"],
        "properties": {
            "hash": STRING,
            "short_hash": STRING,
            "branch": {"type": ["string", "null"], "description": "null when HEAD is detached"},
            "subject": STRING,
            "amended": BOOLEAN,
        },
    },
    "GitPushRequest": {
        "type": "object",
        "properties": {
            "remote": nullable(REMOTE, "default: the upstream's remote, else origin (or the only remote)"),
            "branch": nullable(BRANCH, "the local branch to push; default: the current one"),
            "set_upstream": nullable(BOOLEAN, "default: true when the branch has no upstream yet"),
            "force": nullable(BOOLEAN, "--force-with-lease: overwrite only what this clone last saw"),
        },
    },
    "GitPushResult": {
        "type": "object",
        "required": ["remote", "branch", "output"],
        "properties": {
            "remote": STRING,
            "branch": {"type": "string", "description": "the remote branch pushed to"},
            "local_branch": STRING,
            "upstream": NULLABLE_STRING,
            "upstream_set": BOOLEAN,
            "result": {
                "type": "string",
                "enum": ["fast_forward", "forced", "created", "up_to_date", "deleted", "rejected", "unknown"],
            },
            "forced": BOOLEAN,
            "output": {"type": "string", "description": "what git printed (progress lines collapsed)"},
        },
    },
    "GitPullRequest": {
        "type": "object",
        "properties": {
            "remote": nullable(REMOTE, "default: the upstream's remote"),
            "branch": nullable(BRANCH, "the remote branch; default: the upstream's"),
            "rebase": nullable(BOOLEAN, "rebase instead of merge; default: git's pull.rebase, else merge"),
        },
    },
    "GitPullResult": {
        "type": "object",
        "required": ["updated", "from", "to", "output"],
        "properties": {
            "updated": BOOLEAN,
            "from": COMMIT,
            "to": COMMIT,
            "remote": STRING,
            "branch": STRING,
            "rebase": BOOLEAN,
            "output": STRING,
        },
    },
    "GitFetchRequest": {
        "type": "object",
        "properties": {
            "remote": nullable(REMOTE, "default: the upstream's remote, else origin"),
            "all": nullable(BOOLEAN, "fetch every remote"),
            "prune": nullable(BOOLEAN, "remove remote-tracking branches whose branch is gone"),
        },
        "not": {"required": ["remote", "all"], "properties": {"remote": STRING, "all": {"const": True}}},
    },
    "GitFetchResult": {
        "type": "object",
        "required": ["remote", "updated", "output"],
        "properties": {
            "remote": NULLABLE_STRING,
            "updated": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["ref", "from", "to"],
                    "properties": {"ref": STRING, "from": NULLABLE_STRING, "to": NULLABLE_STRING},
                },
            },
            "output": STRING,
        },
    },
    "GitBranch": {
        "type": "object",
        "required": ["name", "current", "upstream", "ahead", "behind", "commit"],
        "properties": {
            "name": STRING,
            "current": BOOLEAN,
            "upstream": NULLABLE_STRING,
            "ahead": {"type": "integer", "minimum": 0},
            "behind": {"type": "integer", "minimum": 0},
            "upstream_gone": BOOLEAN,
            "commit": STRING,
            "subject": STRING,
            "date": NULLABLE_STRING,
        },
    },
    "GitRemoteBranch": {
        "type": "object",
        "required": ["name", "remote", "branch", "commit"],
        "properties": {
            "name": {"type": "string", "examples": ["origin/main"]},
            "remote": STRING,
            "branch": STRING,
            "commit": STRING,
            "subject": STRING,
            "date": NULLABLE_STRING,
        },
    },
    "GitBranches": {
        "type": "object",
        "required": ["current", "branches", "remote_branches"],
        "properties": {
            "current": {"type": ["string", "null"], "description": "null when HEAD is detached"},
            "detached": BOOLEAN,
            "head": COMMIT,
            "branches": {"type": "array", "items": ref("GitBranch")},
            "remote_branches": {"type": "array", "items": ref("GitRemoteBranch")},
            "remotes": {"type": "array", "items": STRING},
        },
    },
    "GitBranchCreateRequest": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": BRANCH,
            "start_point": nullable(REVISION, "a branch, tag or commit; default HEAD"),
        },
    },
    "GitBranchCreated": {
        "type": "object",
        "required": ["name", "commit"],
        "properties": {"name": STRING, "commit": STRING, "upstream": NULLABLE_STRING},
    },
    "GitBranchDeleted": {
        "type": "object",
        "required": ["name", "commit"],
        "properties": {"name": STRING, "commit": {"type": "string", "description": "where it pointed (to restore it)"}},
    },
    "GitCheckoutRequest": {
        "type": "object",
        "required": ["branch"],
        "properties": {
            "branch": BRANCH,
            "create": nullable(BOOLEAN, "create the branch (409 branch_exists when it exists)"),
            "start_point": nullable(REVISION, "with create: where the new branch starts (default HEAD)"),
        },
        "anyOf": [
            {"required": ["create"], "properties": {"create": {"const": True}}},
            {"properties": {"start_point": {"type": "null"}}},
        ],
    },
    "GitCheckoutResult": {
        "type": "object",
        "required": ["branch", "commit"],
        "properties": {
            "branch": STRING,
            "commit": COMMIT,
            "created": BOOLEAN,
            "upstream": NULLABLE_STRING,
        },
    },
    "GitDiffFile": {
        "type": "object",
        "required": ["path", "status", "additions", "deletions", "binary"],
        "properties": {
            "path": STRING,
            "orig_path": STRING,
            "status": STRING,
            "additions": {"type": "integer", "minimum": 0},
            "deletions": {"type": "integer", "minimum": 0},
            "binary": BOOLEAN,
        },
    },
    "GitDiff": {
        "type": "object",
        "required": ["diff", "files", "truncated"],
        "properties": {
            "diff": {"type": "string", "description": "unified diff text"},
            "files": {"type": "array", "items": ref("GitDiffFile")},
            "truncated": {"type": "boolean", "description": "the diff text was cut (the file stats are complete)"},
            "staged": BOOLEAN,
            "ref": NULLABLE_STRING,
        },
    },
    "GitPathsRequest": {
        "type": "object",
        "properties": {
            "paths": {"type": ["array", "null"], "items": CLIENT_PATH, "description": "workspace-relative paths"},
            "all": nullable(BOOLEAN, "every path of the workspace instead"),
        },
        "oneOf": PATHS_ONE_OF,
    },
    "GitDiscardRequest": {
        "type": "object",
        "properties": {
            "paths": {"type": ["array", "null"], "items": CLIENT_PATH, "description": "workspace-relative paths"},
            "all": nullable(BOOLEAN, "every path of the workspace instead"),
            "untracked": nullable(BOOLEAN, "also delete untracked files among the paths (required if there are any)"),
            "staged": nullable(BOOLEAN, "also throw away staged changes (restore from HEAD)"),
        },
        "oneOf": PATHS_ONE_OF,
    },
}

REF_PARAM = query_param("ref", REVISION, "a branch, tag, commit or range")
PATH_PARAM = query_param("path", CLIENT_PATH, "a workspace-relative file or directory; empty for the workspace")

paths: dict[str, Any] = {
    f"{PREFIX}/status": {
        "get": operation(
            "Working tree status",
            "Branch, upstream, ahead/behind and every changed, staged, conflicted or untracked file, from "
            "`git status --porcelain=v2 -z` (names exactly as on disk). Never takes index.lock.",
            responses("200", "The status", "GitStatus"),
            [
                query_param(
                    "untracked",
                    {"type": "string", "enum": ["all", "normal", "no"], "default": "all"},
                    "untracked files: all (each file), normal (directories collapsed), no",
                )
            ],
        )
    },
    f"{PREFIX}/log": {
        "get": operation(
            "Commit history",
            "Commits newest first, of HEAD or `ref`, optionally only those touching `path`. "
            "An empty repository has no commits (200, empty list); an unknown ref is 404 `ref_not_found`.",
            responses("200", "A page of commits", "GitLog"),
            [
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "page size"),
                query_param("skip", {"type": "integer", "minimum": 0, "maximum": 1 << 31, "default": 0}, "offset"),
                REF_PARAM,
                PATH_PARAM,
            ],
        )
    },
    f"{PREFIX}/diff": {
        "get": operation(
            "Diff (extension)",
            "Unified diff and per-file stats (binary files marked): work tree vs index by default, index vs "
            "HEAD with `staged`, against `ref` when given. An untracked file named by `path` shows as new.",
            responses("200", "The diff", "GitDiff"),
            [PATH_PARAM, query_param("staged", BOOLEAN, "the staged changes instead"), REF_PARAM],
        )
    },
    f"{PREFIX}/commit": {
        "post": operation(
            "Commit",
            "Commits what is staged; with `files` exactly those paths; with `all` every tracked change inside "
            "the workspace. 400 `empty_message`; 409 `nothing_to_commit`, `no_commits` (amend with no commit), "
            "`merge_in_progress` (files during a merge), `merge_conflict` (details: `paths` still conflicted, "
            "`operation`), `path_ignored`, `path_in_nested_repository`, `hook_failed` "
            "(a pre-commit or commit-msg hook said no; details carry its output); 422 `git_identity_missing` "
            "before anything is staged. The repository's hooks run (up to 300 s).",
            responses("201", "The new commit", "GitCommitResult", 422),
            body="GitCommitRequest",
        )
    },
    f"{PREFIX}/stage": {
        "post": operation(
            "Stage (extension)",
            "`git add -A` of the paths (changes, new files and deletions), or of the whole workspace with `all`; "
            "nested repositories are never added. Answers the new status. 404 `path_not_found`; 409 "
            "`path_ignored`, `path_in_nested_repository`.",
            responses("200", "The status after staging", "GitStatus"),
            body="GitPathsRequest",
        )
    },
    f"{PREFIX}/unstage": {
        "post": operation(
            "Unstage (extension)",
            "Takes the paths out of the index (back to HEAD's version); the files are not touched.",
            responses("200", "The status after unstaging", "GitStatus"),
            body="GitPathsRequest",
        )
    },
    f"{PREFIX}/discard": {
        "post": operation(
            "Discard changes (extension)",
            "Restores tracked files from the index (with `staged`: from HEAD, dropping staged changes too). "
            "Untracked files among the paths are deleted only with `untracked: true`, else 409 "
            "`untracked_files` and nothing changes. 404 `path_not_found`; 409 `no_commits`.",
            responses("200", "The status after discarding", "GitStatus"),
            body="GitDiscardRequest",
        )
    },
    f"{PREFIX}/abort": {
        "post": operation(
            "Abort a merge or rebase (extension)",
            "Aborts the merge, rebase, am, cherry-pick or revert a conflict stopped (status `in_progress`). "
            "409 `nothing_in_progress`.",
            responses("200", "The status after aborting", "GitStatus"),
        )
    },
    f"{PREFIX}/push": {
        "post": operation(
            "Push",
            "Pushes a branch (default: the current one) to its upstream, or to origin under the same name, "
            "setting the upstream. `git_progress` events while it runs, `git_changed` after. 409 `push_rejected` "
            "(non-fast-forward, stale lease, a remote hook), `detached_head`, `no_remote`, `no_commits`; 502 "
            "`git_auth_failed` at once when credentials are needed or refused (nothing ever prompts).",
            responses("200", "What was pushed where", "GitPushResult"),
            body="GitPushRequest",
        )
    },
    f"{PREFIX}/pull": {
        "post": operation(
            "Pull",
            "Fetches and merges (or rebases onto) the upstream, or `remote`/`branch`. 409 `no_upstream`, "
            "`merge_conflict` (details: `paths`, `operation`; the repository stays mid-merge, see abort), "
            "`local_changes_conflict` (paths), `unrelated_histories`, `not_fast_forward`, `detached_head`.",
            responses("200", "Where HEAD moved", "GitPullResult", 422),
            body="GitPullRequest",
        )
    },
    f"{PREFIX}/fetch": {
        "post": operation(
            "Fetch (extension)",
            "Fetches a remote (default: the upstream's, else origin) or all, and lists the remote-tracking "
            "branches that moved.",
            responses("200", "What moved", "GitFetchResult"),
            body="GitFetchRequest",
        )
    },
    f"{PREFIX}/branches": {
        "get": operation(
            "Branches",
            "Local branches with upstream, ahead/behind and commit; remote-tracking branches.",
            responses("200", "The branches", "GitBranches"),
        ),
        "post": operation(
            "Create a branch (extension)",
            "Creates a branch at `start_point` (default HEAD) without switching to it. 409 `branch_exists`, "
            "`no_commits`; 404 `ref_not_found`.",
            responses("201", "The new branch", "GitBranchCreated"),
            body="GitBranchCreateRequest",
        ),
    },
    f"{PREFIX}/branches/{{name}}": {
        "delete": operation(
            "Delete a branch (extension)",
            "Deletes a local branch. 409 `branch_not_merged` (pass force), `branch_is_current`; 404 "
            "`branch_not_found`.",
            responses("200", "The deleted branch", "GitBranchDeleted"),
            [
                path_param("name", "the branch name (may contain /, percent-encoded or not)"),
                query_param("force", BOOLEAN, "delete even when not merged"),
            ],
        )
    },
    f"{PREFIX}/checkout": {
        "post": operation(
            "Check out a branch",
            "Switches to a branch; a branch only a remote has becomes a local branch tracking it; with `create` "
            "a new branch (at `start_point`). 409 `branch_exists`, `checkout_conflict` (details: `paths` of "
            "the local changes it would overwrite), `merge_conflict` (details: `paths` still conflicted, `operation`: "
            "resolve or abort first), `ambiguous_branch`; 404 `branch_not_found`, `ref_not_found`.",
            responses("200", "The branch now checked out", "GitCheckoutResult"),
            body="GitCheckoutRequest",
        )
    },
}

openapi = {
    "tags": [{"name": TAG, "description": "git: status, history, commits, branches, push and pull"}],
    "schemas": schemas,
    "paths": paths,
}
