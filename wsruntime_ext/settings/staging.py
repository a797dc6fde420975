"""Staged settings writes, all or nothing: every file a write changes is computed first, then landed one by
one, each only if it is still the version read; on a failure the ones already landed are put back."""

from __future__ import annotations

import dataclasses
import os

from wsruntime_ext.paths import atomic_write, file_etag
from wsruntime_ext.settings.service import Conditions, Loaded, Location, land
from wsruntime_ext.temps import TempRegistry


@dataclasses.dataclass
class Change:
    """One staged file: what was read and what replaces it."""

    where: Location
    loaded: Loaded
    data: bytes
    landed: os.stat_result | None = None


def commit_all(changes: list[Change], conditions: Conditions, temps: TempRegistry | None) -> None:
    """Land every staged change, each only if its file is still the version read; on a failure, put back
    the ones already landed (all or nothing) and raise. Blocking."""
    done: list[Change] = []
    try:
        for change in changes:
            change.landed = land(change.where, change.data, change.loaded, conditions, temps)
            done.append(change)
    except BaseException:
        restore_all(done, temps)
        raise


def restore_all(changes: list[Change], temps: TempRegistry | None) -> None:
    """Put back what ``changes`` replaced, the last first (blocking)."""
    for change in reversed(changes):
        _restore(change, temps)


def _restore(change: Change, temps: TempRegistry | None) -> None:
    """Put back what a landed change replaced, unless someone else has written the file since."""
    try:
        st = os.stat(change.where.file)
    except OSError:
        return
    if change.landed is None or file_etag(st) != file_etag(change.landed):
        return
    if change.loaded.exists:
        atomic_write(change.where.file, change.loaded.raw, mode=change.loaded.mode, temps=temps)
    else:
        os.unlink(change.where.file)
