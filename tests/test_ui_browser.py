"""The web console in a real browser: Playwright for Python driving Debian's Chromium against the real server.

Every scenario goes through the page as a person would (clicks, keys, dialogs)
and checks the result on disk or through the API; every page records console
errors, page errors, failed requests and CSP violations, and a test fails when
any appears. Screenshots of each panel are kept in ``$WSRUNTIME_UI_ARTIFACTS``
(default: the test's temporary folder). Skipped where Playwright (the 3.9/3.13
CI venvs) or ``/usr/bin/chromium`` is missing; Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TOKEN, ServerPool, ServerThread
from tests.mock_anthropic import MockAnthropic, reply, text, tool_use
from tests.openspec_support import copy_fixture

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_agent.py")
WAIT_MS = 20_000
# Each payload sets a window flag if the browser ever runs it.
IMG = "<img src=x onerror=window.__pwned=1>"
SCRIPT = "<script>window.__pwned=2</script>"
SVG = "<svg onload=window.__pwned=3>"


def git(workspace: str, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def console(servers: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with the fake agent, on a git repository holding OpenSpec changes and a Makefile."""
    workspace = copy_fixture("active-changes", str(tmp_path_factory.mktemp("console")))
    with open(os.path.join(workspace, "Makefile"), "w", encoding="utf-8") as f:
        f.write("greet:\n\t@echo hello from make\n")
        f.write(f"xss:\n\t@echo '{IMG} {SCRIPT}'\n\t@echo '{SVG}' >&2\n")
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "config", "user.name", "Console Test")
    git(workspace, "config", "user.email", "console@example.invalid")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "initial")
    server = servers.fresh("--claude-bin", FAKE, workspace=workspace)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts(tmp_path: Any) -> str:
    folder = os.environ.get("WSRUNTIME_UI_ARTIFACTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    return folder


class Page:
    """A browser page on the console that records everything that went wrong in it."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 760})
        self.page = self.context.new_page()
        self.base = base
        self.problems: list[str] = []
        self.expected: set[int] = set()  # statuses a scenario provokes on purpose (a 412 conflict)
        self.page.add_init_script(
            "window.__pwned = 0; window.__csp = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        expected = any(f"status of {status} " in message.text for status in self.expected)
        if message.type == "error" and not expected:
            self.problems.append(f"console: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.expected:
            self.problems.append(f"{response.status} {response.url}")

    def _failed(self, request: Any) -> None:
        # A WebSocket or stream cut by a reload or a closed page is not a failure of the console.
        if "net::ERR_ABORTED" not in (request.failure or ""):
            self.problems.append(f"failed: {request.url} {request.failure}")

    def open(self, panel: str = "files") -> Any:
        self.page.goto(f"{self.base}/ui#{panel}")
        self.page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        return self.page

    def check(self) -> None:
        """Nothing ran that should not have, nothing was refused, nothing failed."""
        assert self.page.evaluate("window.__pwned") == 0, "an untrusted payload ran"
        assert self.page.evaluate("window.__csp") == []
        assert self.problems == []


@pytest.fixture
def ui(browser: Any, console: ServerThread) -> Iterator[Page]:
    page = Page(browser, console.url)
    yield page
    try:
        page.check()
    finally:
        page.context.close()


def wait_for(predicate: Any, timeout: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- the page itself ----------------------------------------------------------------------------


def test_root_redirects_and_every_panel_opens(ui: Page, console: ServerThread, artifacts: str) -> None:
    page = ui.page
    page.goto(console.url + "/")
    assert page.url.endswith("/ui")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.wait_for_selector("#connection[data-state=open]", timeout=WAIT_MS)
    page.wait_for_selector("#stats:not(:empty)", timeout=WAIT_MS)  # system_stats arrived
    for panel in ("files", "agent", "terminal", "git", "scripts", "openspec", "settings"):
        page.click(f"#tab-{panel}")
        page.wait_for_selector(f"#panel-{panel}:not([hidden])")
        page.screenshot(path=os.path.join(artifacts, f"console-{panel}.png"))
    page.click("#tab-terminal")
    page.wait_for_selector("#panel-terminal .xterm")


def test_first_load_is_small(ui: Page) -> None:
    sizes: dict[str, int] = {}
    ui.page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())) if r.status == 200 else None)
    page = ui.open("files")
    page.wait_for_selector("#file-tree button[data-path]", timeout=WAIT_MS)
    code = {u: s for u, s in sizes.items() if "/ui" in u}
    assert not any("codemirror" in u or "xterm" in u for u in code), "the editor and the terminal load when needed"
    assert sum(code.values()) < 400 * 1024, code


def test_token_is_asked_once_and_kept(browser: Any, servers: ServerPool) -> None:
    secured = servers.get("--token", TOKEN)
    ui = Page(browser, secured.url)
    try:
        page = ui.page
        page.goto(secured.url + "/ui")
        page.wait_for_selector("#token-dialog[open]", timeout=WAIT_MS)
        ui.problems.clear()  # the 401 that made the page ask
        page.fill("#token-input", TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        page.wait_for_selector("#connection[data-state=open]", timeout=WAIT_MS)
        assert page.evaluate("sessionStorage.getItem('wsruntime.token')") == TOKEN
        page.reload()
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        assert not page.is_visible("#token-dialog")
        ui.check()
    finally:
        ui.context.close()


# -- files --------------------------------------------------------------------------------------


def test_open_edit_save_and_see_it_on_disk(ui: Page, console: ServerThread) -> None:
    path = os.path.join(console.workspace, "notes.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("first line\n")
    page = ui.open("files")
    page.click("#file-tree button[data-path='notes.txt']", timeout=WAIT_MS)
    page.wait_for_selector("#editor .cm-content")
    page.click("#editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("typed in the browser")
    page.click("#save")
    page.wait_for_selector("#files-notice:has-text('Saved notes.txt')")
    with open(path, encoding="utf-8") as f:
        assert f.read() == "first line\ntyped in the browser"


def _luminance(css_color: str) -> float:
    """Relative luminance (0 black .. 1 white) of a computed ``rgb(r, g, b)`` colour."""
    r, g, b = (int(part) / 255 for part in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_the_editor_highlights_code_in_dark_colours(ui: Page, console: ServerThread) -> None:
    # The console is dark: the editor's background and its syntax colours must be made for that (CodeMirror's
    # default highlight style is for a light background: its keywords were dark purple on near black).
    with open(os.path.join(console.workspace, "colours.py"), "w", encoding="utf-8") as f:
        f.write("def greet(name):\n    return 'hello ' + name\n")
    page = ui.open("files")
    page.click("#file-tree button[data-path='colours.py']", timeout=WAIT_MS)
    page.wait_for_selector("#editor .cm-line span:text-is('def')")
    colours = page.evaluate(
        """() => {
            const keyword = [...document.querySelectorAll('#editor .cm-line span')].find(s => s.textContent === 'def');
            const editor = document.querySelector('#editor .cm-editor');
            return [getComputedStyle(keyword).color, getComputedStyle(editor).backgroundColor];
        }"""
    )
    keyword, background = colours
    assert _luminance(background) < 0.2, colours
    assert _luminance(keyword) > 0.3, f"a keyword must stand out on the dark background: {colours}"


def test_a_conflict_is_shown_and_resolved_both_ways(ui: Page, console: ServerThread) -> None:
    path = os.path.join(console.workspace, "shared.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("base\n")
    page = ui.open("files")
    page.click("#file-tree button[data-path='shared.txt']", timeout=WAIT_MS)
    page.wait_for_selector("#editor .cm-content:has-text('base')")
    page.click("#editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("mine")
    ui.expected.add(412)  # the refused save is the point
    with open(path, "w", encoding="utf-8") as f:
        f.write("theirs\n")
    page.click("#save")
    page.wait_for_selector("#conflict:not([hidden])")
    with open(path, encoding="utf-8") as f:
        assert f.read() == "theirs\n", "a conflicting save must not write"
    page.click("#conflict-overwrite")
    page.wait_for_selector("#conflict", state="hidden")
    with open(path, encoding="utf-8") as f:
        assert f.read() == "base\nmine"

    page.click("#editor .cm-content")
    page.keyboard.type("!")
    with open(path, "w", encoding="utf-8") as f:
        f.write("theirs again\n")
    page.click("#save")
    page.wait_for_selector("#conflict:not([hidden])")
    page.click("#conflict-reload")
    page.wait_for_selector("#editor .cm-content:has-text('theirs again')")
    page.wait_for_selector("#conflict", state="hidden")


def test_the_tree_follows_the_disk(ui: Page, console: ServerThread) -> None:
    page = ui.open("files")
    page.wait_for_selector("#file-tree button[data-path='Makefile']", timeout=WAIT_MS)
    made = os.path.join(console.workspace, "made-in-a-shell.txt")
    with open(made, "w", encoding="utf-8") as f:
        f.write("x")
    page.wait_for_selector("#file-tree button[data-path='made-in-a-shell.txt']", timeout=WAIT_MS)
    os.remove(made)
    page.wait_for_selector("#file-tree button[data-path='made-in-a-shell.txt']", state="detached", timeout=WAIT_MS)


def row_action(page: Any, path: str, title: str) -> None:
    """Click one of a tree row's action buttons the way a person does: they show while the row is hovered."""
    row = page.locator(".row", has=page.locator(f"button[data-path='{path}']"))
    row.hover(timeout=WAIT_MS)
    row.locator(f"button[title='{title}']").click(timeout=WAIT_MS)


def test_new_file_rename_delete_upload_and_search(ui: Page, console: ServerThread) -> None:
    page = ui.open("files")
    page.wait_for_selector("#file-tree button[data-path='Makefile']", timeout=WAIT_MS)
    page.once("dialog", lambda d: d.accept("made/by-the-console.txt"))
    page.click("#new-file")
    page.wait_for_selector("#file-tree button[data-path='made/by-the-console.txt']", timeout=WAIT_MS)
    assert os.path.isfile(os.path.join(console.workspace, "made", "by-the-console.txt"))
    page.once("dialog", lambda d: d.accept("made/renamed.txt"))
    row_action(page, "made/by-the-console.txt", "Rename by-the-console.txt")
    page.wait_for_selector("#file-tree button[data-path='made/renamed.txt']", timeout=WAIT_MS)
    assert os.path.isfile(os.path.join(console.workspace, "made", "renamed.txt"))
    page.once("dialog", lambda d: d.accept())
    row_action(page, "made/renamed.txt", "Delete renamed.txt")
    page.wait_for_selector("#file-tree button[data-path='made/renamed.txt']", state="detached", timeout=WAIT_MS)
    assert not os.path.exists(os.path.join(console.workspace, "made", "renamed.txt"))
    upload = os.path.join(console.workspace, "..", "to-upload.txt")
    with open(upload, "w", encoding="utf-8") as f:
        f.write("uploaded through the page\n")
    page.set_input_files("#panel-files input[type=file]", upload)
    page.wait_for_selector("#file-tree button[data-path='to-upload.txt']", timeout=WAIT_MS)
    with open(os.path.join(console.workspace, "to-upload.txt"), encoding="utf-8") as f:
        assert f.read() == "uploaded through the page\n"
    page.fill("#file-search", "hello from make")
    page.press("#file-search", "Enter")
    page.wait_for_selector("#search-results button:has-text('Makefile')", timeout=WAIT_MS)


def test_an_upload_over_a_file_asks_first_and_the_open_file_follows_its_folder(ui: Page, console: ServerThread) -> None:
    workspace = console.workspace
    os.makedirs(os.path.join(workspace, "keep", "inner"))
    for rel, body in (("exists.txt", "mine\n"), ("keep/inner/open.txt", "original\n")):
        with open(os.path.join(workspace, rel), "w", encoding="utf-8") as f:
            f.write(body)
    theirs = os.path.join(workspace, "..", "exists.txt")
    with open(theirs, "w", encoding="utf-8") as f:
        f.write("theirs\n")
    page = ui.open("files")
    page.wait_for_selector("#file-tree button[data-path='exists.txt']", timeout=WAIT_MS)
    # An upload onto an existing file asks; declined, nothing changes (the API refused it: all or nothing).
    ui.expected.add(409)
    page.once("dialog", lambda d: d.dismiss())
    page.set_input_files("#panel-files input[type=file]", theirs)
    page.wait_for_selector("#files-notice:has-text('Not uploaded: exists.txt already exists')", timeout=WAIT_MS)
    with open(os.path.join(workspace, "exists.txt"), encoding="utf-8") as f:
        assert f.read() == "mine\n"
    page.once("dialog", lambda d: d.accept())
    page.set_input_files("#panel-files input[type=file]", theirs)
    page.wait_for_selector("#files-notice:has-text('Uploaded exists.txt')", timeout=WAIT_MS)
    with open(os.path.join(workspace, "exists.txt"), encoding="utf-8") as f:
        assert f.read() == "theirs\n"
    # A folder renamed around the open, edited file: the edit is saved where the file now is.
    page.click("#file-tree button[data-path='keep']")
    page.click("#file-tree button[data-path='keep/inner']", timeout=WAIT_MS)
    page.click("#file-tree button[data-path='keep/inner/open.txt']", timeout=WAIT_MS)
    page.wait_for_selector("#editor .cm-content:has-text('original')", timeout=WAIT_MS)
    page.click("#editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("edited")
    page.once("dialog", lambda d: d.accept("moved"))
    row_action(page, "keep", "Rename keep")
    page.wait_for_selector("#file-tree button[data-path='moved/inner/open.txt']", timeout=WAIT_MS)
    page.click("#save")
    page.wait_for_selector("#files-notice:has-text('Saved moved/inner/open.txt')", timeout=WAIT_MS)
    with open(os.path.join(workspace, "moved", "inner", "open.txt"), encoding="utf-8") as f:
        assert f.read() == "original\nedited"
    # A tool that replaces the open file by a rename over it (sed -i, an editor's atomic save): shown.
    temp = os.path.join(workspace, "moved", "inner", ".open.txt.tool")
    with open(temp, "w", encoding="utf-8") as f:
        f.write("replaced by a tool\n")
    os.replace(temp, os.path.join(workspace, "moved", "inner", "open.txt"))
    page.wait_for_selector("#editor .cm-content:has-text('replaced by a tool')", timeout=WAIT_MS)
    # A folder deleted in a shell while open in the tree goes away without a failed listing.
    shutil.rmtree(os.path.join(workspace, "moved"))
    page.wait_for_selector("#file-tree button[data-path='moved']", state="detached", timeout=WAIT_MS)


# -- terminal, scripts, git ---------------------------------------------------------------------


def terminal_text(page: Any) -> str:
    return str(
        page.evaluate(
            "[...document.querySelectorAll('#terminals .term:not([hidden]) .xterm-rows > div')]"
            ".map(r => r.textContent).join('\\n')"
        )
    )


def test_terminal_echo_and_reload(ui: Page) -> None:
    page = ui.open("terminal")
    page.wait_for_selector("#terminals .term:not([hidden]) .xterm", timeout=WAIT_MS)
    page.click("#terminals .term:not([hidden]) .xterm")
    page.keyboard.type("echo hi; echo $((40+2))\n")
    wait_for(lambda: re.search(r"^42\s*$", terminal_text(page), re.M) is not None)
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.wait_for_selector("#terminals .term:not([hidden]) .xterm", timeout=WAIT_MS)
    wait_for(lambda: re.search(r"^42\s*$", terminal_text(page), re.M) is not None)
    assert "echo hi" in terminal_text(page)


def test_a_script_runs_with_its_output(ui: Page) -> None:
    page = ui.open("scripts")
    page.click("#script-list li[data-name='make:greet'] button", timeout=WAIT_MS)
    page.wait_for_selector("#script-output:has-text('hello from make')", timeout=WAIT_MS)
    page.wait_for_selector("#script-status[data-status=succeeded]", timeout=WAIT_MS)


def test_a_commit_from_the_git_panel(ui: Page, console: ServerThread) -> None:
    with open(os.path.join(console.workspace, "committed.txt"), "w", encoding="utf-8") as f:
        f.write("to commit\n")
    page = ui.open("git")
    page.wait_for_selector("#git-files li[data-path='committed.txt']", timeout=WAIT_MS)
    page.click("#git-files li[data-path='committed.txt'] button:has-text('Stage')")
    page.wait_for_selector("#git-files li[data-path='committed.txt'] button:has-text('Unstage')", timeout=WAIT_MS)
    page.fill("#git-message", "Committed from the console")
    page.click("#git-commit")
    page.wait_for_selector("#git-notice:has-text('Committed')", timeout=WAIT_MS)
    assert git(console.workspace, "log", "-1", "--format=%s").strip() == "Committed from the console"
    assert "committed.txt" in git(console.workspace, "show", "--name-only", "--format=", "HEAD")
    page.wait_for_selector("#git-log .subject:has-text('Committed from the console')", timeout=WAIT_MS)


# -- agent, OpenSpec, settings ------------------------------------------------------------------


def start_session(page: Any, prompt: str) -> None:
    page.wait_for_selector("#agent-select option[value=claude-code]:not([disabled])", state="attached", timeout=WAIT_MS)
    page.select_option("#agent-select", "claude-code")
    page.fill("#agent-prompt", prompt)
    page.click("#agent-start")


def test_an_agent_session_with_a_permission_prompt_and_an_interrupt(ui: Page) -> None:
    page = ui.open("agent")
    start_session(page, "ask rm -rf build")
    page.wait_for_selector("#agent-log .permission button:has-text('Allow')", timeout=WAIT_MS)
    page.click("#agent-log .permission button:has-text('Allow')")
    page.wait_for_selector("#agent-log .msg.text:has-text('permission allow')", timeout=WAIT_MS)
    assert page.is_visible("#agent-log details summary:has-text('Tool: Bash ✓')")

    page.fill("#agent-followup", "ask touch x")
    page.click("#agent-send")
    page.wait_for_selector("#agent-log .permission button:has-text('Deny')", timeout=WAIT_MS)
    page.click("#agent-log .permission button:has-text('Deny')")
    page.wait_for_selector("#agent-log .msg.text:has-text('permission deny')", timeout=WAIT_MS)

    running = page.locator("#agent-log .msg.status[data-status=running]")
    turns = running.count()
    page.fill("#agent-followup", "hang")
    page.click("#agent-send")
    wait_for(lambda: running.count() > turns)  # the turn started: now there is something to interrupt
    page.click("#agent-interrupt")
    page.wait_for_selector("#agent-log .msg.error:has-text('interrupted')", timeout=WAIT_MS)
    # After a reload the session is shown again from its stored messages.
    page.reload()
    page.wait_for_selector("#agent-log .msg.text:has-text('permission deny')", timeout=WAIT_MS)
    page.click("#agent-stop")
    page.wait_for_selector("#agent-log .msg.status[data-status=terminated]", timeout=WAIT_MS)


def test_text_appears_as_it_is_written_then_as_its_complete_block(ui: Page) -> None:
    """Live deltas: the block being written shows as plain text, then the complete frame replaces it."""
    folder = tempfile.mkdtemp(prefix="ui-deltas-")
    start, gate = os.path.join(folder, "start"), os.path.join(folder, "go")
    page = ui.open("agent")
    start_session(page, f"wait {gate} {start}")
    # The page is attached once it shows the session's first stored frame: then the first half is written
    # (deltas are live only, so one written before the page attached would never show).
    page.wait_for_selector("#agent-log .msg.status[data-status=running]", timeout=WAIT_MS)
    with open(start, "w"):
        pass
    page.wait_for_selector("#agent-log .msg.text.live:has-text('first half')", timeout=WAIT_MS)
    assert page.locator("#agent-log .msg.done").count() == 0
    with open(gate, "w"):
        pass
    page.wait_for_selector("#agent-log .msg.done", timeout=WAIT_MS)
    assert page.locator("#agent-log .msg.live").count() == 0
    # The complete block is rendered as markdown once the (lazily loaded) renderer is there.
    page.wait_for_selector("#agent-log .msg.text:has-text('first half second half')", timeout=WAIT_MS)
    assert page.locator("#agent-log .msg.text:has-text('first half second half')").count() == 1
    page.click("#agent-stop")
    page.wait_for_selector("#agent-log .msg.status[data-status=terminated]", timeout=WAIT_MS)


@pytest.mark.skipif(shutil.which("claude") is None, reason="the claude CLI is not installed")
def test_a_session_of_the_real_claude_cli_in_the_page(browser: Any, servers: ServerPool) -> None:
    """The real ``claude`` (against tests/mock_anthropic.py): its markdown rendered, its tool call folded with
    its result, its streamed text shown as the CLI sends it."""
    mock = MockAnthropic().start()
    home = tempfile.mkdtemp(prefix="claude-home-")
    server = servers.fresh()
    page = Page(browser, server.url)
    try:
        assert server.runtime is not None
        server.runtime.ctx.agents.env_overrides = mock.env(home)
        mock.script(
            "greet",
            reply(tool_use("Bash", {"command": "echo listed-by-bash > listed.txt", "description": "list"})),
            reply(text(f"Hello **from the real CLI**, {IMG}", chunks=4, chunk_delay=0.05)),
        )
        p = page.open("agent")
        assert p.is_checked("#agent-ask")  # permission prompts come to the page
        start_session(p, "scn:greet list, then greet")
        p.wait_for_selector("#agent-log .permission button:has-text('Allow')", timeout=WAIT_MS)
        p.click("#agent-log .permission button:has-text('Allow')")
        p.wait_for_selector("#agent-log .msg.text strong:has-text('from the real CLI')", timeout=WAIT_MS)
        p.wait_for_selector("#agent-log details summary:has-text('Tool: Bash ✓')", timeout=WAIT_MS)
        with open(os.path.join(server.workspace, "listed.txt"), encoding="utf-8") as f:
            assert f.read() == "listed-by-bash\n"
        page.check()
    finally:
        page.context.close()
        server.stop()
        mock.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_an_openspec_action_opens_its_session(ui: Page) -> None:
    page = ui.open("openspec")
    button = page.wait_for_selector("#openspec-changes button.action[data-action=apply]", timeout=WAIT_MS)
    change = button.get_attribute("data-change")
    button.click()
    page.wait_for_selector("#panel-agent:not([hidden])", timeout=WAIT_MS)
    page.wait_for_selector(f"#agent-log .msg.text:has-text('/opsx:apply {change}')", timeout=WAIT_MS)


def test_an_mcp_server_added_in_settings_and_a_refused_body(ui: Page, console: ServerThread) -> None:
    page = ui.open("settings")
    page.select_option("#settings-part", "mcp")
    page.wait_for_selector("#settings-path:has-text('.mcp.json')", timeout=WAIT_MS)
    page.fill("#settings-json", json.dumps({"docs": {"command": "docs-server", "args": ["--stdio"]}}))
    page.click("#settings-save")
    page.wait_for_selector("#settings-notice:has-text('Saved')", timeout=WAIT_MS)
    with open(os.path.join(console.workspace, ".mcp.json"), encoding="utf-8") as f:
        assert json.load(f)["mcpServers"]["docs"] == {"command": "docs-server", "args": ["--stdio"]}
    ui.expected.add(400)
    page.fill("#settings-json", json.dumps({"docs": {"command": 42}}))
    page.click("#settings-save")
    page.wait_for_selector("#settings-notice.error", timeout=WAIT_MS)
    assert page.get_attribute("#settings-notice", "data-path") == "$.mcpServers.docs.command"
    page.fill("#settings-json", "{not json")  # a later error that names no path takes the old one away
    page.click("#settings-save")
    page.wait_for_selector("#settings-notice:has-text('Not JSON')", timeout=WAIT_MS)
    assert page.get_attribute("#settings-notice", "data-path") is None


# -- untrusted text -----------------------------------------------------------------------------


def test_untrusted_text_never_runs(ui: Page, console: ServerThread) -> None:
    """Payloads in a file name, file contents, agent output, a commit message and script output stay text."""
    workspace = console.workspace
    names = [IMG, SVG, "<script>window.__pwned=2<\\script>"]
    for name in names:
        with open(os.path.join(workspace, name), "w", encoding="utf-8") as f:
            f.write(f"{IMG}\n{SCRIPT}\n{SVG}\n")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", f"{IMG} {SCRIPT}", "-m", SVG)
    page = ui.open("files")
    for name in names:
        page.wait_for_selector(f"#file-tree button[data-path={json.dumps(name)}]", timeout=WAIT_MS)
        assert name in page.text_content(f"#file-tree button[data-path={json.dumps(name)}]")
    page.click(f"#file-tree button[data-path={json.dumps(IMG)}]")
    page.wait_for_selector("#editor .cm-content:has-text('onerror')", timeout=WAIT_MS)

    page.click("#tab-git")
    page.wait_for_selector("#git-log .subject:has-text('onerror')", timeout=WAIT_MS)
    assert IMG in page.text_content("#git-log .subject")

    page.click("#tab-scripts")
    page.click("#script-list li[data-name='make:xss'] button", timeout=WAIT_MS)
    page.wait_for_selector("#script-status[data-status=succeeded]", timeout=WAIT_MS)
    output = page.text_content("#script-output")
    assert IMG in output and SCRIPT in output and SVG in output

    page.click("#tab-agent")
    start_session(page, f"echo {IMG} {SCRIPT} {SVG} **bold** [link](javascript:window.__pwned=4)")
    page.wait_for_selector("#agent-log .msg.text strong:has-text('bold')", timeout=WAIT_MS)
    text = page.locator("#agent-log .msg.text").last
    assert text.locator("img, script, svg").count() == 0
    assert "javascript:" not in (text.locator("a").first.get_attribute("href") or "")
