"""Benchmark wsruntime against its peers with wrk, side by side in one run.

``python bench/run.py`` starts every target (wsruntime, a bare Tornado app, jupyter_server)
on a free port on 127.0.0.1, each with a fresh temporary workspace, waits until each answers,
drives each scenario against each target with the same wrk settings, prints a table and writes
``bench/results/<scenario>-<timestamp>.json``. Every server is stopped at the end (SIGTERM,
then SIGKILL), also on errors and Ctrl-C. Nothing here asserts timings; see bench/README.md.

New scenarios go into ``SCENARIOS``: a name, the request to send to each target (path, method,
body, headers) and optionally a ``prepare`` hook that fills each workspace before the servers start.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
REFERENCE = "wsruntime"  # the target every other one is compared with
STOP_GRACE_S = 5.0


class BenchError(Exception):
    """A failure that ends the run (or one target's part of it) with a message instead of a traceback."""


# -- what is measured ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP request as wrk repeats it; method and body other than a bodiless GET go through a Lua script."""

    path: str
    method: str = "GET"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: int = 200  # checked once before wrk runs; wrk itself counts non-2xx/3xx answers


@dataclass(frozen=True)
class Scenario:
    """A named benchmark: the equivalent request for each target (targets not listed are skipped)."""

    name: str
    description: str
    requests: dict[str, Request]
    prepare: Callable[[str, Path], None] | None = None  # (target name, workspace), before the servers start
    connections: int | None = None  # wrk's -c for this scenario (heavy requests), else --connections


PUT_4K = (b"0123456789abcdef" * 255 + b"wsruntime bench\n")[:4096]


def write_files_workspace(workspace: Path) -> None:
    """The Files scenarios' workspace: a 4 KiB and a 10 MB text file, a 10,000-entry directory (once)."""
    if (workspace / "dir10k").is_dir():
        return
    (workspace / "small.txt").write_bytes(PUT_4K)
    (workspace / "put.txt").write_bytes(PUT_4K)
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\n"
    (workspace / "big.txt").write_bytes((line * (10_000_000 // len(line) + 1))[:10_000_000])
    directory = workspace / "dir10k"
    directory.mkdir()
    for i in range(10_000):
        (directory / f"file-{i:05d}.txt").write_bytes(b"x" * (i % 100))


SCENARIOS: list[Scenario] = [
    Scenario(
        name="health",
        description="liveness: wsruntime GET /health (no token configured or sent) vs the same on a bare "
        "Tornado handler vs jupyter_server GET /api/status (auth disabled)",
        requests={
            "wsruntime": Request("/health"),
            "bare_tornado": Request("/health"),
            "jupyter_server": Request("/api/status"),
        },
    ),
    Scenario(
        name="file-get-small",
        description="read a 4 KiB text file: wsruntime GET /api/v1/files/small.txt (raw bytes) vs jupyter_server "
        "GET /api/contents/small.txt?content=1&format=text (its contents API)",
        requests={
            "wsruntime": Request("/api/v1/files/small.txt"),
            "jupyter_server": Request("/api/contents/small.txt?content=1&format=text&type=file"),
        },
        prepare=lambda target, workspace: write_files_workspace(workspace),
    ),
    Scenario(
        name="file-get-10mb",
        description="read a 10 MB text file: wsruntime GET /api/v1/files/big.txt (streamed raw bytes) vs "
        "jupyter_server GET /api/contents/big.txt?content=1&format=text (its contents API)",
        requests={
            "wsruntime": Request("/api/v1/files/big.txt"),
            "jupyter_server": Request("/api/contents/big.txt?content=1&format=text&type=file"),
        },
        prepare=lambda target, workspace: write_files_workspace(workspace),
    ),
    Scenario(
        name="file-get-10mb-raw",
        description="read a 10 MB file as raw bytes: wsruntime GET /api/v1/files/big.txt vs jupyter_server's "
        "raw file handler GET /files/big.txt (not its contents API; for reference)",
        requests={
            "wsruntime": Request("/api/v1/files/big.txt"),
            "jupyter_server": Request("/files/big.txt"),
        },
        prepare=lambda target, workspace: write_files_workspace(workspace),
    ),
    Scenario(
        name="list-10k",
        description="list a directory of 10,000 files: wsruntime GET /api/v1/files?path=dir10k vs jupyter_server "
        "GET /api/contents/dir10k?content=1 (2 connections: 50 queued 2 s listings would only measure queueing)",
        requests={
            "wsruntime": Request("/api/v1/files?path=dir10k"),
            "jupyter_server": Request("/api/contents/dir10k?content=1"),
        },
        prepare=lambda target, workspace: write_files_workspace(workspace),
        connections=2,
    ),
    Scenario(
        name="file-put-4k",
        description="overwrite a 4 KiB file: wsruntime PUT /api/v1/files/put.txt (raw body, atomic) vs "
        "jupyter_server PUT /api/contents/put.txt (JSON model, its default atomic writing)",
        requests={
            "wsruntime": Request("/api/v1/files/put.txt", method="PUT", body=PUT_4K),
            "jupyter_server": Request(
                "/api/contents/put.txt",
                method="PUT",
                body=json.dumps({"type": "file", "format": "text", "content": PUT_4K.decode()}).encode(),
                headers={"Content-Type": "application/json"},
            ),
        },
        prepare=lambda target, workspace: write_files_workspace(workspace),
    ),
]


# -- who is measured ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server to start: its command line for a port and workspace, and the path that says it is up."""

    name: str
    description: str
    command: Callable[[int, Path, argparse.Namespace], list[str]]
    ready_path: str
    env: Callable[[Path], dict[str, str]] | None = None  # extra environment, given the target's temp dir
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (e.g. a token)


def wsruntime_command(port: int, workspace: Path, opts: argparse.Namespace) -> list[str]:
    """wsruntime from this checkout, loopback only, no token, at the chosen log level."""
    return [
        sys.executable,
        str(ROOT / "wsruntime.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workspace",
        str(workspace),
        "--log-level",
        opts.wsruntime_log_level,
    ]


def bare_tornado_command(port: int, workspace: Path, opts: argparse.Namespace) -> list[str]:
    """The bare Tornado peer (it has no workspace; it runs in one anyway, like the others)."""
    return [sys.executable, str(BENCH_DIR / "peers" / "bare_tornado.py"), "--host", HOST, "--port", str(port)]


def jupyter_command(port: int, workspace: Path, opts: argparse.Namespace) -> list[str]:
    """jupyter_server 2.x with authentication off: empty token, no password, no port retries."""
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={workspace}",
        "--IdentityProvider.token=",  # 2.x name of the deprecated --ServerApp.token
        "--PasswordIdentityProvider.hashed_password=",  # 2.x name of the deprecated --ServerApp.password
        # API clients (a frontend with a token) never meet its XSRF check; wrk without cookies would.
        "--ServerApp.disable_check_xsrf=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # it refuses to start as root otherwise (containers)
    return command


def jupyter_env(tmp: Path) -> dict[str, str]:
    """Private Jupyter config, data and runtime directories: no user config leaks in, nothing leaks out."""
    return {
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
    }


TARGETS: list[Target] = [
    Target("wsruntime", "wsruntime from this checkout", wsruntime_command, "/health"),
    Target("bare_tornado", "one plain tornado.web.RequestHandler (bench/peers/)", bare_tornado_command, "/health"),
    Target("jupyter_server", "jupyter_server, auth disabled", jupyter_command, "/api/status", env=jupyter_env),
]


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    """A started target: its process, port, workspace and log file."""

    target: Target
    port: int
    workspace: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    command: list[str]
    spawned: float = field(default_factory=time.monotonic)
    startup_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server printed, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def free_port() -> int:
    """A port nothing listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(target: Target, tmp: Path) -> dict[str, str]:
    """The environment without any WSRUNTIME_* settings of the caller, unbuffered, plus the target's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
    env["PYTHONUNBUFFERED"] = "1"
    if target.env is not None:
        env.update(target.env(tmp))
    return env


def start_server(target: Target, tmp: Path, opts: argparse.Namespace) -> Server:
    """Start one target in its own session with output to a log file (a pipe nobody reads would block it)."""
    target_dir = tmp / target.name
    workspace = target_dir / "workspace"
    workspace.mkdir(parents=True)
    port = free_port()
    command = target.command(port, workspace, opts)
    log_path = target_dir / "server.log"
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            command,
            cwd=str(workspace),
            env=server_env(target, target_dir),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, not the servers: we stop them in order
        )
    return Server(target, port, workspace, log_path, proc, command)


def stop_server(server: Server) -> None:
    """SIGTERM the server's process group, SIGKILL it after STOP_GRACE_S, then reap it."""
    proc = server.proc
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        print(f"  {server.target.name} ignored SIGTERM for {STOP_GRACE_S:.0f}s: killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def http_request(port: int, request: Request, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    """One request straight to 127.0.0.1 (http.client: no proxy from the environment gets in the way)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(request.method, request.path, body=request.body, headers={**headers, **request.headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: Server, timeout: float) -> None:
    """Poll the target's ready path until it answers 200 and the server printed its URL; fail if it exits."""
    started = time.monotonic()
    probe = Request(server.target.ready_path)
    marker = f"http://{HOST}:{server.port}".encode()
    last_error = "no answer yet"
    while True:
        code = server.proc.poll()
        if code is not None:
            raise BenchError(f"{server.target.name} exited with status {code} while starting:\n{server.log_tail()}")
        try:
            status, _ = http_request(server.port, probe, server.target.headers, timeout=2.0)
            # The URL in its own output proves that what answers on this port is the server we started.
            if status == 200 and marker in server.log_path.read_bytes():
                server.startup_s = time.monotonic() - server.spawned
                return
            last_error = f"GET {probe.path} answered {status}"
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        if time.monotonic() - started > timeout:
            raise BenchError(
                f"{server.target.name} did not answer within {timeout:.0f}s ({last_error}):\n{server.log_tail()}"
            )
        time.sleep(0.1)


# -- wrk ----------------------------------------------------------------------------------


def lua_string(text: str) -> str:
    """A double-quoted Lua string literal; anything unusual becomes a decimal byte escape."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def write_lua_script(request: Request, directory: Path, label: str) -> Path | None:
    """The wrk script that sets method and body, or None when plain wrk does (a bodiless GET)."""
    if request.method == "GET" and request.body is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"-- generated by bench/run.py for {label}", f"wrk.method = {lua_string(request.method)}"]
    if request.body is not None:
        body_path = directory / f"{label}.body"
        body_path.write_bytes(request.body)  # read by the script: any size, any bytes
        lines += [
            f"local f = assert(io.open({lua_string(str(body_path))}, 'rb'))",
            "wrk.body = f:read('*a')",
            "f:close()",
        ]
    script = directory / f"{label}.lua"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


def wrk_command(
    opts: argparse.Namespace,
    url: str,
    headers: dict[str, str],
    script: Path | None,
    duration: int,
    connections: int | None = None,
) -> list[str]:
    """wrk with the run's threads and connections (or the scenario's), latency percentiles on."""
    connections = max(connections or opts.connections, opts.threads)
    command = [opts.wrk, "-t", str(opts.threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    command += ["--timeout", f"{opts.wrk_timeout}s"]  # a slow answer is measured, not dropped as a timeout
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    return command


_TIME_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's time units, in milliseconds
_METRIC = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"": 1.0, "K": 2.0**10, "M": 2.0**20, "G": 2.0**30, "T": 2.0**40, "P": 2.0**50}


def parse_time_ms(text: str) -> float:
    """``812.00us``, ``1.23ms``, ``2.00s``, ``1.50m`` → milliseconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(match.group(1)) * _TIME_MS[match.group(2)]


def parse_metric(text: str) -> float:
    """``3.67k`` → 3670.0 (wrk's per-thread Req/Sec column)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kMGTP]?)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk count: {text!r}")
    return float(match.group(1)) * _METRIC[match.group(2)]


def parse_bytes(text: str) -> float:
    """``1.32MB`` → bytes (wrk's units are binary)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)B", text.strip())
    if match is None:
        raise ValueError(f"not a wrk size: {text!r}")
    return float(match.group(1)) * _BINARY[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """The numbers of one ``wrk --latency`` run: totals, req/s, latency stats and percentiles, errors."""
    totals = re.search(r"^\s*(\d+) requests in (\S+), (\S+) read\s*$", output, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+(\S+)\s*$", output, re.MULTILINE)
    if totals is None or rps is None:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    latency: dict[str, float | None] = {"avg": None, "stdev": None, "max": None}
    stats = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+%\s*$", output, re.MULTILINE)
    if stats is not None:  # stdev is "-nan" after a single request: leave what does not parse as None
        for key, value in zip(("avg", "stdev", "max"), stats.groups()):
            with contextlib.suppress(ValueError):
                latency[key] = parse_time_ms(value)
    percentiles = {f"p{p}": parse_time_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.MULTILINE)}
    for key in ("p50", "p75", "p90", "p99"):
        if key not in percentiles:
            raise BenchError(f"wrk printed no {key} (was --latency given?):\n{output}")
    transfer = re.search(r"^Transfer/sec:\s+(\S+)\s*$", output, re.MULTILINE)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, socket_errors.groups()))) if socket_errors else {}
    )
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, **errors}
    errors["non_2xx_3xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return {
        "requests": int(totals.group(1)),
        "elapsed_s": parse_time_ms(totals.group(2)) / 1000.0,
        "bytes_read": parse_bytes(totals.group(3)),
        "requests_per_s": parse_metric(rps.group(1)),
        "transfer_bytes_per_s": parse_bytes(transfer.group(1)) if transfer else None,
        "latency_ms": {**latency, **percentiles},
        "errors": errors,
    }


def run_wrk(command: list[str], duration: int) -> str:
    """Run wrk to the end and return what it printed; a failure is a BenchError."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(command)}") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk failed with status {done.returncode}: {' '.join(command)}\n{done.stdout}{done.stderr}")
    return done.stdout


# -- one scenario -------------------------------------------------------------------------


def bench_target(scenario: Scenario, server: Server, opts: argparse.Namespace, scripts: Path) -> dict[str, Any]:
    """Check the request once, warm up, then the measured wrk run; the result record for the JSON."""
    request = scenario.requests[server.target.name]
    headers = {**server.target.headers, **request.headers}
    url = server.base_url + request.path
    record: dict[str, Any] = {
        "target": server.target.name,
        "url": url,
        "method": request.method,
        "headers": headers,
        "body_bytes": None if request.body is None else len(request.body),
    }
    status, answer = http_request(server.port, request, server.target.headers, timeout=float(opts.wrk_timeout))
    record["preflight"] = {"status": status, "body_bytes": len(answer)}
    if status != request.expect_status:
        raise BenchError(
            f"{request.method} {request.path} on {server.target.name} answered {status}, "
            f"expected {request.expect_status}: {answer[:300]!r}"
        )
    script = write_lua_script(request, scripts, f"{scenario.name}-{server.target.name}")
    if opts.warmup > 0:
        run_wrk(wrk_command(opts, url, headers, script, opts.warmup, scenario.connections), opts.warmup)
    command = wrk_command(opts, url, headers, script, opts.duration, scenario.connections)
    output = run_wrk(command, opts.duration)
    record.update(wrk_command=command, **parse_wrk(output), wrk_output=output)
    return record


def ratio(reference: dict[str, Any] | None, record: dict[str, Any]) -> float | None:
    """wsruntime's req/s over this target's (above 1: wsruntime is faster)."""
    if reference is None or record is reference or not record.get("requests_per_s"):
        return None
    return float(reference["requests_per_s"]) / float(record["requests_per_s"])


def format_table(records: list[dict[str, Any]], failures: dict[str, str]) -> str:
    """The printed table: target, req/s, p50, p99 and the wsruntime/peer ratio of req/s."""
    reference = next((r for r in records if r["target"] == REFERENCE), None)
    rows = [("target", "req/s", "p50", "p99", "wsruntime/peer")]
    for record in records:
        lat = record["latency_ms"]
        factor = ratio(reference, record)
        rows.append(
            (
                record["target"],
                f"{record['requests_per_s']:.1f}",
                f"{lat['p50']:.2f} ms",
                f"{lat['p99']:.2f} ms",
                "(reference)" if record is reference else "n/a" if factor is None else f"{factor:.2f}x",
            )
        )
    rows += [(name, "failed", "-", "-", "-") for name in failures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    for record in records:
        errors = {k: v for k, v in record["errors"].items() if v}
        if errors:
            detail = ", ".join(f"{k} {v}" for k, v in errors.items())
            notes.append(f"  ! {record['target']}: {detail} (of {record['requests']} requests)")
    notes += [f"  ! {name}: {message.splitlines()[0]}" for name, message in failures.items()]
    return "\n".join(lines + notes)


def run_scenario(
    scenario: Scenario, servers: dict[str, Server], opts: argparse.Namespace, tmp: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every selected target in turn (the reference first); a failing target is reported, the rest still run."""
    records: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for name, server in servers.items():
        if name not in scenario.requests:
            continue
        print(f"  {scenario.name}: {name} ...", end="", flush=True)
        try:
            record = bench_target(scenario, server, opts, tmp / "wrk")
        except (BenchError, OSError) as exc:
            print(" failed", flush=True)
            failures[name] = str(exc)
            print(f"    {exc}", file=sys.stderr)
            continue
        print(f" {record['requests_per_s']:.1f} req/s", flush=True)
        records.append(record)
    return records, failures


# -- the run ------------------------------------------------------------------------------


def quiet(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a short informational command, capturing its output (raises OSError or TimeoutExpired)."""
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)


def tool_version(command: list[str]) -> str | None:
    """The first line a tool prints about itself, or None."""
    try:
        done = quiet(command)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def git_state() -> dict[str, Any]:
    """The checkout's commit (None before the first one) and whether it has uncommitted changes."""
    state: dict[str, Any] = {"git_commit": None, "git_dirty": None}
    try:
        head = quiet(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", "HEAD"])
        status = quiet(["git", "-C", str(ROOT), "status", "--porcelain"])
    except (OSError, subprocess.TimeoutExpired):
        return state
    if head.returncode == 0:
        state["git_commit"] = head.stdout.strip()
    if status.returncode == 0:
        state["git_dirty"] = bool(status.stdout.strip())
    return state


def package_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wsruntime_version() -> str | None:
    """``__version__`` from this checkout, read rather than imported."""
    try:
        text = (ROOT / "wsruntime_ext" / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^__version__ = [\"']([^\"']+)[\"']", text, re.MULTILINE)
    return match.group(1) if match else None


def environment(opts: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on besides the code: machine, versions, settings."""
    return {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu_pinning": None,
            "note": "wrk and the servers share the machine's cores; nothing is pinned",
        },
        "versions": {
            "python": platform.python_version(),
            "wsruntime": wsruntime_version(),
            **git_state(),
            "tornado": package_version("tornado"),
            "jupyter_server": package_version("jupyter_server"),
            "wrk": tool_version([opts.wrk, "-v"]),
        },
        "settings": {
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "connections": opts.connections,
            "threads": opts.threads,
            "wsruntime_log_level": opts.wsruntime_log_level,
        },
    }


def write_results(scenario: Scenario, started: time.struct_time, payload: dict[str, Any]) -> Path:
    """``bench/results/<scenario>-<UTC timestamp>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{scenario.name}-{time.strftime('%Y%m%dT%H%M%SZ', started)}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def select(only: Sequence[str]) -> tuple[list[Scenario], list[Target]]:
    """``--only`` names scenarios and/or targets; what it does not restrict runs in full."""
    scenario_names = {s.name for s in SCENARIOS}
    target_names = {t.name for t in TARGETS}
    unknown = [n for n in only if n not in scenario_names | target_names]
    if unknown:
        known = ", ".join(sorted(scenario_names)) + "; targets: " + ", ".join(t.name for t in TARGETS)
        raise BenchError(f"unknown --only {', '.join(unknown)} (scenarios: {known})")
    wanted_scenarios = [n for n in only if n in scenario_names]
    wanted_targets = [n for n in only if n in target_names]
    scenarios = [s for s in SCENARIOS if not wanted_scenarios or s.name in wanted_scenarios]
    targets = [t for t in TARGETS if not wanted_targets or t.name in wanted_targets]
    targets = [t for t in targets if any(t.name in s.requests for s in scenarios)]
    if not targets:
        raise BenchError("nothing to run: no selected scenario has a request for a selected target")
    return scenarios, targets


def seconds(text: str) -> int:
    """``10``, ``10s`` or ``2m`` → whole seconds, for wrk's ``-d``."""
    match = re.fullmatch(r"(\d+)\s*([sm]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 10, 10s or 2m)")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark wsruntime against a bare Tornado app and jupyter_server with wrk.",
    )
    parser.add_argument("--duration", type=seconds, default=10, help="measured seconds per target (default: 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default: 50)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: 2)")
    parser.add_argument(
        "--warmup", type=seconds, default=2, help="unmeasured wrk seconds before each run, 0 for none (default: 2)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this scenario or target; repeatable (scenarios: "
        + ", ".join(s.name for s in SCENARIOS)
        + "; targets: "
        + ", ".join(t.name for t in TARGETS)
        + ")",
    )
    parser.add_argument(
        "--wsruntime-log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="wsruntime's --log-level; at info (its default) it logs every request (default: warning)",
    )
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for each server (60)")
    parser.add_argument(
        "--wrk-timeout", type=seconds, default=30, help="wrk's --timeout: slower answers count as errors (default: 30)"
    )
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="the wrk binary (default: from PATH)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (workspaces, server logs, scripts)")
    opts = parser.parse_args(argv)
    if opts.duration < 1:
        parser.error("--duration must be at least 1s")
    if opts.threads < 1 or opts.connections < opts.threads:
        parser.error("need --threads >= 1 and --connections >= --threads (wrk gives every thread a connection)")
    return opts


def raise_interrupt(signum: int, frame: Any) -> NoReturn:
    """SIGTERM behaves like Ctrl-C, so the servers are still stopped."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def running_servers(targets: list[Target], tmp: Path, opts: argparse.Namespace) -> Iterator[dict[str, Server]]:
    """Start all targets side by side, wait until each answers; stop every one that started on the way out."""
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for target in targets:
            server = start_server(target, tmp, opts)
            stack.callback(stop_server, server)
            servers[target.name] = server
        for server in servers.values():
            wait_ready(server, opts.start_timeout)
            print(f"  {server.target.name} up on {server.base_url} after {server.startup_s:.1f}s", flush=True)
        yield servers


def main(argv: Sequence[str] | None = None) -> int:
    """Run every selected scenario against every selected target; 0 when all of them ran."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    if shutil.which(opts.wrk) is None:
        print(f"bench: error: wrk not found ({opts.wrk}); install it (apt-get install wrk)", file=sys.stderr)
        return 2
    try:
        scenarios, targets = select(opts.only)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    env = environment(opts)
    print(
        f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s --latency (warm-up {opts.warmup}s) on "
        f"{os.cpu_count()} CPU cores shared by wrk and the servers (no pinning); "
        f"wsruntime --log-level {opts.wsruntime_log_level}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="wsruntime-bench-"))
    failed = False
    try:
        with running_servers(targets, tmp, opts) as servers:
            for scenario in scenarios:
                if scenario.prepare is not None:
                    for name, server in servers.items():
                        scenario.prepare(name, server.workspace)
                started = time.gmtime()
                load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None  # other load skews it
                records, failures = run_scenario(scenario, servers, opts, tmp)
                failed = failed or bool(failures)
                print(f"\nscenario {scenario.name}: {scenario.description}")
                print(format_table(records, failures))
                payload = {
                    "scenario": scenario.name,
                    "description": scenario.description,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
                    "loadavg_before": load_before,
                    **env,
                    "servers": {
                        name: {"command": s.command, "port": s.port, "startup_s": round(s.startup_s, 3)}
                        for name, s in servers.items()
                        if name in scenario.requests
                    },
                    "results": records,
                    "failures": failures,
                }
                print(f"results: {write_results(scenario, started, payload).relative_to(ROOT)}\n", flush=True)
    except BenchError as exc:
        print(f"\nbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if opts.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
