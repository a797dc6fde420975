"""The web console at ``/ui`` (API.md "Web console (extension)").

One page and its ES modules, served from package data (``ui_assets/``, read
through importlib.resources so it works inside the .pyz) under the same strict
Content-Security-Policy as ``/docs``: scripts only from here, no inline
script, no ``eval``, nothing from another origin. The page and its assets need
no token; the API calls the page makes do. ``GET /`` redirects here.
The console is built only on the public API, so it is also the reference client;
``/ui/wsruntime.d.ts`` gives frontend developers the types generated from
``/openapi.json`` (``tools/vendor_ui.py``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from typing import Any

from wsruntime_ext.base import ApiError, OpenHandler
from wsruntime_ext.docs import DOCS_CSP
from wsruntime_ext.openapi import errors, path_param, route

# Folders and names of plain characters only: no "..", no hidden files, no backslashes.
_ASSET_PATH = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_-]*/){0,2}[A-Za-z0-9][A-Za-z0-9._-]*$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",  # wsruntime.d.ts, for reading and saving
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_cache: dict[str, tuple[bytes, str]] = {}


def read_ui_asset(path: str) -> tuple[bytes, str]:
    """An asset's bytes and ETag (read once); FileNotFoundError for anything that is not one."""
    cached = _cache.get(path)
    if cached is None:
        if not _ASSET_PATH.match(path) or path.endswith(".md"):
            raise FileNotFoundError(path)
        resource = importlib.resources.files("wsruntime_ext") / "ui_assets"
        for part in path.split("/"):
            resource = resource / part
        data = resource.read_bytes()
        cached = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
        _cache[path] = cached
    return cached


def content_type(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name == "VERSIONS":
        return _TYPES[".txt"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    return _TYPES.get(suffix, "application/octet-stream")


class ConsolePageHandler(OpenHandler):
    def get(self) -> None:
        body, etag = read_ui_asset("index.html")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", DOCS_CSP)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("ETag", etag)
        if self.check_etag_header():
            self.set_status(304)
            return
        self.finish(body)


class ConsoleAssetHandler(OpenHandler):
    def get(self, path: str) -> None:
        try:
            body, etag = read_ui_asset(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ApiError(404, "not_found", f"No console asset {path!r}") from None
        self.set_header("Content-Type", content_type(path))
        self.set_header("Content-Security-Policy", DOCS_CSP)
        # Revalidated on every load (a cheap 304): an upgraded runtime never serves a stale module.
        self.set_header("Cache-Control", "no-cache")
        self.set_header("ETag", etag)
        if self.check_etag_header():
            self.set_status(304)
            return
        self.finish(body)


class RootRedirectHandler(OpenHandler):
    def get(self) -> None:
        self.set_status(302)
        self.set_header("Location", "/ui")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(b'{"location":"/ui"}')


handlers = [
    route("/", RootRedirectHandler),
    route("/ui", ConsolePageHandler),
    route("/ui/{path}", ConsoleAssetHandler, path=".+"),
]

open_paths = ["/", "/ui", "/ui/{path}"]

_html: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}
_not_modified: dict[str, Any] = {"description": "Not modified (If-None-Match matched the ETag)"}

openapi: dict[str, Any] = {
    "tags": [{"name": "console", "description": "The web console, served offline"}],
    "paths": {
        "/": {
            "get": {
                "summary": "Redirects to the web console",
                "tags": ["console"],
                "responses": {
                    "302": {
                        "description": "To `/ui`",
                        "headers": {"Location": {"schema": {"type": "string", "const": "/ui"}}},
                    }
                },
            }
        },
        "/ui": {
            "get": {
                "summary": "The web console: files, agent, terminal, git, scripts, OpenSpec, settings",
                "tags": ["console"],
                "responses": {
                    "200": {"description": "The console page", "content": _html},
                    "304": _not_modified,
                },
            }
        },
        "/ui/{path}": {
            "get": {
                "summary": "A console asset (module, style sheet, vendored library, licence, `wsruntime.d.ts`)",
                "tags": ["console"],
                "parameters": [{**path_param("path", "the asset's path under /ui/"), "example": "api.js"}],
                "responses": {
                    "200": {"description": "The asset", "content": {"*/*": {"schema": {"type": "string"}}}},
                    "304": _not_modified,
                    **errors(404),
                },
            }
        },
    },
}
