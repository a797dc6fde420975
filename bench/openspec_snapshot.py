"""The OpenSpec endpoint against the CLI snapshot it replaces, on the same machine in the same run.

``python bench/openspec_snapshot.py`` measures, on the ``active-changes`` fixture
(``tests/fixtures/openspec/``, at its recorded mtimes) and on a generated
workspace with 50 changes and 20 main specs:

- the CLI snapshot: ``openspec list --json``, ``openspec list --specs --json`` and
  ``openspec status --all --json`` run one after the other from this process with
  ``subprocess.run`` (the way a server shelling out would run them), and
- ``GET /api/v1/workspaces/{id}/openspec`` over one keep-alive HTTP connection:
  *first* (the first call after start-up), *cold* (a file under ``openspec/``
  changed before every call, so everything is read and parsed again) and *warm*
  (nothing changed: the cache answers after a stat walk).

It prints medians and the ratios CLI/endpoint (target ≥ 50×) and writes
``bench/results/openspec-snapshot-<timestamp>.json``. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from harness import free_port, start_runtime, stop

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from tests.openspec_support import cli_env, copy_fixture  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
WORKSPACE_ID = "bench"
CLI_SNAPSHOT = [["list", "--json"], ["list", "--specs", "--json"], ["status", "--all", "--json"]]


def generate_workspace(root: Path, changes: int, specs: int) -> None:
    """A realistic workspace: ``changes`` changes at every stage of the workflow, ``specs`` main specs."""
    base = root / "openspec"
    (base / "changes" / "archive").mkdir(parents=True)
    (base / "config.yaml").write_text("schema: spec-driven\n")
    for s in range(specs):
        spec = base / "specs" / f"capability-{s:02d}" / "spec.md"
        spec.parent.mkdir(parents=True)
        requirements = "".join(
            f"### Requirement: R{r}\nThe system SHALL do {r}.\n\n#### Scenario: ok\n- **WHEN** x\n- **THEN** y\n\n"
            for r in range(1 + s % 6)
        )
        spec.write_text(
            f"# capability-{s:02d} Specification\n\n## Purpose\nWhat it is for.\n\n## Requirements\n{requirements}"
        )
    for c in range(changes):
        change = base / "changes" / f"change-{c:02d}"
        change.mkdir()
        (change / ".openspec.yaml").write_text("schema: spec-driven\ncreated: 2026-11-28\n")
        stage = c % 5
        if stage >= 1:
            (change / "proposal.md").write_text("## Why\nBecause.\n\n## What Changes\n- a change\n")
        if stage >= 2:
            delta = change / "specs" / f"capability-{c % specs:02d}" / "spec.md"
            delta.parent.mkdir(parents=True)
            delta.write_text("## ADDED Requirements\n### Requirement: New\nIt SHALL.\n\n#### Scenario: s\n- x\n")
        if stage >= 3:
            (change / "design.md").write_text("## Context\nx\n")
        if stage >= 3:
            tasks = "".join(f"- [{'x' if t < c % 9 else ' '}] {t}.1 Task {t}\n" for t in range(8))
            (change / "tasks.md").write_text(f"## 1. Work\n{tasks}")
    for a in range(5):
        archived = base / "changes" / "archive" / f"2026-11-0{a + 1}-old-change-{a}"
        archived.mkdir()
        (archived / "tasks.md").write_text("- [x] done\n")


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "min_ms": round(ordered[0], 3),
        "samples": len(ordered),
    }


def bench_workspace(
    name: str, workspace: Path, temp: Path, env: dict[str, str], cli: str, rounds: int, warm_rounds: int
) -> dict[str, Any]:
    port = free_port()
    proc = start_runtime(workspace, port, env, temp / f"wsruntime-{name}.log", WORKSPACE_ID)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def endpoint() -> dict[str, Any]:
            conn.request("GET", f"/api/v1/workspaces/{WORKSPACE_ID}/openspec")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"{name}: {response.status} {body[:300]!r}")
            return dict(json.loads(body))

        time.sleep(3)  # the runtime's background `openspec --version` is done
        first = timed(endpoint)
        state = endpoint()
        touched = workspace / "openspec" / "changes" / state["changes"][0]["name"]
        marker = touched / ".bench-touch"

        cold_ms, warm_ms, cli_ms = [], [], []
        for _ in range(rounds):
            marker.write_text(str(time.time_ns()))  # a file under openspec/ changed: the next call re-reads all
            started = time.perf_counter()
            endpoint()
            cold_ms.append((time.perf_counter() - started) * 1000)
            cli_ms.append(
                timed(
                    lambda: [
                        subprocess.run([cli, *args], cwd=workspace, env=env, capture_output=True, check=False)
                        for args in CLI_SNAPSHOT
                    ]
                )
            )
        marker.unlink()
        time.sleep(2.2)  # past the settle window: the next read is cached
        endpoint()
        for _ in range(warm_rounds):
            warm_ms.append(timed(endpoint))
        conn.close()
    finally:
        stop(proc)
    cli_median = statistics.median(cli_ms)
    result: dict[str, Any] = {
        "changes": len(state["changes"]),
        "specs": len(state["specs"]),
        "cli_snapshot": summarise(cli_ms),
        "endpoint_first_ms": round(first, 3),
        "endpoint_cold": summarise(cold_ms),
        "endpoint_warm": summarise(warm_ms),
    }
    result["ratio_cold"] = round(cli_median / statistics.median(cold_ms), 1)
    result["ratio_warm"] = round(cli_median / statistics.median(warm_ms), 1)
    result["ratio_first"] = round(cli_median / first, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="CLI snapshots and cold calls per workspace (default 7)")
    parser.add_argument("--warm-rounds", type=int, default=200, help="warm calls per workspace (default 200)")
    parser.add_argument("--changes", type=int, default=50, help="changes in the generated workspace (default 50)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspaces and server logs")
    opts = parser.parse_args()
    cli = shutil.which("openspec")
    if cli is None:
        raise SystemExit("the openspec CLI is not on PATH (npm install -g @fission-ai/openspec@1.13.2)")
    temp = Path(tempfile.mkdtemp(prefix="wsruntime-openspec-bench-"))
    home = temp / "home"
    home.mkdir()
    env = {**cli_env(str(home)), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    version = subprocess.run([cli, "--version"], env=env, capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()[0]
    print(f"openspec {version}; 1-minute load before: {load_before:.2f} on {os.cpu_count()} cores")
    results: dict[str, Any] = {}
    try:
        fixture = Path(copy_fixture("active-changes", str(temp)))
        generated = temp / "generated"
        generated.mkdir()
        generate_workspace(generated, opts.changes, 20)
        for name, workspace in (("active-changes", fixture), (f"generated-{opts.changes}", generated)):
            results[name] = bench_workspace(name, workspace, temp, env, cli, opts.rounds, opts.warm_rounds)
    finally:
        if not opts.keep:
            shutil.rmtree(temp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    print("\nmedians in ms; CLI = list + list --specs + status --all, run one after the other\n")
    print(f"{'workspace':<16}{'CLI':>10}{'first':>9}{'cold':>9}{'warm':>9}{'CLI/cold':>10}{'CLI/warm':>10}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['cli_snapshot']['median_ms']:>10.1f}{r['endpoint_first_ms']:>9.2f}"
            f"{r['endpoint_cold']['median_ms']:>9.2f}{r['endpoint_warm']['median_ms']:>9.2f}"
            f"{r['ratio_cold']:>9.0f}x{r['ratio_warm']:>9.0f}x"
        )
    print(f"\n1-minute load after: {load_after:.2f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS_DIR / f"openspec-snapshot-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "openspec": version,
                "rounds": opts.rounds,
                "warm_rounds": opts.warm_rounds,
                "load_before": load_before,
                "load_after": load_after,
                "python": platform.python_version(),
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                "results": results,
            },
            indent=2,
        )
    )
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
