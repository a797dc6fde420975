"""How fast the web console appears: ``python bench/ui_load.py [--loads 20]``.

Starts wsruntime on a temporary workspace (a few hundred files, so the tree has something to show) and
loads ``/ui`` in Debian's Chromium (Playwright for Python, ``/usr/bin/chromium``) ``--loads`` times, each in
a fresh browser context (an empty cache: every asset is fetched again). For each load it takes:

- **ready**: from the start of the navigation until the console says it is usable (``body[data-ready=true]``:
  the modules ran, the first API answers arrived and the Files tree is drawn);
- **connected**: until the events WebSocket is open (``#connection[data-state=open]``);
- **DOMContentLoaded** and **load** from the page's own Navigation Timing;
- **bytes**: what the page fetched (the sum of its responses' bodies, uncompressed as the runtime sends them).

It prints the median and the worst of each. Goal (issue 18): the console appears in under 1 s on loopback,
and its first load is under 400 KiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import free_port, start_runtime, stop

CHROMIUM = "/usr/bin/chromium"


def make_workspace(root: Path) -> None:
    for d in range(10):
        folder = root / f"dir{d}"
        folder.mkdir()
        for f in range(30):
            (folder / f"file{f}.txt").write_text(f"file {d}/{f}\n")
    (root / "README.md").write_text("# bench\n")


def one_load(browser: Any, url: str) -> dict[str, float]:
    context = browser.new_context()
    page = context.new_page()
    sizes: list[int] = []

    def count(response: Any) -> None:
        if response.status == 200:  # a WebSocket upgrade (101) or a redirect has no body
            sizes.append(len(response.body()))

    page.on("response", count)
    started = time.perf_counter()
    page.goto(url + "/ui#files")
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    ready = time.perf_counter() - started
    page.wait_for_selector("#connection[data-state=open]", timeout=20_000)
    connected = time.perf_counter() - started
    timing = page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()"
    )
    context.close()
    return {
        "ready": ready * 1000,
        "connected": connected * 1000,
        "dcl": float(timing[0]),
        "load": float(timing[1]),
        "kib": sum(sizes) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=20, help="page loads measured (default 20)")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("needs Playwright for Python (pip install playwright; no browser download needed)") from None
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"needs {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="wsrt-ui-bench-") as temp:
        workspace = Path(temp) / "ws"
        workspace.mkdir()
        make_workspace(workspace)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
        proc = start_runtime(workspace, port, env, Path(temp) / "runtime.log", "ui-bench")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                one_load(browser, f"http://127.0.0.1:{port}")  # warm-up: the runtime's first requests
                samples = [one_load(browser, f"http://127.0.0.1:{port}") for _ in range(args.loads)]
                browser.close()
        finally:
            stop(proc)
    load = os.getloadavg()[0]
    print(f"web console, {args.loads} loads in fresh contexts (no cache), load {load:.2f} on {os.cpu_count()} CPUs")
    for key, label in (
        ("ready", "ready (tree drawn)"),
        ("connected", "events socket open"),
        ("dcl", "DOMContentLoaded"),
        ("load", "load event"),
    ):
        values = [s[key] for s in samples]
        print(f"  {label:20s} median {statistics.median(values):7.1f} ms   worst {max(values):7.1f} ms")
    kib = statistics.median(s["kib"] for s in samples)
    print(f"  fetched              median {kib:7.1f} KiB (goal: first load < 400 KiB, appears < 1000 ms)")


if __name__ == "__main__":
    main()
