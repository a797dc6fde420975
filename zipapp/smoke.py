"""CI's smoke test of the built pyz on every CPython 3.9–3.13 this machine has.

``python zipapp/smoke.py [dist/wsruntime.pyz]`` runs, for each interpreter,
``python -I wsruntime.pyz`` from an empty directory with a fresh HOME and a
cache shared by all of them (the first start is cold, the others reuse it), and
checks that it: prints ``--version``; answers ``/health`` with the pyz's build
id and psutil from the cache; does one file round trip (``PUT`` then ``GET
/api/v1/files/{path}``) and receives one WebSocket frame from ``/api/v1/ws`` —
each only when ``/openapi.json`` lists the route, since those modules may land
after this one; and exits 0 on SIGTERM without a traceback. Standard library
only (its WebSocket client is the ~40 lines below). Exit status 1 on any
failure; it talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PYZ = os.path.join(os.path.dirname(HERE), "dist", "wsruntime.pyz")
MINORS = range(9, 14)
TOKEN = "smoke-token-5e1f"
START_TIMEOUT_S = 60.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class SmokeError(Exception):
    """One check failed; the message says which and what was seen."""


def interpreters() -> Iterator[tuple[str, str]]:
    """(minor, path) for every CPython 3.9–3.13 under pyenv, plus the system python3 when in range."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    seen: set[str] = set()
    candidates = sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python")), key=_version_sort)
    candidates += [p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)]
    for path in candidates:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            out = subprocess.run(
                [path, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2], sys.implementation.name)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            continue
        if out[1] == "cpython" and int(out[0].split(".")[1]) in MINORS and out[0].startswith("3."):
            yield out[0], path


def _version_sort(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path.split("/versions/")[-1].split("/")[0])]


def request(
    port: int, method: str, path: str, body: bytes | None = None, token: str = TOKEN
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def websocket_first_frame(port: int, path: str, timeout: float = 15.0) -> dict[str, Any]:
    """Open a WebSocket (RFC 6455) and return its first text frame, parsed as JSON."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(4096)
            if not chunk:
                raise SmokeError(f"WebSocket {path}: connection closed during the handshake: {buffer!r}")
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        lines = head.decode("latin-1").split("\r\n")
        fields = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines[1:])}
        if not lines[0].startswith("HTTP/1.1 101") or fields.get("sec-websocket-accept") != accept:
            raise SmokeError(f"WebSocket {path}: no valid 101 answer: {head.decode(errors='replace')}")

        def read(n: int) -> bytes:
            nonlocal buffer
            while len(buffer) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    raise SmokeError(f"WebSocket {path}: closed before a frame arrived")
                buffer += chunk
            data, buffer = buffer[:n], buffer[n:]
            return data

        while True:
            first, second = read(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(read(2), "big")
            elif length == 127:
                length = int.from_bytes(read(8), "big")
            payload = read(length)
            opcode = first & 0x0F
            if opcode == 0x1:
                # A masked close frame (code 1000), as a client must send.
                mask = os.urandom(4)
                sock.sendall(bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8")))
                frame: dict[str, Any] = json.loads(payload)
                return frame
            if opcode == 0x8:
                raise SmokeError(f"WebSocket {path}: closed by the server: {payload!r}")


def check_interpreter(python: str, pyz: str, build_id: str, base: str, cache: str) -> list[str]:
    """Run every check against one interpreter; returns what it saw, raises SmokeError on a failure."""
    seen: list[str] = []
    empty = tempfile.mkdtemp(prefix="cwd-", dir=base)  # `python -I` from an empty directory
    workspace = tempfile.mkdtemp(prefix="ws-", dir=base)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSRUNTIME_", "PYTHON"))}
    env.update(HOME=tempfile.mkdtemp(prefix="home-", dir=base), XDG_CACHE_HOME=cache)

    version = subprocess.run(
        [python, "-I", pyz, "--version"], cwd=empty, env=env, capture_output=True, text=True, timeout=120
    )
    if version.returncode != 0 or f"build: {build_id}" not in version.stdout or "psutil: cache:" not in version.stdout:
        raise SmokeError(f"--version: status {version.returncode}\n{version.stdout}{version.stderr}")
    seen.append("--version")

    command = [python, "-I", pyz, "--host", "127.0.0.1", "--port", "0", "--workspace", workspace, "--token", TOKEN]
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=empty, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        port = wait_for_port(proc)
        status, body, _ = request(port, "GET", "/health")
        health = json.loads(body)
        runtime = health.get("runtime") or {}
        if status != 200 or health.get("status") != "ok":
            raise SmokeError(f"/health answered {status}: {body!r}")
        if (runtime.get("pyz") or {}).get("build_id") != build_id:
            raise SmokeError(f"/health does not name build {build_id}: {runtime}")
        if not str(runtime.get("psutil_source", "")).startswith("cache:"):
            raise SmokeError(f"/health: psutil did not come from the cache: {runtime.get('psutil_source')}")
        seen.append(f"/health {time.monotonic() - started:.2f}s after start")

        status, body, _ = request(port, "GET", "/openapi.json")
        paths = json.loads(body).get("paths", {}) if status == 200 else {}
        if "/api/v1/files/{path}" in paths:
            content = f"smoke from {python}\n".encode() + os.urandom(64)
            status, body, _ = request(port, "PUT", "/api/v1/files/smoke/round%20trip.bin", content)
            if status not in (200, 201):
                raise SmokeError(f"PUT /api/v1/files/smoke/round trip.bin answered {status}: {body!r}")
            status, body, _ = request(port, "GET", "/api/v1/files/smoke/round%20trip.bin")
            if status != 200 or body != content:
                raise SmokeError(f"GET after PUT answered {status} with {len(body)} bytes, not the {len(content)} sent")
            seen.append("file round trip")
        else:
            seen.append("file round trip SKIPPED (no /api/v1/files/{path} in /openapi.json yet)")
        if "/api/v1/ws" in paths:
            frame = websocket_first_frame(port, "/api/v1/ws")
            if not isinstance(frame.get("type"), str):
                raise SmokeError(f"WebSocket frame without a type: {frame}")
            seen.append(f"WebSocket frame {frame['type']!r}")
        else:
            seen.append("WebSocket frame SKIPPED (no /api/v1/ws in /openapi.json yet)")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if code != 0:
        raise SmokeError(f"exit status {code} after SIGTERM (expected 0)\n{stderr}")
    if "Traceback" in stderr:
        raise SmokeError(f"a traceback in the log:\n{stderr}")
    seen.append("SIGTERM → 0")
    return seen


def wait_for_port(proc: subprocess.Popen[bytes]) -> int:
    """Read the banner until its URL line; the port was chosen by the server (--port 0)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SmokeError(f"the runtime exited with {proc.wait()} before listening:\n{err}")
        match = re.search(r"URL:\s+http://127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    raise SmokeError(f"no URL line within {START_TIMEOUT_S:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("pyz", nargs="?", default=DEFAULT_PYZ, help="the pyz to test (default: dist/wsruntime.pyz)")
    parser.add_argument("--python", action="append", help="test only this interpreter (repeatable)")
    args = parser.parse_args(argv)
    pyz = os.path.abspath(args.pyz)
    with zipfile.ZipFile(pyz) as zf:
        build_id = json.loads(zf.read("manifest.json"))["build_id"]
    found = [("?", p) for p in args.python] if args.python else list(interpreters())
    if not args.python:
        for wanted in MINORS:
            if not any(v == f"3.{wanted}" for v, _ in found):
                print(f"CPython 3.{wanted}: not installed here, skipped")
    if not found:
        print("no CPython 3.9-3.13 found", file=sys.stderr)
        return 1
    failures = 0
    base = tempfile.mkdtemp(prefix="wsruntime-smoke-")
    try:
        cache = os.path.join(base, "cache")
        for minor, python in found:
            try:
                seen = check_interpreter(python, pyz, build_id, base, cache)
            except (SmokeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                failures += 1
                print(f"FAIL CPython {minor} ({python}): {exc}", flush=True)
            else:
                print(f"ok   CPython {minor} ({python}): " + ", ".join(seen), flush=True)
        root = os.path.join(cache, "wsruntime")
        leftovers = [n for n in os.listdir(root) if n.startswith(".tmp-")] if os.path.isdir(root) else []
        if leftovers:
            failures += 1
            print(f"FAIL staging directories left in the cache: {leftovers}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{os.path.basename(pyz)} build {build_id} on {len(found)} interpreters")
    print(f"smoke: {len(found) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
