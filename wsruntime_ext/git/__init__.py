"""Version control on real git (API.md "Version control (git)"), under
``/api/v1/workspaces/{workspace_id}/version-control/``.

``status``, ``log``, ``commit``, ``push``, ``pull``, ``branches`` and
``checkout`` as API.md describes them, plus the extensions ``diff``,
``stage``, ``unstage``, ``discard``, ``fetch``, ``abort``, ``POST branches``
and ``DELETE branches/{name}``.

Which repository, and which paths:

- The repository is the one git itself finds from the workspace directory.
  The workspace may be the repository's top or **a sub-folder of it** (a
  package of a monorepo): branch, upstream, log, commits, push, pull and
  checkout are the repository's; everything that takes or returns paths is
  confined to the workspace — paths are workspace-relative, ``status`` and
  ``diff`` show only files inside it (``staged_outside_workspace`` counts
  staged changes elsewhere, which a commit of the index would include),
  ``commit`` with ``all`` and ``stage``/``discard`` with ``all`` touch only
  the workspace. A parent repository owned by another user is refused by git
  (409 ``git_unsafe_repository``); the workspace directory itself is trusted
  (``safe.directory``) because the operator chose it.
- **Nested repositories** inside the workspace (a clone inside a clone, or a
  submodule) are reported as such — a ``status`` entry with ``nested_repo:
  true`` — and never descended into: their files are not listed, ``stage``
  with ``all`` does not add them as gitlinks, and a path inside one is 409
  ``path_in_nested_repository``. A workspace that is not in a repository at
  all answers 409 ``not_a_git_repository``, listing the nested repositories
  it holds (two levels deep) in the details.

How git runs: see :mod:`wsruntime_ext.git.runner` (argument lists through
the subprocess registry, a timeout on every call, nothing ever prompts).
Push, pull and fetch publish ``git_progress`` events on the hub while they
run, and every change publishes ``git_changed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsruntime_ext.git.handlers import handlers
from wsruntime_ext.git.runner import GitRunner
from wsruntime_ext.git.schema import openapi
from wsruntime_ext.git.service import GitService

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

__all__ = ["GitRunner", "GitService", "handlers", "openapi", "shutdown", "startup"]


async def startup(ctx: Context) -> None:
    """Create the service; git children get the runtime's environment (tests may swap it per Context)."""

    def publish(topic: str, fields: dict[str, Any]) -> None:
        ctx.hub.publish(topic, fields)

    runner = GitRunner(ctx.procs, ctx.workspace)
    ctx.git = GitService(runner, ctx.workspace, ctx.run_blocking, publish)


async def shutdown(ctx: Context) -> None:
    """Nothing of its own to stop: running git children belong to ``ctx.procs``, stopped after the modules."""
