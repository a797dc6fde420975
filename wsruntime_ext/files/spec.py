"""The OpenAPI description of the Files routes (joined into ``/openapi.json`` by app.py)."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.files.service import JSON_READ_LIMIT, JSON_WRITE_LIMIT
from wsruntime_ext.openapi import errors, json_content, json_response, path_param, query_param, ref

TAG = "files"

_PATH_DESCRIPTION = (
    'Workspace-relative POSIX path (`src/app.py`; `""` is the root). Anything that resolves outside the '
    "workspace — `..`, an absolute path, a symlink leading out — is refused with 403 `path_outside_workspace`; "
    "control characters with 400 `invalid_path`."
)

_ETAG_HEADER = {"description": "The file version's strong entity tag", "schema": {"type": "string"}}
CONDITIONAL_TEXT = (
    " Conditional headers (not listed as parameters, so that fuzzers do not trip them): `If-Match: <etag>` "
    "(or `*`: it exists) answers 412 `precondition_failed` unless the current version has that ETag; "
    "`If-None-Match: *` answers 412 if it exists (create only)."
)

# Control characters are refused (400 invalid_path): the schema says so, so that clients and fuzzers know.
NO_CONTROL = "^[^\\x00-\\x1f\\x7f]*$"
PATH_STRING = {"type": "string", "pattern": NO_CONTROL}
_FILE_PATH = {**path_param("path", _PATH_DESCRIPTION), "schema": PATH_STRING}
_HIDDEN = query_param("hidden", {"type": "boolean", "default": True}, "false leaves out names starting with a dot")
_LIMIT = query_param(
    "limit",
    {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0},
    "At most this many entries (directories first, then by name); `truncated` says whether more exist. 0: no limit",
)

schemas: dict[str, Any] = {
    "FileEntry": {
        "type": "object",
        "required": ["name", "path", "type", "size", "modified"],
        "properties": {
            "name": {"type": "string"},
            "path": {"type": "string", "description": "workspace-relative"},
            "type": {"type": "string", "enum": ["file", "directory", "symlink", "other"]},
            "size": {"type": "integer", "minimum": 0, "description": "bytes; a symlink's is its target's length"},
            "modified": {"type": ["string", "null"], "format": "date-time"},
            "mime": {"type": ["string", "null"], "description": "files only: guessed from the name"},
            "target": {"type": ["string", "null"], "description": "symlinks only: what the link says"},
            "target_type": {
                "type": ["string", "null"],
                "enum": ["file", "directory", "other", None],
                "description": "symlinks only: what it leads to; null when broken or outside the workspace",
            },
            "invalid_name": {
                "type": "boolean",
                "description": "the name on disk is not UTF-8 (shown with U+FFFD; it cannot be addressed)",
            },
        },
    },
    "FileListing": {
        "type": "object",
        "required": ["path", "entries", "truncated"],
        "properties": {
            "path": {"type": "string"},
            "entries": {"type": "array", "items": ref("FileEntry")},
            "total": {"type": "integer", "minimum": 0, "description": "entries before `limit` cut the list"},
            "truncated": {"type": "boolean"},
        },
    },
    "FileContent": {
        "type": "object",
        "required": ["path", "content", "encoding", "size", "modified", "etag"],
        "properties": {
            "path": {"type": "string"},
            "content": {"type": "string"},
            "encoding": {"type": "string", "enum": ["utf-8", "base64"]},
            "size": {"type": "integer", "minimum": 0},
            "modified": {"type": "string", "format": "date-time"},
            "etag": {"type": "string"},
            "mime": {"type": ["string", "null"]},
        },
    },
    "FileWrite": {
        "type": "object",
        "required": ["content"],
        "properties": {
            "content": {"type": "string"},
            "encoding": {"type": "string", "enum": ["utf-8", "base64"], "default": "utf-8"},
        },
    },
    "FileVersion": {
        "type": "object",
        "required": ["path", "size", "modified", "etag"],
        "properties": {
            "path": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "modified": {"type": "string", "format": "date-time"},
            "etag": {"type": "string"},
        },
    },
    "UploadResult": {
        "type": "object",
        "required": ["uploaded"],
        "properties": {
            "uploaded": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "size"],
                    "properties": {
                        "path": {"type": "string"},
                        "size": {"type": "integer", "minimum": 0},
                        "etag": {"type": "string"},
                        "modified": {"type": "string", "format": "date-time"},
                    },
                },
            }
        },
    },
    "MoveRequest": {
        "type": "object",
        "required": ["from", "to"],
        "properties": {
            "from": {**PATH_STRING, "description": "moved itself (a symlink is moved, not its target)"},
            "to": {**PATH_STRING, "description": "missing parents are created"},
            "overwrite": {"type": "boolean", "default": False},
        },
    },
    "MkdirRequest": {
        "type": "object",
        "required": ["path"],
        "properties": {
            "path": {**PATH_STRING, "description": "parents are created too"},
            "exist_ok": {"type": "boolean", "default": False, "description": "200 instead of 409 when it exists"},
        },
    },
    "PathResult": {
        "type": "object",
        "required": ["path"],
        "properties": {"path": {"type": "string"}, "created": {"type": "boolean"}},
    },
    "SearchResult": {
        "type": "object",
        "required": ["matches", "truncated"],
        "properties": {
            "matches": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "line", "text"],
                    "properties": {
                        "path": {"type": "string"},
                        "line": {"type": ["integer", "null"], "description": "1-based; null for a name match"},
                        "text": {"type": ["string", "null"], "description": "the line (first 500 characters)"},
                    },
                },
            },
            "truncated": {"type": "boolean", "description": "the limit or the time bound cut the results"},
            "timed_out": {"type": "boolean"},
        },
    },
}

_LISTING = json_response("The directory's entries", ref("FileListing"))

paths: dict[str, Any] = {
    "/api/v1/files": {
        "get": {
            "summary": "List a directory",
            "description": "Directories first, then by name. One unreadable entry or broken symlink never fails "
            "the listing. Walked off the event loop, so a 100k-entry directory does not hold up other requests.",
            "tags": [TAG],
            "parameters": [query_param("path", {**PATH_STRING, "default": ""}, _PATH_DESCRIPTION), _HIDDEN, _LIMIT],
            "responses": {"200": _LISTING, **errors(400, 404)},
        }
    },
    "/api/v1/files/{path}": {
        "get": {
            "summary": "Read a file (a directory: its listing)",
            "description": "The raw bytes, streamed, with `ETag`, `Last-Modified` and `Accept-Ranges: bytes`; "
            "honours `Range` (one range: 206; unsatisfiable: 416), `If-Range`, `If-None-Match` and "
            "`If-Modified-Since` (304). `Content-Type` is guessed from the name. `?format=json` answers "
            "`{content, encoding}` with `base64` for content that is not UTF-8 (files up to "
            f"{JSON_READ_LIMIT >> 20} MiB; larger → 422 `file_too_large`). A directory answers its listing "
            "(`hidden` and `limit` apply). `HEAD` answers the same headers without the body. Request headers "
            "(not listed as parameters): `Range: bytes=a-b` (one range; several: the whole file), `If-Range`, "
            "`If-None-Match: <etag>` and `If-Modified-Since`.",
            "tags": [TAG],
            "parameters": [
                _FILE_PATH,
                query_param("format", {"type": "string", "enum": ["raw", "json"]}, "json: the content in JSON"),
                _HIDDEN,
                _LIMIT,
            ],
            "responses": {
                "200": {
                    "description": "The file's bytes (or, for `format=json` and directories, JSON)",
                    "headers": {"ETag": _ETAG_HEADER},
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    ref("FileContent"),
                                    ref("FileListing"),
                                    {"description": "a raw read of a *.json file: its own content, any JSON"},
                                ]
                            }
                        },
                        "*/*": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "206": {
                    "description": "The requested range (`Content-Range` says which)",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "304": {"description": "Not modified (If-None-Match / If-Modified-Since)"},
                **errors(400, 404, 416, 422),
            },
        },
        "head": {
            "summary": "A file's headers",
            "description": "What `GET` would answer (ETag, Last-Modified, Content-Length, …) without the body.",
            "tags": [TAG],
            "parameters": [_FILE_PATH],
            "responses": {
                "200": {"description": "The file's headers", "headers": {"ETag": _ETAG_HEADER}},
                "304": {"description": "Not modified"},
                **errors(400, 404, 416),
            },
        },
        "put": {
            "summary": "Write a file (creates parents)",
            "description": "The raw body is the content (any `Content-Type`), streamed to disk as it arrives; "
            "with `?format=json` the body is `{content, encoding}` (up to "
            f"{JSON_WRITE_LIMIT >> 20} MiB). Atomic: readers see the old or the new file, also if the runtime is "
            "killed mid-write; an existing file keeps its permission bits; a symlink inside the workspace "
            "is written through (its target changes). 201 when created, 200 when replaced. Over "
            "`--max-upload-size` → 413 and nothing changes; a full disk → 507 and nothing is half-written. "
            "Conditional writes make concurrent editors safe." + CONDITIONAL_TEXT,
            "tags": [TAG],
            "parameters": [
                _FILE_PATH,
                query_param(
                    "format", {"type": "string", "enum": ["raw", "json"]}, "json: the body is a FileWrite object"
                ),
            ],
            "requestBody": {
                "required": False,
                "description": "The file's bytes, any Content-Type (none: an empty file); "
                "with `?format=json` a FileWrite object.",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "200": {
                    "description": "Replaced",
                    "headers": {"ETag": _ETAG_HEADER},
                    "content": json_content(ref("FileVersion")),
                },
                "201": {
                    "description": "Created",
                    "headers": {"ETag": _ETAG_HEADER},
                    "content": json_content(ref("FileVersion")),
                },
                **errors(400, 409, 412, 413, 507),
            },
        },
        "delete": {
            "summary": "Delete a file or directory",
            "description": "A symlink is deleted itself, never its target. A non-empty directory needs "
            "`recursive=true` (else 409 `directory_not_empty`). The workspace root (and whatever holds the "
            "runtime's state directory) cannot be deleted: 403." + CONDITIONAL_TEXT,
            "tags": [TAG],
            "parameters": [
                _FILE_PATH,
                query_param("recursive", {"type": "boolean", "default": False}, "delete a directory's content"),
            ],
            "responses": {"204": {"description": "Deleted"}, **errors(400, 404, 409, 412)},
        },
    },
    "/api/v1/files/upload": {
        "post": {
            "summary": "Upload files (multipart/form-data)",
            "description": "Every part with a filename is a file (a request with none uploads nothing); "
            "the filename may hold sub-folders (a folder "
            "upload) and is taken relative to `path`, jailed like any path (an absolute one is refused). "
            "Streamed to disk as it arrives; all-or-nothing: when any part is refused (an existing file "
            "without `overwrite`, a bad name, the body over `--max-upload-size`), no file from the request "
            "is kept. Each file lands atomically.",
            "tags": [TAG],
            "parameters": [
                query_param("path", {**PATH_STRING, "default": ""}, "the directory the files go to"),
                query_param("overwrite", {"type": "boolean", "default": False}, "replace existing files"),
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    }
                },
            },
            "responses": {
                "201": json_response("Every file landed", ref("UploadResult")),
                **errors(400, 409, 413, 415, 507),
            },
        }
    },
    "/api/v1/files/move": {
        "post": {
            "summary": "Move or rename (extension)",
            "description": "Missing parents of `to` are created; an existing `to` without `overwrite` → 409. "
            "A symlink is moved itself; neither end may be a symlink leading outside the workspace. "
            "`If-Match` applies to `from`'s ETag; `If-None-Match: *` refuses (412) an existing `to`."
            + CONDITIONAL_TEXT,
            "tags": [TAG],
            "requestBody": {"required": True, "content": json_content(ref("MoveRequest"))},
            "responses": {
                "200": json_response("Moved", ref("PathResult")),
                **errors(400, 404, 409, 412),
            },
        }
    },
    "/api/v1/files/mkdir": {
        "post": {
            "summary": "Create a directory (extension)",
            "description": "Parents are created too. An existing path → 409 `already_exists` (200 with "
            "`exist_ok` when it is a directory).",
            "tags": [TAG],
            "requestBody": {"required": True, "content": json_content(ref("MkdirRequest"))},
            "responses": {
                "200": json_response("It existed already (exist_ok)", ref("PathResult")),
                "201": json_response("Created", ref("PathResult")),
                **errors(400, 409),
            },
        }
    },
    "/api/v1/search": {
        "get": {
            "summary": "Search file contents and names (extension)",
            "description": "With neither `q` nor `glob` nothing is searched (`matches` is empty). "
            "`q`: the text to find (literal; `regex=true` for a regular expression) in files "
            "under `path` that match `glob`; `glob` alone: find files by name. Hidden files are searched, "
            "`.gitignore` is not applied, symlinks are not followed; `.git/`, `node_modules/`, the state "
            "directory, binary files and files over 50 MiB are skipped. Results in path order, at most "
            "`limit`, within 20 s (`truncated`, `timed_out`). Uses ripgrep when installed, else a Python walk "
            "that answers alike: `regex=true` takes ripgrep's (Rust) syntax, so look-around and backreferences "
            "are 400 `invalid_regex`; a pattern with a line break matches no line; a match in a line of "
            "megabytes is found, its `text` the line's first 500 characters.",
            "tags": [TAG],
            "parameters": [
                query_param("q", {"type": "string", "maxLength": 1000, "pattern": "^[^\\x00]*$"}, "text to find"),
                query_param(
                    "glob",
                    {"type": "string", "maxLength": 1000, "pattern": "^[^\\x00]*$"},
                    "file pattern (ripgrep syntax)",
                ),
                query_param("path", {**PATH_STRING, "default": ""}, "directory (or file) to search"),
                query_param(
                    "limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 200}, "max matches"
                ),
                query_param("regex", {"type": "boolean", "default": False}, "q is a regular expression"),
                query_param("ignore_case", {"type": "boolean", "default": False}, "case-insensitive"),
            ],
            "responses": {"200": json_response("Matches", ref("SearchResult")), **errors(400, 404)},
        }
    },
}

openapi: dict[str, Any] = {
    "tags": [{"name": TAG, "description": "Files of the workspace: list, read, write, upload, search"}],
    "schemas": schemas,
    "paths": paths,
}
