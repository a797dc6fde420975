"""GitService: what the version-control endpoints do, on the repository that holds the workspace.

It knows nothing about HTTP: it takes plain values, returns JSON-ready dicts,
and raises :class:`ApiError` (the project's one error type, as ``paths``
does) with API.md's codes. Writes to the repository (commit, stage, checkout,
pull, …) run one at a time; reads (status, log, diff, branches) run freely
and never take git's optional locks. The operations live in three groups
over one shared core: :mod:`.worktree`, :mod:`.branches` and :mod:`.remote`.
"""

from __future__ import annotations

from wsruntime_ext.git.branches import BranchOps
from wsruntime_ext.git.core import UNTRACKED_MODES, GitCore, Repository
from wsruntime_ext.git.remote import RemoteOps
from wsruntime_ext.git.worktree import WorkTreeOps

__all__ = ["UNTRACKED_MODES", "GitCore", "GitService", "Repository"]


class GitService(WorkTreeOps, BranchOps, RemoteOps):
    """The version-control operations of API.md, on the repository git finds from the workspace."""
