"""The console's serving rules, without a browser: redirect, CSP, no token, assets, sizes, vendored files, types.

The browser scenarios are in test_ui_browser.py.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re

import pytest

from tests.conftest import TOKEN, ServerPool, ServerThread
from wsruntime_ext.docs import DOCS_CSP

ASSETS = importlib.resources.files("wsruntime_ext") / "ui_assets"
KIB = 1024
PANELS = ("files", "agent", "terminal", "git", "scripts", "openspec", "settings")


def own_modules() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in ASSETS.iterdir() if p.name.endswith(".js")}


async def test_root_redirects_to_the_console(server: ServerThread) -> None:
    r = await server.request("GET", "/")
    assert r.status == 302
    assert r.headers["Location"] == "/ui"


async def test_the_page_has_a_strict_csp_and_no_inline_script(server: ServerThread) -> None:
    r = await server.request("GET", "/ui")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Security-Policy"] == DOCS_CSP
    assert "script-src 'self'" in DOCS_CSP and "unsafe-eval" not in DOCS_CSP and "default-src 'none'" in DOCS_CSP
    html = r.raw.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/ui/' in attrs and body == "" for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "nothing from another origin"


async def test_the_page_and_assets_need_no_token(servers: ServerPool) -> None:
    secured = servers.get("--token", TOKEN)
    for path in ("/ui", "/ui/main.js", "/ui/wsruntime.d.ts", "/ui/vendor/VERSIONS", "/"):
        r = await secured.request("GET", path)
        assert r.status in (200, 302), path
    assert (await secured.request("GET", "/api/v1/files?path=")).status == 401


async def test_every_asset_is_served_with_its_type_and_revalidated(server: ServerThread) -> None:
    for name in [*own_modules(), "console.css", "vendor/xterm.css", "vendor/codemirror.js", "wsruntime.d.ts"]:
        r = await server.request("GET", f"/ui/{name}")
        assert r.status == 200, name
        kind = {"js": "text/javascript", "css": "text/css", "ts": "text/plain"}[name.rsplit(".", 1)[1]]
        assert r.headers["Content-Type"].startswith(kind), name
        again = await server.request("GET", f"/ui/{name}", headers={"If-None-Match": r.headers["ETag"]})
        assert again.status == 304, name


@pytest.mark.parametrize(
    "path",
    [
        "/ui/..%2fui.py",
        "/ui/vendor/..%2f..%2fapp.py",
        "/ui/%2e%2e/app.py",
        "/ui/.hidden",
        "/ui/nope.js",
        "/ui/vendor",
        "/ui/a/b/c/d.js",
        "/ui/vendor/LICENSES/../../index.html",
    ],
)
async def test_nothing_but_assets_is_served(server: ServerThread, path: str) -> None:
    r = await server.request("GET", path)
    assert r.status == 404, path
    assert r.body["error"]["code"] == "not_found"


def test_untrusted_text_is_never_parsed_as_html_by_our_code() -> None:
    """A lint, not the proof (test_ui_browser.py plants the payloads): our modules never build HTML from text."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc")
    offenders = [f"{name}: {m.group(0)}" for name, text in own_modules().items() for m in forbidden.finditer(text)]
    assert offenders == []


def test_panels_use_the_api_client_only() -> None:
    """STYLE.md: panels never call fetch or new WebSocket themselves; api.js does."""
    for name, text in own_modules().items():
        if name != "api.js":
            assert not re.search(r"\bfetch\(|new WebSocket|XMLHttpRequest", text), name
    for panel in PANELS:
        assert f"{panel}.js" in own_modules()


def test_every_relative_import_resolves() -> None:
    modules = own_modules()
    for name, text in modules.items():
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # JSDoc types import the .d.ts, not a module
        for target in re.findall(r"""(?:from|import)\s*\(?\s*["'](\./[^"']+)["']""", text):
            assert (ASSETS / target[2:]).is_file(), f"{name} imports {target}"
        for target in re.findall(r'const [A-Z]+ = "(\./vendor/[^"]+)"', text):
            assert (ASSETS / target[2:]).is_file(), f"{name} loads {target}"


def test_first_load_is_under_400_kib() -> None:
    """The page, its style sheet, our modules and the markdown renderer; the editor and the terminal load later."""
    first = [ASSETS / "index.html", ASSETS / "console.css", ASSETS / "vendor" / "markdown.js"]
    first += [p for p in ASSETS.iterdir() if p.name.endswith(".js")]
    total = sum(len(p.read_bytes()) for p in first)
    assert total < 400 * KIB, f"{total / KIB:.0f} KiB"


def test_vendored_files_carry_versions_and_licences() -> None:
    vendor = ASSETS / "vendor"
    versions = (vendor / "VERSIONS").read_text(encoding="utf-8")
    files = sorted(p.name for p in vendor.iterdir() if p.is_file() and p.name != "VERSIONS")
    assert files == ["addon-fit.js", "codemirror.js", "markdown.js", "xterm.css", "xterm.js"]
    sections = re.findall(r"^(\S+):\n((?:  .+\n)+)", versions, re.M)
    assert sorted(name for name, _ in sections) == files
    for _, body in sections:
        for package, version, _licence in (line.split(maxsplit=2) for line in body.splitlines()):
            assert re.match(r"^\d+\.\d+\.\d+$", version), package
            assert (vendor / "LICENSES" / (package.replace("/", "__") + ".txt")).is_file(), package
    assert "esbuild 0.28.2" in versions


def test_package_json_pins_exact_versions() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "ui", "package.json"), encoding="utf-8") as f:
        pins = json.load(f)["devDependencies"]
    assert all(re.match(r"^\d+\.\d+\.\d+$", v) for v in pins.values()), pins
    assert os.path.isfile(os.path.join(root, "ui", "package-lock.json"))


async def test_websocket_frames_are_schemas_and_typed(server: ServerThread) -> None:
    schemas = (await server.request("GET", "/openapi.json")).body["components"]["schemas"]
    for name in (
        "AgentMessage",
        "AgentClientFrame",
        "EventFrame",
        "StreamFrame",
        "StreamHelloFrame",
        "StreamOutputFrame",
        "StreamExitFrame",
        "ProcessClientFrame",
        "SocketReply",
        "ScriptRunEvent",
        "GitProgressEvent",
    ):
        assert name in schemas, name
    for choice in schemas["EventFrame"]["oneOf"]:
        assert choice["$ref"].rsplit("/", 1)[1] in schemas
    types = (await server.request("GET", "/ui/wsruntime.d.ts")).raw.decode()
    for name in ("EventFrame", "StreamOutputFrame", "AgentMessage", "FileChangedEvent", "SocketReply"):
        assert re.search(rf"^\s+{name}: ", types, re.M), name
