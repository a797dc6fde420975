"""Operating-system errors as the Files API's answers (API.md "Conventions": fitting statuses)."""

from __future__ import annotations

import errno

from wsruntime_ext.base import ApiError


def os_error(exc: OSError, rel: str, writing: bool = False) -> ApiError:
    """An operating-system error as the API's answer; anything unexpected is re-raised (a 500, logged)."""
    code = exc.errno
    if code == errno.ENOENT or (code == errno.ENOTDIR and not writing):
        return ApiError(404, "not_found", f"No such file or directory: {rel or '/'}", path=rel)
    if code == errno.ENOTDIR:
        return ApiError(409, "not_a_directory", "A parent of this path is a file, not a directory", path=rel)
    if code == errno.EISDIR:
        return ApiError(409, "is_a_directory", f"{rel or '/'} is a directory", path=rel)
    if code == errno.EEXIST:
        return ApiError(409, "already_exists", f"{rel} already exists", path=rel)
    if code == errno.ENOTEMPTY:
        return ApiError(409, "directory_not_empty", f"{rel} is a directory that is not empty", path=rel)
    if code in (errno.EACCES, errno.EPERM):
        return ApiError(403, "permission_denied", f"Permission denied: {rel or '/'}", path=rel)
    if code == errno.EROFS:
        return ApiError(403, "read_only_file_system", "The file system is read-only", path=rel)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ApiError(507, "insufficient_storage", "Not enough space left on the device", path=rel)
    if code == errno.ENAMETOOLONG:
        return ApiError(400, "name_too_long", "A name in the path is too long", path=rel)
    if code == errno.ELOOP:
        return ApiError(400, "symlink_loop", "Too many levels of symbolic links", path=rel)
    if code == errno.EBUSY:
        return ApiError(409, "busy", f"{rel or '/'} is in use (a mount point?)", path=rel)
    if code == errno.EINVAL:
        return ApiError(400, "invalid_operation", str(exc.strerror or exc), path=rel)
    raise exc
