"""What the benchmarks share: a free loopback port, and a wsruntime started as its own process and stopped again."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nothing listens on right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_runtime(
    workspace: Path, port: int, env: dict[str, str], log: Path, workspace_id: str, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``wsruntime.py`` on ``port`` in its own session, its output in ``log``; returns once /health answers."""
    command = [sys.executable, str(ROOT / "wsruntime.py"), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workspace", str(workspace), "--workspace-id", workspace_id, "--log-level", "warning", *extra]
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"wsruntime did not start; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the runtime's process group, SIGKILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
