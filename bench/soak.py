"""The soak-and-chaos run: a busy workspace for a bounded time, with the runtime SIGKILLed and restarted.

    python3 bench/soak.py                   # 10 minutes
    python3 bench/soak.py --minutes 2       # a short proof
    python3 bench/soak.py --kill-every 60 --files 20000

Everything runs on loopback against one ``wsruntime.py`` process on a fresh workspace of ``--files`` small
files (the start-up on a big tree is timed at every restart). The load, all at once:

- HTTP workers: ``If-Match`` chains of writes on shared files (each write's content names itself and is
  checkable whole), reads, listings, multipart uploads of several parts, settings writes; a slow 4 MiB PUT
  (64 KiB every 50 ms) always in flight, so that every kill lands mid-body;
- event sockets on ``WS /api/v1/ws``: fast ones (every frame of a connection must follow the previous seq),
  slow ones, stalled ones that never read, and silent ones on a quiet topic that neither read nor answer
  pings (the runtime must close the last three kinds with 1013: by backlog, or by the ping timeout);
- an agent session every 10 s with the fake agent (tests/fake_agent.py), two stream clients each, every
  third one DELETEd; a script run every 6 s, every third one cancelled;
- a SIGKILL of the runtime every ``--kill-every`` seconds and a restart on the same workspace.

After each restart (load paused) and at the end it checks: no temporary file left anywhere, every
acknowledged write reads back (a write whose answer was lost to the kill may have landed too, whole),
every acknowledged upload and big file is there whole, settings hold the last acknowledged value, sessions
and runs that were cut short read ``interrupted``, no process of the killed runtime is left. It reports
request counts, 5xx (there must be none), event frames and gaps, closes by code, the runtime's own
counters, restart times, and RSS and descriptors over each life of the runtime. Exit status 1 when a check
failed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from harness import free_port  # noqa: E402

from tests.rawws import CLOSE, PING, PONG, TEXT, RawWebSocket  # noqa: E402

FAKE_AGENT = ROOT / "tests" / "fake_agent.py"
HOST = "127.0.0.1"
SHARED = [f"shared/f{i:02d}.txt" for i in range(12)]
TICK_SCRIPT = "import time\nfor i in range(40):\n    print('tick', i, flush=True)\n    time.sleep(0.05)\n"


def content(write_id: str, size: int) -> bytes:
    """A write's body: it names itself and its size, then bytes derived from its id (torn or mixed shows)."""
    head = f"{write_id} {size}\n".encode()
    block = hashlib.sha256(write_id.encode()).hexdigest().encode()
    body = (block * (size // len(block) + 1))[: max(0, size - len(head))]
    return head + body


def identify(data: bytes) -> str | None:
    """The id of a body made by :func:`content`, or None when it is not one whole."""
    head, _, _ = data.partition(b"\n")
    try:
        write_id, size = head.decode().split(" ")
    except ValueError:
        return None
    return write_id if data == content(write_id, int(size)) else None


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="wsrt-soak-"))
        self.workspace = self.base / "ws"
        self.home = self.base / "home"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.problems: list[str] = []
        self.counts: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.busy = 0  # workers inside an operation
        # The write model: per shared file the last acknowledged (id, etag, time) and writes of unknown fate.
        self.acked: dict[str, tuple[str, str, float]] = {}
        self.unknown: dict[str, list[tuple[str, float]]] = {p: [] for p in SHARED}
        self.sent_ids: set[str] = set()
        self.uploads_acked: list[dict[str, str]] = []
        self.big_acked: list[tuple[str, str]] = []
        self.settings_acked: tuple[str, float] | None = None
        self.settings_unknown: list[tuple[str, float]] = []
        self.lives: list[dict[str, Any]] = []
        self.restarts: list[float] = []
        self.temps_left_by_kills = 0
        self.session_ids: list[str] = []
        self.run_ids: list[str] = []

    # -- the runtime --------------------------------------------------------------------------

    def prepare(self) -> None:
        (self.workspace / ".wsruntime").mkdir(parents=True)
        self.home.mkdir()
        (self.workspace / ".wsruntime" / "scripts.json").write_text(
            json.dumps({"tick": {"command": [sys.executable, "-c", TICK_SCRIPT]}})
        )
        for name in ("shared", "big", "up"):
            (self.workspace / name).mkdir()
        for i in range(self.args.files):  # the big tree a start must not walk
            directory = self.workspace / "tree" / f"d{i // 500:03d}"
            if i % 500 == 0:
                directory.mkdir(parents=True)
            (directory / f"f{i}.txt").write_bytes(b"x")

    def start_runtime(self) -> float:
        command = [sys.executable, str(ROOT / "wsruntime.py"), "--host", HOST, "--port", str(self.port)]
        command += ["--workspace", str(self.workspace), "--home", str(self.home), "--log-level", "warning"]
        command += ["--claude-bin", str(FAKE_AGENT), "--max-sessions", "50"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
        log = (self.base / "runtime.log").open("ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + 60
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/health", count=False)[0] == 200:
                    elapsed = time.monotonic() - started
                    self.lives.append({"pid": self.proc.pid, "samples": [], "health": {}})
                    return elapsed
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"the runtime did not start; see {self.base / 'runtime.log'}")

    def kill_runtime(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)  # the runtime alone: its children must be dealt with by the next
        self.proc.wait()

    # -- HTTP -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        count: bool = True,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            if count:
                with self.lock:
                    self.statuses["connection error"] += 1
            raise OSError(str(exc)) from None
        finally:
            conn.close()
        if count:
            with self.lock:
                self.statuses[str(response.status)] += 1
                if response.status >= 500:
                    self.server_errors.append(f"{method} {path} → {response.status} {data[:200]!r}")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        print("PROBLEM:", text, flush=True)

    # -- load: HTTP workers ------------------------------------------------------------------

    def operation(self) -> Any:
        """A context for one operation: the chaos thread waits for none to be running while it checks."""
        soak = self

        class Op:
            def __enter__(self) -> None:
                while soak.paused.is_set() and not soak.stop.is_set():
                    time.sleep(0.05)
                with soak.lock:
                    soak.busy += 1

            def __exit__(self, *exc: object) -> None:
                with soak.lock:
                    soak.busy -= 1

        return Op()

    def worker(self, number: int) -> None:
        rng = random.Random(number)
        while not self.stop.is_set():
            with self.operation():
                try:
                    roll = rng.random()
                    if roll < 0.5:
                        self.chained_write(rng)
                    elif roll < 0.7:
                        self.read_back(rng)
                    elif roll < 0.8:
                        status = self.request("GET", "/api/v1/files?path=shared&hidden=true")[0]
                        self.expect(status == 200, f"listing → {status}")
                    elif roll < 0.9:
                        self.upload(rng)
                    elif number == 0:
                        self.settings_write()
                except OSError:
                    time.sleep(0.2)  # the runtime is down: try again once it is back
            time.sleep(self.args.pause)

    def expect(self, ok: bool, text: str) -> None:
        if not ok:
            self.problem(text)

    def chained_write(self, rng: random.Random) -> None:
        path = rng.choice(SHARED)
        status, headers, data = self.request("GET", f"/api/v1/files/{path}")
        if status == 200:
            self.check_known(path, data)
            condition = {"If-Match": headers["etag"]}
        else:
            self.expect(status == 404, f"GET {path} → {status}")
            condition = {"If-None-Match": "*"}
        write_id = uuid.uuid4().hex
        with self.lock:
            self.sent_ids.add(write_id)
        body = content(write_id, rng.choice([100, 2000, 30000, 200000]))
        sent_at = time.monotonic()
        try:
            status, headers, _ = self.request("PUT", f"/api/v1/files/{path}", body, condition)
        except OSError:
            with self.lock:
                self.unknown[path].append((write_id, sent_at))
            raise
        if status in (200, 201):
            with self.lock:
                self.acked[path] = (write_id, headers["etag"], time.monotonic())
                self.counts["writes acknowledged"] += 1
        elif status == 412:
            with self.lock:
                self.counts["writes refused (412)"] += 1
        else:
            self.problem(f"PUT {path} → {status}")

    def check_known(self, path: str, data: bytes) -> None:
        write_id = identify(data)
        if write_id is None:
            self.problem(f"{path}: a torn or foreign content ({len(data)} bytes)")
        elif write_id not in self.sent_ids:
            self.problem(f"{path}: content of a write never sent")

    def read_back(self, rng: random.Random) -> None:
        path = rng.choice(SHARED)
        status, _, data = self.request("GET", f"/api/v1/files/{path}")
        if status == 200:
            self.check_known(path, data)
            with self.lock:
                self.counts["reads checked"] += 1

    def upload(self, rng: random.Random) -> None:
        folder = f"up/{uuid.uuid4().hex[:12]}"
        parts = {f"p{i}.bin": content(uuid.uuid4().hex, rng.choice([1000, 50000, 300000])) for i in range(3)}
        boundary = "soak" + uuid.uuid4().hex
        body = b""
        for name, data in parts.items():
            body += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n\r\n'.encode()
                + data
                + b"\r\n"
            )
        body += f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status = self.request("POST", f"/api/v1/files/upload?path={folder}", body, headers)[0]
        if status == 201:
            with self.lock:
                self.uploads_acked.append({f"{folder}/{n}": identify(d) or "" for n, d in parts.items()})
                self.counts["uploads acknowledged"] += 1
        else:
            self.problem(f"upload → {status}")

    def settings_write(self) -> None:
        value = uuid.uuid4().hex
        body = json.dumps({"settings": {"env": {"SOAK": value}}}).encode()
        sent_at = time.monotonic()
        try:
            status = self.request("PUT", "/api/v1/settings?scope=project", body)[0]
        except OSError:
            self.settings_unknown.append((value, sent_at))
            raise
        if status == 200:
            self.settings_acked = (value, time.monotonic())
            self.counts["settings acknowledged"] += 1
        else:
            self.problem(f"settings PUT → {status}")

    def trickler(self) -> None:
        """A 4 MiB PUT at 64 KiB every 50 ms, always: every kill lands in the middle of one."""
        n = 0
        while not self.stop.is_set():
            with self.operation():
                n += 1
                path = f"big/b{n}.bin"
                write_id = uuid.uuid4().hex
                data = content(write_id, 4 << 20)
                try:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                    conn.putrequest("PUT", f"/api/v1/files/{path}")
                    conn.putheader("Content-Length", str(len(data)))
                    conn.endheaders()
                    for i in range(0, len(data), 64 << 10):
                        if self.stop.is_set():
                            conn.close()  # the end of the run: this one is abandoned
                            return
                        conn.send(data[i : i + (64 << 10)])
                        time.sleep(0.05)
                    status = conn.getresponse().status
                    conn.close()
                except (OSError, http.client.HTTPException):
                    with self.lock:
                        self.statuses["connection error"] += 1
                    time.sleep(0.2)
                    continue
                with self.lock:
                    self.statuses[str(status)] += 1
                if status == 201:
                    self.big_acked.append((path, write_id))
                elif not self.stop.is_set():
                    self.problem(f"big PUT → {status}")

    # -- load: event sockets ------------------------------------------------------------------

    def events_client(self, kind: str) -> None:
        """``fast`` reads everything, ``slow`` reads a frame every 10 ms and resumes with ``?after=``,
        ``stalled`` never reads for 50 s, ``silent`` neither, on a topic nothing publishes (a client whose
        network is gone: only the ping timeout can tell).

        A fast client connects afresh each time: a resumed stream has gaps where ephemeral events
        (system_stats) were, so only a fresh connection can be held to "every seq follows the previous".
        """
        after: int | None = None
        while not self.stop.is_set():
            query = f"?after={after}" if after is not None and kind == "slow" else ""
            query = "?topics=git_changed" if kind == "silent" else query
            try:
                ws = RawWebSocket(HOST, self.port, "/api/v1/ws" + query, timeout=60)
            except OSError:
                time.sleep(0.5)
                continue
            previous: int | None = None
            try:
                if kind in ("stalled", "silent"):
                    end = time.monotonic() + 50  # the runtime closes it within a ping interval + 20 s
                    while time.monotonic() < end and not self.stop.is_set():
                        time.sleep(0.5)
                while not self.stop.is_set():
                    frame = ws.read_frame()
                    if frame is None:
                        self.count_close(kind, "dropped")
                        break
                    opcode, payload = frame
                    if opcode == TEXT:
                        event = json.loads(payload)
                        seq = event.get("seq")
                        with self.lock:
                            self.counts[f"event frames ({kind})"] += 1
                        if event["type"] == "hello":
                            previous = seq if kind == "fast" else None
                        elif event["type"] == "resync":
                            previous = None
                        elif event["type"] != "hello" and isinstance(seq, int):
                            if kind == "fast" and previous is not None and seq != previous + 1:
                                with self.lock:
                                    self.counts["event gaps (fast, in one connection)"] += 1
                            previous = seq
                            after = seq
                        if kind == "slow":
                            time.sleep(0.01)
                    elif opcode == PING and kind in ("fast", "slow"):
                        ws.send_frame(PONG, payload)
                    elif opcode == CLOSE:
                        self.count_close(kind, str(ws.close_code))
                        break
            except OSError:
                self.count_close(kind, "reset")
            finally:
                ws.close()
            if kind in ("stalled", "silent"):
                after = None  # it read nothing worth resuming
            time.sleep(0.2)

    def count_close(self, kind: str, how: str) -> None:
        with self.lock:
            self.closes[f"{kind}: {how}"] += 1

    # -- load: agent sessions and script runs --------------------------------------------------

    def sessions(self) -> None:
        n = 0
        while not self.stop.wait(10):
            n += 1
            with self.operation():
                try:
                    self.one_session(delete=n % 3 == 0)
                except OSError:
                    pass

    def one_session(self, delete: bool) -> None:
        body = json.dumps({"prompt": "paced 100 40"}).encode()
        status, _, data = self.request("POST", "/api/v1/agent-sessions", body, {"Content-Type": "application/json"})
        if status != 201:
            self.problem(f"session → {status} {data[:200]!r}")
            return
        sid = json.loads(data)["id"]
        self.session_ids.append(sid)
        results: list[tuple[list[dict[str, Any]], int | None]] = []

        def stream(delay: float) -> None:
            time.sleep(delay)
            try:
                ws = RawWebSocket(HOST, self.port, f"/api/v1/ws/agent-sessions/{sid}?after=0", timeout=60)
            except OSError:
                results.append(([], None))
                return
            frames = []
            try:
                while True:
                    frame = ws.read_frame()
                    if frame is None:
                        break
                    if frame[0] == TEXT:
                        frames.append(json.loads(frame[1]))
                    elif frame[0] == PING:
                        ws.send_frame(PONG, frame[1])
                    elif frame[0] == CLOSE:
                        break
            except OSError:
                pass
            finally:
                ws.close()
            results.append((frames, ws.close_code))

        clients = [threading.Thread(target=stream, args=(d,)) for d in (0.0, 1.0)]
        for client in clients:
            client.start()
        if delete:
            time.sleep(1.2)
            self.request("DELETE", f"/api/v1/agent-sessions/{sid}")
        for client in clients:
            client.join(60)
        for frames, code in results:
            if code is None:
                with self.lock:
                    self.counts["session streams cut by a kill"] += 1
                continue
            seqs = [f.get("seq") for f in frames]
            finals = [f for f in frames if f.get("type") == "status"]
            ok = seqs == list(range(1, len(seqs) + 1)) and len(finals) >= 1 and frames[-1]["type"] == "status"
            ok = ok and frames[-1]["status"] in ("completed", "terminated", "failed") and code == 1000
            self.expect(ok, f"session {sid}: stream ended badly (close {code}, last {frames[-1:]})")
            with self.lock:
                self.counts[f"session streams ended {frames[-1]['status'] if frames else '?'}"] += 1

    def scripts(self) -> None:
        n = 0
        while not self.stop.wait(6):
            n += 1
            with self.operation():
                try:
                    status, _, data = self.request("POST", "/api/v1/scripts/custom:tick/run", b"{}")
                    if status != 202:
                        self.problem(f"script run → {status} {data[:200]!r}")
                        continue
                    run_id = json.loads(data)["run_id"]
                    self.run_ids.append(run_id)
                    if n % 3 == 0:
                        time.sleep(0.5)
                        self.request("DELETE", f"/api/v1/scripts/runs/{run_id}")
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline:
                        record = json.loads(self.request("GET", f"/api/v1/scripts/runs/{run_id}")[2])
                        if record["status"] != "running":
                            with self.lock:
                                self.counts[f"script runs {record['status']}"] += 1
                            break
                        time.sleep(0.3)
                except OSError:
                    pass

    # -- measurements -----------------------------------------------------------------------

    def sampler(self) -> None:
        while not self.stop.wait(5):
            proc, life = self.proc, self.lives[-1] if self.lives else None
            if proc is None or life is None or proc.poll() is not None:
                continue
            try:
                process = psutil.Process(proc.pid)
                rss, fds = process.memory_info().rss, process.num_fds()
                if rss and proc.poll() is None:  # not a process killed meanwhile
                    life["samples"].append((time.monotonic(), rss, fds))
                status, _, data = self.request("GET", "/health", count=False, timeout=5)
                if status == 200:
                    life["health"] = json.loads(data).get("events", {})
            except (psutil.Error, OSError, ValueError):
                continue

    # -- checks -------------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        found = []
        for top, _dirs, names in os.walk(self.workspace):
            found += [os.path.join(top, n) for n in names if n.endswith(".wsrt-tmp")]
        for top, _dirs, names in os.walk(self.home):
            found += [os.path.join(top, n) for n in names if n.endswith(".wsrt-tmp")]
        return found

    def check_after_restart(self) -> None:
        """With the load paused: nothing left behind, nothing acknowledged lost, nothing of the old runtime alive."""
        left = self.leftovers()
        self.expect(not left, f"temporaries left after the restart: {left[:5]}")
        for folder in ("shared", "big"):
            listing = json.loads(self.request("GET", f"/api/v1/files?path={folder}&hidden=true")[2])
            names = [e["name"] for e in listing["entries"] if "wsrt-tmp" in e["name"]]
            self.expect(not names, f"the listing of {folder} shows temporaries: {names[:5]}")
        for path in SHARED:
            status, headers, data = self.request("GET", f"/api/v1/files/{path}")
            acked = self.acked.get(path)
            if status == 404:
                self.expect(acked is None, f"{path}: acknowledged, now gone")
                continue
            write_id = identify(data)
            allowed = {acked[0]} if acked else set()
            since = acked[2] if acked else 0.0
            allowed |= {w for w, t in self.unknown[path] if t >= since - 1}
            self.expect(write_id in allowed, f"{path}: holds {write_id}, acknowledged {acked and acked[0]}")
            if write_id is not None:
                self.acked[path] = (write_id, headers["etag"], time.monotonic())
            self.unknown[path] = []
            self.counts["files checked after restarts"] += 1
        for upload in self.uploads_acked[-20:]:
            for path, write_id in upload.items():
                status, _, data = self.request("GET", f"/api/v1/files/{path}")
                self.expect(status == 200 and identify(data) == write_id, f"acknowledged upload {path} lost")
        for path, write_id in self.big_acked[-3:]:
            status, _, data = self.request("GET", f"/api/v1/files/{path}")
            self.expect(status == 200 and identify(data) == write_id, f"acknowledged big write {path} lost")
        if self.settings_acked is not None:
            env = json.loads(self.request("GET", "/api/v1/settings?scope=project")[2])["settings"].get("env", {})
            allowed = {self.settings_acked[0]} | {
                v for v, t in self.settings_unknown if t >= self.settings_acked[1] - 1
            }
            self.expect(env.get("SOAK") in allowed, f"settings: {env.get('SOAK')} is not the acknowledged value")
            self.settings_unknown = []
        for sid in self.session_ids[-6:]:
            record = json.loads(self.request("GET", f"/api/v1/agent-sessions/{sid}")[2])
            self.expect(record.get("status") != "running", f"session {sid} still running after the kill")
        time.sleep(2)  # the new runtime kills what the old one left (script trees); agents die with their pipes
        self.expect(not self.orphans(), f"processes of the killed runtime still running: {self.orphans()}")

    def orphans(self) -> list[str]:
        """Processes started for this workspace that the current runtime does not own."""
        current = self.proc.pid if self.proc is not None and self.proc.poll() is None else None
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if str(FAKE_AGENT) not in cmdline and "print('tick'" not in cmdline:
                    continue
                if not (process.info["cwd"] or "").startswith(str(self.workspace)):
                    continue
                if current is not None and any(p.pid == current for p in process.parents()):
                    continue
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                found.append(f"{process.pid} {cmdline[:80]}")
            except psutil.Error:
                continue
        return found

    def quiesce(self) -> None:
        self.paused.set()
        deadline = time.monotonic() + 60
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> int:
        self.prepare()
        print(f"soak: {self.args.minutes} min, SIGKILL every {self.args.kill_every} s, workspace {self.workspace}")
        self.restarts.append(self.start_runtime())
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.args.workers)]
        threads.append(threading.Thread(target=self.trickler, daemon=True))
        kinds = [("fast", self.args.fast), ("slow", self.args.slow), ("stalled", self.args.stalled)]
        for kind, number in [*kinds, ("silent", self.args.silent)]:
            threads += [threading.Thread(target=self.events_client, args=(kind,), daemon=True) for _ in range(number)]
        threads += [threading.Thread(target=f, daemon=True) for f in (self.sessions, self.scripts, self.sampler)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        end = started + self.args.minutes * 60
        next_kill = started + self.args.kill_every
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_kill and time.monotonic() < end - 10:
                self.kill_runtime()
                self.quiesce()
                self.temps_left_by_kills += len(self.leftovers())
                elapsed = self.start_runtime()
                self.restarts.append(elapsed)
                print(f"  {time.monotonic() - started:6.0f} s: SIGKILL, restarted in {elapsed:.2f} s", flush=True)
                self.check_after_restart()
                self.paused.clear()
                next_kill = time.monotonic() + self.args.kill_every
        self.stop.set()
        self.quiesce()
        deadline = time.monotonic() + 10
        for thread in threads:  # stalled clients may sleep on: they are daemons
            thread.join(max(0.0, deadline - time.monotonic()))
        self.check_after_restart()
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(15)
        time.sleep(1)
        self.expect(not self.orphans(), f"processes left after the final stop: {self.orphans()}")
        self.expect(not self.leftovers(), f"temporaries left after the final stop: {self.leftovers()[:5]}")
        self.expect(not self.server_errors, f"{len(self.server_errors)} 5xx answers: {self.server_errors[:3]}")
        return self.report(time.monotonic() - started)

    def report(self, duration: float) -> int:
        lives = []
        for life in self.lives:
            samples = life["samples"]
            if len(samples) >= 2:
                first, last = samples[1] if len(samples) > 2 else samples[0], samples[-1]  # skip the warm-up
                lives.append(
                    {
                        "seconds": round(last[0] - first[0]),
                        "rss_mib": [round(first[1] / 2**20, 1), round(last[1] / 2**20, 1)],
                        "fds": [first[2], last[2]],
                        "events": life["health"],
                    }
                )
        totals: Counter[str] = Counter()
        for life in self.lives:
            for key in ("overflows", "stalls", "undelivered"):
                totals[key] += life["health"].get(key, 0)
        summary = {
            "duration_s": round(duration),
            "kills": len(self.restarts) - 1,
            "restart_s": {
                "files_in_workspace": self.args.files,
                "min": round(min(self.restarts), 2),
                "median": round(statistics.median(self.restarts), 2),
                "max": round(max(self.restarts), 2),
            },
            "temporaries_left_by_kills_before_restart": self.temps_left_by_kills,
            "requests": dict(self.statuses),
            "5xx": len(self.server_errors),
            "counts": dict(self.counts),
            "event_socket_closes": dict(self.closes),
            "runtime_event_counters_summed_over_lives": dict(totals),
            "lives": lives,
            "problems": self.problems,
        }
        print(json.dumps(summary, indent=1))
        if self.args.keep:
            print(f"kept: {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)
        return 1 if self.problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--kill-every", type=float, default=90.0, help="seconds between SIGKILLs (default 90)")
    parser.add_argument("--files", type=int, default=20000, help="files in the workspace (default 20000)")
    parser.add_argument("--workers", type=int, default=4, help="HTTP workers (default 4)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds each worker waits between requests")
    parser.add_argument("--fast", type=int, default=8, help="event sockets that keep up (default 8)")
    parser.add_argument("--slow", type=int, default=3, help="event sockets that read a frame every 10 ms (default 3)")
    parser.add_argument("--stalled", type=int, default=3, help="event sockets that never read (default 3)")
    parser.add_argument(
        "--silent", type=int, default=2, help="event sockets on a quiet topic that never read nor answer (default 2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspace and the runtime's log")
    return Soak(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
