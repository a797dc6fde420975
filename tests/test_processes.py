"""Processes and terminals (API.md "Processes and terminals"): real shells through the real server.

Terminals run ``bash --norc --noprofile`` under a pty (the developer's rc
files stay out of it); exec processes run on pipes. Every test checks what a
client sees: frames, statuses, and that nothing is left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from tests.conftest import ServerPool, ServerThread
from wsruntime_ext.procs import _alive

BASH = ["bash", "--norc", "--noprofile"]


@pytest.fixture(scope="module")
def home() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="wsrt-proc-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def psrv(servers: ServerPool, home: str) -> ServerThread:
    return servers.get("--home", home, "--terminal-scrollback", "4K")


class Client:
    """One WebSocket on a process: the hello, then bytes (terminal) or frames (pipes), then the exit frame."""

    def __init__(self, ws: tornado.websocket.WebSocketClientConnection, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.data = bytearray()
        self.frames: list[dict[str, Any]] = []
        self.exit: dict[str, Any] | None = None

    async def read_one(self, timeout: float = 15) -> bool:
        message = await asyncio.wait_for(self.ws.read_message(), timeout)
        if message is None:
            return False
        if isinstance(message, bytes):
            self.data += message
        else:
            frame = json.loads(message)
            if frame["type"] == "exit":
                self.exit = frame
            self.frames.append(frame)
        return True

    async def until(self, needle: bytes, timeout: float = 15) -> bytes:
        """Read until ``needle`` is in the terminal's bytes; returns them all."""
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            left = deadline - time.monotonic()
            try:
                more = left > 0 and await self.read_one(left)
            except asyncio.TimeoutError:
                more = False
            if not more:
                raise AssertionError(f"{needle!r} never came; got {bytes(self.data[-600:])!r}")
        return bytes(self.data)

    async def to_end(self, timeout: float = 20) -> None:
        while await self.read_one(timeout):
            pass

    def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, bytes):
            self.ws.write_message(data, binary=True)
        else:
            self.ws.write_message(json.dumps(data))


async def attach(server: ServerThread, process_id: str, after: int | None = None) -> Client:
    path = f"/api/v1/ws/processes/{process_id}" + ("" if after is None else f"?after={after}")
    ws = await server.websocket(path)
    hello = json.loads(await asyncio.wait_for(ws.read_message(), 15))  # type: ignore[arg-type]
    assert hello["type"] == "hello" and hello["process"]["id"] == process_id
    return Client(ws, hello)


async def start(server: ServerThread, body: dict[str, Any], query: str = "") -> dict[str, Any]:
    r = await server.request("POST", "/api/v1/processes" + query, body=body)
    assert r.status in (200, 201), r.body
    return dict(r.body)


async def terminal(server: ServerThread, cols: int = 80, rows: int = 24, **extra: Any) -> dict[str, Any]:
    body = {"command": BASH, "pty": {"cols": cols, "rows": rows}, "env": {"PS1": "$ "}, **extra}
    return await start(server, body)


async def ended(server: ServerThread, process_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await server.request("GET", f"/api/v1/processes/{process_id}")
        if r.body["status"] != "running":
            return dict(r.body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{process_id} did not end")


async def delete(server: ServerThread, process_id: str) -> dict[str, Any]:
    r = await server.request("DELETE", f"/api/v1/processes/{process_id}")
    assert r.status == 200
    return dict(r.body)


async def wait_for_file(path: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never written")


# -- terminals -----------------------------------------------------------------------


async def test_echo_round_trip_through_a_pty(psrv: ServerThread, home: str) -> None:
    proc = await terminal(psrv)
    assert proc["status"] == "running" and proc["pty"] == {"cols": 80, "rows": 24} and proc["pid"] > 0
    client = await attach(psrv, proc["id"])
    assert client.hello["offset"] == 0 and client.hello["truncated"] is False
    client.send(b"echo hi-$((6*7)) $TERM $COLORTERM $HOME; tty\r")
    out = await client.until(b"/dev/pts/")
    assert f"hi-42 xterm-256color truecolor {home}".encode() in out
    client.send({"type": "input", "data": "exit 5\r"})
    await client.to_end()
    assert client.exit == {"type": "exit", "code": 5, "signal": None, "status": "exited"}
    assert client.ws.close_code == 1000
    done = await ended(psrv, proc["id"])
    assert done["exit_code"] == 5 and done["pid"] is None and done["output_bytes"] == len(client.data)


async def test_bad_text_frames_get_an_error_reply_and_the_socket_goes_on(psrv: ServerThread) -> None:
    proc = await terminal(psrv)
    client = await attach(psrv, proc["id"])
    for raw, code in (
        ("not json", "invalid_json"),
        ('{"type": "input", "data": "\\ud800"}', "invalid_json"),  # a lone surrogate: no UTF-8 form to write
        ('{"type": "resize", "cols": NaN, "rows": 10}', "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),  # deeper than the parser goes: an answer, not a dropped socket
        ('{"type": "dance"}', "unknown_frame"),
    ):
        client.ws.write_message(raw)
        while not any(f.get("type") == "reply" for f in client.frames):
            assert await client.read_one()
        reply = client.frames.pop()
        assert reply["ok"] is False and reply["error"]["code"] == code, (raw, reply)
    client.send({"type": "input", "data": "echo still-$((2*21))\r"})
    await client.until(b"still-42")
    assert (await psrv.request("DELETE", f"/api/v1/processes/{proc['id']}")).status == 200


async def test_resize_changes_stty_size_and_sends_sigwinch(psrv: ServerThread) -> None:
    proc = await terminal(psrv, 80, 24)
    client = await attach(psrv, proc["id"])
    client.send(b"trap 'echo got-winch' WINCH; stty size\r")
    await client.until(b"24 80")
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/resize", body={"cols": 132, "rows": 43})
    assert r.status == 200 and r.body["pty"] == {"cols": 132, "rows": 43}
    client.send(b"stty size\r")
    await client.until(b"43 132")
    assert b"got-winch" in client.data
    client.send({"type": "resize", "cols": 90, "rows": 30})
    await asyncio.sleep(0.2)
    client.send(b"stty size\r")
    await client.until(b"30 90")
    assert (await psrv.request("GET", f"/api/v1/processes/{proc['id']}")).body["pty"] == {"cols": 90, "rows": 30}
    await delete(psrv, proc["id"])


async def test_ctrl_c_and_the_signal_call_reach_the_foreground_job(psrv: ServerThread) -> None:
    proc = await terminal(psrv)
    client = await attach(psrv, proc["id"])
    client.send(b"sleep 30; echo sleep-ended-$?\r")
    await asyncio.sleep(0.5)
    client.send(b"\x03")  # Ctrl-C as input: the line discipline signals the foreground group
    client.send(b"echo after-$((1+1))\r")
    out = await client.until(b"after-2", timeout=10)
    assert re.search(rb"sleep-ended-\d", out) is None  # ^C stopped the whole command line, as in a real terminal
    client.send(b"sleep 31\r")
    await asyncio.sleep(0.5)
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/signal", body={"signal": "SIGINT"})
    assert r.status == 200
    client.send(b"echo again-$((2+1))\r")
    await client.until(b"again-3", timeout=10)  # long before the 31 s sleep would have ended
    assert (await psrv.request("GET", f"/api/v1/processes/{proc['id']}")).body["status"] == "running"  # bash lives
    await delete(psrv, proc["id"])


@pytest.mark.skipif(shutil.which("vi") is None, reason="no vi")
async def test_vi_starts_and_quits(psrv: ServerThread, tmp_path: Any) -> None:
    proc = await terminal(psrv, 100, 30)
    client = await attach(psrv, proc["id"])
    client.send(b"vi -u NONE -N hello.txt\r")
    await client.until(b"\x1b[?1049h")  # a full-screen program: the alternate screen
    await client.until(b'"hello.txt"')  # its status line
    client.send(b"ihello from vi\x1b:wq\r")
    await client.until(b"written")
    await client.until(b"\x1b[?1049l")  # vi left the alternate screen: the shell has the terminal again
    await asyncio.sleep(0.2)
    client.send(b"cat hello.txt\r")
    await client.until(b"hello from vi\r\n")
    await delete(psrv, proc["id"])


async def test_less_shows_a_file_and_q_quits(psrv: ServerThread) -> None:
    body = {
        "shell": "printf 'line %s\\n' $(seq 1 200) > less-demo.txt && exec less less-demo.txt",
        "pty": {"cols": 80, "rows": 24},
        "env": {"LESS": "", "LESSHISTFILE": "-"},
    }
    proc = await start(psrv, body)
    client = await attach(psrv, proc["id"])
    await client.until(b"line 1\r\n")
    await client.until(b"line 23")  # a screenful: 23 lines and less's prompt
    assert b"line 30\r\n" not in client.data
    client.send(b"q")
    done = await ended(psrv, proc["id"])
    assert done["status"] == "exited" and done["exit_code"] == 0
    await client.to_end()
    assert client.exit is not None and client.exit["code"] == 0


async def test_a_terminal_client_that_fell_out_of_the_scrollback_is_closed_with_1013(psrv: ServerThread) -> None:
    # 16 MB without a newline, much more than the 4 KiB of scrollback and what the socket buffers hold.
    size = 16_000_000
    body = {
        "command": ["python3", "-c", f"import sys; sys.stdout.write('0123456789' * {size // 10})"],
        "pty": {"cols": 80, "rows": 24},
    }
    proc = await start(psrv, body)
    client = await attach(psrv, proc["id"])  # and reads nothing while the process writes
    done = await ended(psrv, proc["id"], 60)
    assert done["status"] == "exited" and done["output_bytes"] == size
    await client.to_end(60)  # what the socket held, then the close: its next byte is no longer kept
    assert client.ws.close_code == 1013 and client.exit is None
    assert len(client.data) < size  # (none at all when byte 0 had left before the first read)
    everything = b"0123456789" * (size // 10)
    assert bytes(client.data) == everything[: len(client.data)]  # in order, nothing missing before the close
    again = await attach(psrv, proc["id"], after=len(client.data))  # the reconnect it was told to make
    assert again.hello["truncated"] is True and again.hello["offset"] == size - 4096
    await again.to_end()
    assert bytes(again.data) == everything[-4096:] and again.exit is not None


async def test_replay_after_reconnect_with_and_without_truncation(psrv: ServerThread) -> None:
    # 20000 bytes without a newline (the pty would add \r): more than the 4 KiB of scrollback.
    body = {
        "command": ["python3", "-c", "import sys; sys.stdout.write('0123456789' * 2000)"],
        "pty": {"cols": 80, "rows": 24},
    }
    proc = await start(psrv, body)
    done = await ended(psrv, proc["id"])
    assert done["status"] == "exited" and done["output_bytes"] == 20000
    everything = b"0123456789" * 2000
    client = await attach(psrv, proc["id"])
    assert client.hello["truncated"] is True and client.hello["offset"] == 20000 - 4096
    await client.to_end()
    assert bytes(client.data) == everything[-4096:] and client.exit is not None and client.exit["code"] == 0
    client = await attach(psrv, proc["id"], after=19000)
    assert client.hello == {**client.hello, "offset": 19000, "truncated": False}
    await client.to_end()
    assert bytes(client.data) == everything[19000:]
    client = await attach(psrv, proc["id"], after=20000)
    await client.to_end()
    assert client.hello["offset"] == 20000 and client.data == b"" and client.exit is not None


async def test_a_reconnecting_terminal_client_misses_nothing(psrv: ServerThread) -> None:
    proc = await terminal(psrv)
    first = await attach(psrv, proc["id"])
    first.send(b"echo one-$((1))\r")
    await first.until(b"one-1")
    have = len(first.data)
    first.ws.close()
    second = await attach(psrv, proc["id"])  # a page that reloads: from 0, it redraws everything
    await second.until(b"one-1")
    third = await attach(psrv, proc["id"], after=have)
    assert third.hello["offset"] == have
    # Output while nobody reads it is kept.
    third.ws.close()
    second.ws.close()
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/input", body={"data": "echo two-$((2))\r"})
    assert r.status == 200 and r.body["written"] == len("echo two-$((2))\r")
    await asyncio.sleep(0.5)
    fourth = await attach(psrv, proc["id"], after=have)
    out = await fourth.until(b"two-2")
    assert b"one-1" not in out
    await delete(psrv, proc["id"])


async def test_two_clients_share_one_terminal(psrv: ServerThread) -> None:
    proc = await terminal(psrv)
    a = await attach(psrv, proc["id"])
    b = await attach(psrv, proc["id"])
    a.send(b"echo from-a-$((10+1))\r")
    await a.until(b"from-a-11")
    await b.until(b"from-a-11")
    b.send(b"echo from-b-$((20+2))\r")
    await a.until(b"from-b-22")
    await b.until(b"from-b-22")
    a.send(b"exit\r")
    await a.to_end()
    await b.to_end()
    assert a.data == b.data and a.exit == b.exit and a.exit is not None and a.exit["status"] == "exited"


async def test_default_terminal_is_a_login_shell(psrv: ServerThread) -> None:
    proc = await start(psrv, {"pty": {"cols": 80, "rows": 24}})
    assert os.path.basename(proc["command"][0]) in ("bash", "sh", "zsh", "dash", "fish")
    client = await attach(psrv, proc["id"])
    client.send(b"echo shell-$((3*3))\r")
    await client.until(b"shell-9")
    assert (await delete(psrv, proc["id"]))["status"] == "killed"


# -- exec ------------------------------------------------------------------------------


async def test_stdin_and_eof_for_cat(psrv: ServerThread) -> None:
    proc = await start(psrv, {"command": ["cat"], "stdin": True})
    assert proc["pty"] is None and proc["stdin"] is True
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/input", body={"data": "hello "})
    assert r.status == 200 and r.body == {"written": 6}
    client = await attach(psrv, proc["id"])
    assert "offset" not in client.hello
    client.send({"type": "input", "data": "world\n"})
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/input", body={"data_base64": "Ynl0ZXMK"})
    assert r.status == 200 and r.body == {"written": 6}
    client.send({"type": "eof"})
    await client.to_end()
    output = [f for f in client.frames if f["type"] == "output"]
    assert "".join(f["data"] for f in output) == "hello world\nbytes\n"
    assert {f["stream"] for f in output} == {"stdout"} and [f["seq"] for f in output] == list(range(1, len(output) + 1))
    assert client.exit == {"type": "exit", "code": 0, "signal": None, "status": "exited"}
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/input", body={"data": "late"})
    assert r.status == 409 and r.error_code == "process_ended"
    again = await attach(psrv, proc["id"], after=output[0]["seq"])  # a socket on an ended process replays
    await again.to_end()
    assert [f["seq"] for f in again.frames if f["type"] == "output"] == [f["seq"] for f in output[1:]]


async def test_wait_true_answers_with_stdout_and_stderr(psrv: ServerThread) -> None:
    body = {"shell": "echo out; echo err >&2; exit 3", "name": "both"}
    done = await start(psrv, body, "?wait=true")
    assert done["status"] == "exited" and done["exit_code"] == 3 and done["name"] == "both"
    assert done["stdout"] == "out\n" and done["stderr"] == "err\n"
    assert done["stdout_truncated"] is False and done["stderr_truncated"] is False
    assert done["command"] == ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"] and done["output_bytes"] == 8
    r = await psrv.request(
        "POST", "/api/v1/processes?wait=true", body={"command": ["true"], "pty": {"cols": 1, "rows": 1}}
    )
    assert r.status == 400 and r.error_code == "invalid_field"


async def test_no_stdin_means_dev_null_and_stdin_closed(psrv: ServerThread) -> None:
    proc = await start(psrv, {"command": ["sleep", "30"]})
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/input", body={"data": "x"})
    assert r.status == 409 and r.error_code == "stdin_closed"
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/resize", body={"cols": 10, "rows": 10})
    assert r.status == 409 and r.error_code == "not_a_terminal"
    done = await start(psrv, {"command": ["cat"]}, "?wait=true")
    assert done["status"] == "exited" and done["stdout"] == ""
    await delete(psrv, proc["id"])


async def test_signals(psrv: ServerThread) -> None:
    proc = await start(psrv, {"command": ["sleep", "30"]})
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/signal", body={"signal": "KILL"})
    assert r.status == 400 and r.error_code == "invalid_signal"
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/signal", body={"signal": "SIGUSR1"})
    assert r.status == 200
    done = await ended(psrv, proc["id"])
    assert done["status"] == "killed" and done["signal"] == "SIGUSR1" and done["exit_code"] is None
    r = await psrv.request("POST", f"/api/v1/processes/{proc['id']}/signal", body={"signal": "SIGTERM"})
    assert r.status == 409 and r.error_code == "process_ended"
    # A trapped SIGTERM: the process decides.
    proc = await start(psrv, {"shell": "trap 'echo bye; exit 4' TERM; echo ready; while :; do sleep 0.05; done"})
    client = await attach(psrv, proc["id"])
    while not any(f.get("data", "").startswith("ready") for f in client.frames):
        await client.read_one()
    client.send({"type": "signal", "signal": "SIGTERM"})
    await client.to_end()
    assert client.exit == {"type": "exit", "code": 4, "signal": None, "status": "exited"}


async def test_timeout_stops_the_tree(psrv: ServerThread) -> None:
    pid_file = os.path.join(psrv.workspace, "timeout-bg.pid")
    shell = f"sleep 30 & echo $! > {pid_file}; sleep 31"
    done = await start(psrv, {"shell": shell, "timeout_s": 0.5}, "?wait=true")
    assert done["status"] == "timed_out" and done["exit_code"] is None and done["signal"] == "SIGTERM"
    with open(pid_file) as f:
        background = int(f.read())
    os.unlink(pid_file)
    for _ in range(100):  # the background job was stopped with the shell (a zombie until its reaper runs)
        if not _alive(background):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the background sleep {background} outlived the timeout")


async def test_spawn_failed_and_bad_requests(psrv: ServerThread) -> None:
    r = await psrv.request("POST", "/api/v1/processes", body={"command": ["no-such-command-xyz"]})
    assert r.status == 422 and r.error_code == "spawn_failed" and r.body["error"]["details"]["reason"]
    os.makedirs(os.path.join(psrv.workspace, "sub"), exist_ok=True)
    plain = os.path.join(psrv.workspace, "sub", "plain.txt")
    with open(plain, "w") as f:
        f.write("not a program\n")
    r = await psrv.request("POST", "/api/v1/processes", body={"command": ["./plain.txt"], "cwd": "sub"})
    assert r.status == 422 and r.error_code == "spawn_failed"
    r = await psrv.request("POST", "/api/v1/processes", body={"command": ["pwd"], "cwd": "../.."})
    assert r.status == 403 and r.error_code == "path_outside_workspace"
    r = await psrv.request("POST", "/api/v1/processes", body={"command": ["pwd"], "cwd": "missing"})
    assert r.status == 404 and r.error_code == "not_found"
    done = await start(psrv, {"command": ["sh", "-c", 'pwd; echo "$PWD"'], "cwd": "sub"}, "?wait=true")
    real = os.path.realpath(os.path.join(psrv.workspace, "sub"))
    assert done["stdout"] == f"{real}\n{real}\n" and done["cwd"] == "sub"
    bad_bodies = [
        {},
        {"command": []},
        {"command": "ls"},
        {"command": ["ls"], "shell": "ls"},
        {"shell": ""},
        {"command": ["ls"], "pty": {"cols": 0, "rows": 10}},
        {"command": ["ls"], "pty": {"cols": 10, "rows": 1001}},
        {"command": ["ls"], "timeout_s": 0},
        {"command": ["ls"], "env": {"A=B": "c"}},
        {"command": ["ls"], "stdin": "yes"},
    ]
    for body in bad_bodies:
        r = await psrv.request("POST", "/api/v1/processes", body=body)
        assert r.status == 400 and r.error_code in ("invalid_field", "invalid_body"), (body, r.body)
    r = await psrv.request("GET", "/api/v1/processes/proc_nothere")
    assert r.status == 404 and r.error_code == "process_not_found"
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await psrv.websocket("/api/v1/ws/processes/proc_nothere")
    assert refused.value.code == 404


async def test_list_and_events(psrv: ServerThread) -> None:
    events = await psrv.websocket("/api/v1/ws")
    events.write_message(json.dumps({"type": "subscribe", "topics": ["process"]}))
    await asyncio.sleep(0.2)
    done = await start(psrv, {"command": ["true"]}, "?wait=true")
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        frame = json.loads(await asyncio.wait_for(events.read_message(), 10))  # type: ignore[arg-type]
        if frame.get("type") == "process" and frame["id"] == done["id"]:
            seen.append((frame["status"], frame["exit_code"]))
    assert seen == [("running", None), ("exited", 0)]
    events.close()
    listed = (await psrv.request("GET", "/api/v1/processes?status=exited")).body["processes"]
    assert listed[0]["id"] == done["id"] and all(p["status"] == "exited" for p in listed)
    r = await psrv.request("GET", "/api/v1/processes?status=nope")
    assert r.status == 400 and r.error_code == "invalid_parameter"


async def test_the_runtime_token_never_reaches_a_child(servers: ServerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSRUNTIME_TOKEN", "secret-token-xyz")
    server = servers.get("--token", "secret-token-xyz")
    r = await server.request("POST", "/api/v1/processes?wait=true", body={"command": ["env"]})
    assert r.status == 401
    r = await server.request("POST", "/api/v1/processes?wait=true", body={"command": ["env"]}, token="secret-token-xyz")
    assert r.status == 200 and "secret-token-xyz" not in r.body["stdout"] and "WSRUNTIME_PROCESS=" in r.body["stdout"]


# -- nothing left behind -----------------------------------------------------------------


async def test_delete_leaves_no_process_behind(psrv: ServerThread, tmp_path: Any) -> None:
    proc = await terminal(psrv)
    client = await attach(psrv, proc["id"])
    d = os.fspath(tmp_path)
    client.send(
        f"setsid sh -c 'echo $$ > {d}/p1; exec sleep 1000' & "
        f"nohup sh -c 'echo $$ > {d}/p2; exec sleep 1001' >/dev/null 2>&1 & "
        f"(sleep 1002 & echo $! > {d}/p3); sleep 1003\r".encode()
    )
    pids = [int(await wait_for_file(f"{d}/p{i}")) for i in (1, 2, 3)]
    assert all(_alive(p) for p in pids)
    done = await delete(psrv, proc["id"])
    assert done["status"] == "killed" and done["signal"] in ("SIGHUP", "SIGKILL") and done["exit_code"] is None
    assert not any(_alive(p) for p in [*pids, proc["pid"]])
    await client.to_end()
    assert client.exit is not None and client.exit["status"] == "killed"
    assert (await delete(psrv, proc["id"])) == done  # an ended one is returned as it is


async def test_an_exec_process_leaves_nothing_behind_when_it_exits(psrv: ServerThread, tmp_path: Any) -> None:
    d = os.fspath(tmp_path)
    script = f"(setsid sh -c 'echo $$ > {d}/q; exec sleep 1000' &); while [ ! -s {d}/q ]; do sleep 0.05; done"
    done = await start(psrv, {"shell": script, "timeout_s": 20}, "?wait=true")
    assert done["status"] == "exited" and done["exit_code"] == 0
    assert not _alive(int(await wait_for_file(f"{d}/q")))


async def test_slow_client_is_closed_with_1013(psrv: ServerThread) -> None:
    proc = await start(psrv, {"shell": "head -c 67108864 /dev/zero | tr '\\0' x", "timeout_s": 60})
    ws = await psrv.websocket(f"/api/v1/ws/processes/{proc['id']}")
    done = await ended(psrv, proc["id"], 60)  # the process is never held up by the client
    assert done["status"] == "exited" and done["output_bytes"] == 64 << 20
    await asyncio.sleep(7)  # more than STALL_S
    while await asyncio.wait_for(ws.read_message(), 20) is not None:
        pass
    assert ws.close_code == 1013


def test_a_segment_dropped_while_a_big_frame_is_read_is_skipped(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that met a frame larger than its read, whose segment was then deleted, skips it (no error)."""
    from wsruntime_ext.processes import runs

    directory = os.fspath(tmp_path)
    log = runs.OutputLog(directory, 1 << 30)
    log.append(1, "stdout", "x" * 100_000)
    log.close()
    assert log.wait_drained(10)
    opened = []
    real_open = open

    def vanishing_open(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        if len(opened) == 2:  # the second look at the segment: it was pruned meanwhile
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(runs, "open", vanishing_open, raising=False)
    lines, skipped = runs.read_frames(directory, [1], runs.Cursor(1), 1000)
    assert lines == [] and skipped == 0 and len(opened) == 2


async def test_a_terminal_socket_passes_the_same_checks(servers: ServerPool, psrv: ServerThread) -> None:
    proc = await terminal(psrv)
    path = f"/api/v1/ws/processes/{proc['id']}"
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await psrv.websocket(path, headers={"Origin": "https://evil.example"})
    assert info.value.code == 403
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await psrv.websocket(path, headers={"Host": "evil.example"})
    assert info.value.code == 403
    await delete(psrv, proc["id"])
    secured = servers.get("--token", "procs-token-1")
    r = await secured.request("POST", "/api/v1/processes", body={"command": ["true"]}, token="procs-token-1")
    assert r.status == 201
    path = f"/api/v1/ws/processes/{r.body['id']}"
    for token in (None, "wrong"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await secured.websocket(path, token=token, query_token=True)
        assert info.value.code == 401
    ws = await secured.websocket(path, token="procs-token-1", query_token=True)
    client = Client(ws, json.loads(await ws.read_message()))  # type: ignore[arg-type]
    await client.to_end()
    assert client.exit is not None and client.exit["status"] == "exited"


class _GatedWriter:
    """A LogWriter whose thread waits for ``gate``: the disk made slow on purpose."""

    def __init__(self) -> None:
        import threading

        from wsruntime_ext.processes.runs import LogWriter

        self.gate = threading.Event()
        self.inner = LogWriter()
        real_run = self.inner._run

        def run() -> None:
            self.gate.wait()
            real_run()

        self.inner._run = run  # type: ignore[method-assign]


class _Pipe:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


async def test_output_waits_for_a_slow_disk_instead_of_piling_up_in_memory(tmp_path: Any) -> None:
    """The output log's disk work is another thread's: while it is more than MAX_LOG_LAG behind, the pipes
    are not read (the child waits); once it catches up they are, and everything reached the disk in order."""
    from wsruntime_ext.processes import engine, runs

    gated = _GatedWriter()
    directory = os.fspath(tmp_path)
    output = runs.OutputLog(directory, 1 << 30, writer=gated.inner)
    run = engine.Run("proc_x", {"output_bytes": 0}, directory, output)
    pipe = _Pipe()
    run.pipes = [pipe]  # type: ignore[list-item]
    chunk = b"y" * (100 << 10) + b"\n"
    chunks = 0
    while not pipe.calls:
        assert run.append_ascii("stdout", chunk)
        chunks += 1
        assert chunks < 20, "never paused"
    assert pipe.calls == ["pause"] and output.lag > engine.MAX_LOG_LAG
    assert output.first_seqs == []  # nothing is on disk yet: readers are not sent to a file that is not there
    gated.gate.set()
    output.close()
    await asyncio.wait_for(output.drained(), 10)
    await asyncio.sleep(0.05)  # the last batch's call on the loop
    assert pipe.calls == ["pause", "resume"] and output.lag == 0
    lines, skipped = runs.read_frames(directory, output.first_seqs, runs.Cursor(1), 1 << 30)
    assert skipped == 0 and len(lines) == chunks
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, chunks + 1))
