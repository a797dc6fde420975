"""``/openapi.json`` and ``/docs`` (API.md "Interactive documentation").

The OpenAPI document is built once at start-up from every module's own part
(see ``openapi.py``). ``/docs`` is Swagger UI, served entirely by the runtime
from vendored assets (``docs_assets/``), so it works with no network at all;
a Content-Security-Policy keeps the page from loading anything from elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import mimetypes
import re
from typing import TYPE_CHECKING, Any

from wsruntime_ext.base import ApiError, OpenHandler
from wsruntime_ext.openapi import build_document, errors, json_response, path_param, route

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_asset_cache: dict[str, tuple[bytes, str]] = {}


def read_asset(name: str) -> tuple[bytes, str]:
    """An asset's bytes and ETag, read once through importlib.resources (works inside the .pyz)."""
    cached = _asset_cache.get(name)
    if cached is None:
        if not _ASSET_NAME.match(name) or name == "README.md":
            raise FileNotFoundError(name)
        data = (importlib.resources.files("wsruntime_ext") / "docs_assets" / name).read_bytes()
        cached = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
        _asset_cache[name] = cached
    return cached


class OpenApiHandler(OpenHandler):
    def get(self) -> None:
        body, etag = self.ctx.openapi_json
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("ETag", etag)
        if self.check_etag_header():
            self.set_status(304)
            return
        self.finish(body)


class DocsPageHandler(OpenHandler):
    def get(self) -> None:
        body, etag = read_asset("index.html")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", DOCS_CSP)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("ETag", etag)
        self.finish(body)


class DocsAssetHandler(OpenHandler):
    def get(self, name: str) -> None:
        try:
            body, etag = read_asset(name)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ApiError(404, "not_found", f"No documentation asset {name!r}") from None
        suffix = name[name.rfind(".") :] if "." in name else ""
        self.set_header(
            "Content-Type", _ASSET_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        self.set_header("Cache-Control", "public, max-age=86400")
        self.set_header("ETag", etag)
        if self.check_etag_header():
            self.set_status(304)
            return
        self.finish(body)


async def startup(ctx: Context) -> None:
    document = build_document(ctx.modules, ctx.open_paths())
    body = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    ctx.openapi_document = document
    ctx.openapi_json = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


handlers = [
    route("/openapi.json", OpenApiHandler),
    route("/docs", DocsPageHandler),
    route("/docs/assets/{name}", DocsAssetHandler),
]

open_paths = ["/openapi.json", "/docs", "/docs/assets/{name}"]

_html: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}

openapi = {
    "tags": [{"name": "docs", "description": "This document and the interactive documentation"}],
    "paths": {
        "/openapi.json": {
            "get": {
                "summary": "This OpenAPI 3.1 document",
                "tags": ["docs"],
                "responses": {
                    "200": json_response("The OpenAPI document", {"type": "object"}),
                    "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                },
            }
        },
        "/docs": {
            "get": {
                "summary": "Interactive documentation (Swagger UI), served offline",
                "tags": ["docs"],
                "responses": {"200": {"description": "The documentation page", "content": _html}},
            }
        },
        "/docs/assets/{name}": {
            "get": {
                "summary": "A documentation asset (script, style sheet, icon, licence)",
                "tags": ["docs"],
                "parameters": [{**path_param("name", "the asset's file name"), "example": "swagger-ui.css"}],
                "responses": {
                    "200": {"description": "The asset", "content": {"*/*": {"schema": {"type": "string"}}}},
                    "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                    **errors(404),
                },
            }
        },
    },
}
