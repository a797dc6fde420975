"""``/docs`` works fully offline: headless Chromium renders Swagger UI from the runtime's own assets and
``/openapi.json``, with no Content-Security-Policy violation and no request to anywhere but the runtime."""

from __future__ import annotations

import contextlib
import html.parser
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
WSRUNTIME = REPO / "wsruntime.py"
BANNER_TIMEOUT_S = 10.0
CHROMIUM_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
IGNORED_SCHEMES = {"data", "blob", "chrome", "about"}
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
FRAME_REQUEST_TYPES = {"main frame", "sub frame"}


class Runtime(NamedTuple):
    url: str
    process: subprocess.Popen[str]


class ChromiumRun(NamedTuple):
    dom: str
    stderr: str
    netlog: Path
    note: str


class Request(NamedTuple):
    url: str
    from_page: bool


@pytest.fixture
def chromium() -> str:
    """The Chromium binary, or skip."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("no chromium binary (chromium or chromium-browser) on PATH")
    return binary


def _banner_url(process: subprocess.Popen[str], log_path: Path) -> str:
    """Read stdout until the banner's ``URL:`` line; the reader thread keeps draining it after."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + BANNER_TIMEOUT_S
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no URL: line within {BANNER_TIMEOUT_S} s; stdout so far: {seen!r}")
        if line is None:
            stderr = log_path.read_text(encoding="utf-8", errors="replace")
            pytest.fail(f"runtime exited ({process.poll()}) before its banner; stdout {seen!r}; stderr:\n{stderr}")
        seen.append(line)
        match = re.search(r"URL:\s+(https?://\S+)", line)
        if match:
            return match.group(1).rstrip("/")


@contextlib.contextmanager
def running_runtime(tmp_path: Path, *extra_args: str) -> Iterator[Runtime]:
    """The real server as a subprocess on a free port; killed if the test leaves it running."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    log_path = tmp_path / "runtime.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
    command = [sys.executable, str(WSRUNTIME), "--port", "0", "--host", "127.0.0.1", "--workspace", str(workspace)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, *extra_args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    try:
        yield Runtime(_banner_url(process, log_path), process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_chromium(binary: str, url: str, workdir: Path) -> ChromiumRun:
    """Load ``url`` in headless Chromium with a fresh profile; the DOM, the console (stderr) and a net log."""
    netlog = workdir / "netlog.json"
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={workdir / 'profile'}",
        "--virtual-time-budget=15000",
        f"--log-net-log={netlog}",
        "--net-log-capture-mode=Default",
        "--enable-logging=stderr",  # console messages (CSP violations among them) go to stderr
        "--v=0",
        "--dump-dom",
        url,
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    note = ""
    try:
        dom, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the browser and its helpers
        dom, stderr = process.communicate()
        note = f"chromium did not finish in {CHROMIUM_TIMEOUT_S} s and was killed; "
    return ChromiumRun(dom, stderr, netlog, note + f"chromium exit status {process.returncode}")


def load_netlog(path: Path) -> dict[str, Any]:
    """The net log; one cut short by a killed Chromium is closed (dropping a half-written last event)."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except ValueError:
        pass
    for _ in range(3):
        try:
            return json.loads(text.rstrip().rstrip(",") + "]}")  # type: ignore[no-any-return]
        except ValueError:
            text = text.rstrip()[: text.rstrip().rfind("\n") + 1]
    pytest.fail(f"the net log {path} is missing or unreadable ({len(text)} characters)")


def _site(origin: str) -> str:
    parts = urllib.parse.urlsplit(origin)
    return f"{parts.scheme}://{parts.hostname}"


def _from_page(params: dict[str, Any], origin: str) -> bool:
    """Whether the net log ties a request to the page: it was its initiator, it is a frame navigation, or its
    network isolation/anonymization key is the page's (top-frame) site. Chromium's own background requests
    (network time, account checks, updates; made even for about:blank) have none of these."""
    if params.get("initiator") == origin or params.get("request_type") in FRAME_REQUEST_TYPES:
        return True
    key = params.get("network_isolation_key") or params.get("network_anonymization_key") or ""
    return isinstance(key, str) and key.split(" ", 1)[0] == _site(origin)


def netlog_requests(netlog: dict[str, Any], origin: str) -> list[Request]:
    """Every URL request job (redirects and WebSocket handshakes included) and every host name lookup
    (which also covers preconnects and DNS prefetches that never became requests)."""
    names = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    requests: list[Request] = []
    for event in netlog.get("events", []):
        name = names.get(event.get("type"))
        params = event.get("params") or {}
        if name == "URL_REQUEST_START_JOB" and "url" in params:
            requests.append(Request(params["url"], _from_page(params, origin)))
        elif name == "HOST_RESOLVER_MANAGER_REQUEST" and "host" in params:
            requests.append(Request(params["host"], _from_page(params, origin)))
    return requests


def host_port(url: str) -> str | None:
    """``http://127.0.0.1:8080/x`` → ``127.0.0.1:8080``; default ports filled in; None for other schemes."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{parts.hostname}:{parts.port or DEFAULT_PORTS[parts.scheme]}"


class DomSummary(html.parser.HTMLParser):
    """The classes used, the operation paths shown and the text inside ``.title`` elements of a DOM dump."""

    VOID: ClassVar[set[str]] = {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.classes: set[str] = set()
        self.operation_paths: set[str] = set()
        self.title_text: list[str] = []
        self._in_title: list[bool] = []
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = set((values.get("class") or "").split())
        self.classes |= classes
        if "opblock-summary-path" in classes and values.get("data-path"):
            self.operation_paths.add(values["data-path"] or "")
        if tag not in self.VOID:
            self._in_title.append("title" in classes or bool(self._in_title and self._in_title[-1]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.classes |= set((dict(attrs).get("class") or "").split())

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self._in_title:
            self._in_title.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title and self._in_title[-1]:
            self.title_text.append(data)


def http_get(url: str) -> tuple[int, Any, bytes]:
    """A plain GET with no token and no proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.headers, response.read()


@pytest.mark.parametrize("token", [None, "secret"], ids=["no-token", "token"])
def test_docs_render_offline_in_chromium(chromium: str, tmp_path: Path, token: str | None) -> None:
    """Swagger UI renders the runtime's endpoints and nothing is requested from anywhere but the runtime;
    with ``--token`` too, since /docs, its assets and /openapi.json need no token."""
    with running_runtime(tmp_path, *(["--token", token] if token else [])) as runtime:
        origin = runtime.url
        status, _, body = http_get(origin + "/openapi.json")
        assert status == 200
        document = json.loads(body)
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/docs.js"):
            assert http_get(origin + path)[0] == 200, path
        csp = http_get(origin + "/docs")[1].get("Content-Security-Policy") or ""
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
            assert directive in csp, f"/docs lacks {directive!r} in its Content-Security-Policy {csp!r}"

        browser_dir = tmp_path / "chromium"
        browser_dir.mkdir()
        run = run_chromium(chromium, origin + "/docs", browser_dir)

        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        violations = [line for line in console if "content security policy" in line.lower()]
        assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations)

        dom = DomSummary(run.dom)
        context = f"{run.note}; console: {console}; DOM starts {run.dom[:300]!r}"
        assert "opblock" in dom.classes, f"Swagger UI rendered no operation block ({context})"
        missing = {"/health", "/openapi.json", *document["paths"]} - dom.operation_paths
        assert not missing, f"operations not rendered: {sorted(missing)} ({context})"
        title = document["info"]["title"]
        assert title in "".join(dom.title_text), f"title {title!r} not rendered ({context})"

        own = host_port(origin)
        requests = netlog_requests(load_netlog(run.netlog), origin)
        page = [r.url for r in requests if r.from_page and urllib.parse.urlsplit(r.url).scheme not in IGNORED_SCHEMES]
        outside = sorted({url for url in page if host_port(url) != own})
        ignored = sorted({r.url for r in requests if not r.from_page})
        assert not outside, f"the page requested outside {own}: {outside} (Chromium's own, ignored: {ignored})"
        requested_paths = {urllib.parse.urlsplit(url).path for url in page}
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/openapi.json"):
            assert path in requested_paths, f"{path} not among the page's requests {page} ({run.note})"

        runtime.process.send_signal(signal.SIGTERM)
        try:
            code = runtime.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runtime did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
        assert code == 0, f"the runtime exited with {code} after SIGTERM"
