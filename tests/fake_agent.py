#!/usr/bin/env python3
"""A stand-in for ``claude`` speaking its stream-json protocol, for what the real CLI cannot do on demand.

Started as the runtime starts ``claude`` (``--claude-bin``). Each user message
picks a behaviour by its first word: ``echo`` (a text and a result),
``crash`` (stderr, exit 3, no result), ``hang`` (print nothing, ever),
``garbage`` (non-JSON lines, then exit 1), ``flood N`` (N text lines as fast as
it can, then a result), ``paced N RATE`` (N stamped lines at RATE a second),
``long N`` (one text line of N bytes), ``stream N RATE [START]`` (a text block as N stamped
``stream_event`` deltas at RATE a second, then the block), ``wait FILE [START]`` (half a block's deltas, the
rest once FILE exists); START names a file to wait for before the first delta, so that a client can attach
first (deltas are live only), ``spawn`` (a grandchild in its own
session that sleeps, then hang), ``ask WORDS`` (a Bash tool call that asks
permission with a ``can_use_tool`` control request, waits for the host's
answer, then says ``permission allow`` or ``permission deny``), ``pwd`` (says its
``PWD``). An ``interrupt``
control request ends the running turn the way the CLI does.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time

SESSION = "fake-" + str(os.getpid())
out_lock = threading.Lock()


def emit(obj: dict) -> None:
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def text(content: str) -> dict:
    return {
        "type": "assistant",
        "message": {"model": "fake", "role": "assistant", "content": [{"type": "text", "text": content}]},
        "session_id": SESSION,
    }


def delta(content: str, index: int = 0) -> dict:
    event = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": content}}
    return {"type": "stream_event", "event": event, "session_id": SESSION}


def result(content: str, is_error: bool = False) -> dict:
    return {"type": "result", "subtype": "success", "is_error": is_error, "result": content, "session_id": SESSION}


interrupted = threading.Event()
permission_counter = itertools.count(1)
answers: queue.Queue[dict] = queue.Queue()  # control_response lines from the host (permission answers)


def wait_for_file(path: str | None) -> None:
    """Hold the turn until ``path`` exists (a test's gate; None: no gate) or the turn is interrupted."""
    while path is not None and not os.path.exists(path) and not interrupted.is_set():
        time.sleep(0.02)


def turn(prompt: str) -> None:
    words = prompt.split()
    kind = words[0] if words else "echo"
    emit({"type": "system", "subtype": "init", "session_id": SESSION, "cwd": os.getcwd()})
    if kind == "crash":
        sys.stderr.write("fake agent: something went badly wrong\n")
        sys.stderr.flush()
        os._exit(3)
    if kind == "hang":
        while not interrupted.is_set():
            time.sleep(0.05)
        return
    if kind == "garbage":
        with out_lock:
            sys.stdout.write("this is not json\n{broken\n")
            sys.stdout.flush()
        os._exit(1)
    if kind == "flood":
        count = int(words[1])
        # Written in big blocks: the relay, not this script, must be what is measured.
        block = []
        for i in range(count):
            block.append(json.dumps(text(f"line {i} {time.time():.6f}")))
            if len(block) == 1000:
                with out_lock:
                    sys.stdout.write("\n".join(block) + "\n")
                block = []
        with out_lock:
            if block:
                sys.stdout.write("\n".join(block) + "\n")
            sys.stdout.flush()
        emit(result(f"flooded {count}"))
        return
    if kind == "paced":
        # One line every 1/RATE s, each stamped with when it was written (for latency measurements).
        count, rate = int(words[1]), float(words[2])
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            emit(text(f"paced {i} {time.time():.6f}"))
        emit(result(f"paced {count}"))
        return
    if kind == "stream":
        # A text block streamed as N stream_event deltas at RATE a second (each stamped with when it was
        # written), then its complete assistant line and a result: what --include-partial-messages prints.
        # A third word names a file to wait for first (so a client can attach before the first delta).
        count, rate = int(words[1]), float(words[2])
        wait_for_file(words[3] if len(words) > 3 else None)
        start = time.monotonic()
        parts = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if interrupted.is_set():
                return
            part = f"<{i} {time.time():.6f}>"
            parts.append(part)
            emit(delta(part))
        emit(text("".join(parts)))
        emit(result(f"streamed {count}"))
        return
    if kind == "wait":
        # Half a block, then nothing until the file named by the second word exists, then the rest. A third
        # word names a file to wait for before the first half (so a client can attach before any delta).
        wait_for_file(words[2] if len(words) > 2 else None)
        emit(delta("first half "))
        wait_for_file(words[1])
        emit(delta("second half"))
        emit(text("first half second half"))
        emit(result("waited"))
        return
    if kind == "long":
        emit(text("x" * int(words[1])))
        emit(result("long done"))
        return
    if kind == "spawn":
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        emit(text(f"spawned {child.pid}"))
        while not interrupted.is_set():
            time.sleep(0.05)
        return
    if kind == "ask":
        asked = next(permission_counter)
        tool_id = f"toolu_fake_{asked}"
        tool_input = {"command": " ".join(words[1:]) or "ls"}
        tool_use = {"type": "tool_use", "id": tool_id, "name": "Bash", "input": tool_input}
        emit(
            {
                "type": "assistant",
                "message": {"model": "fake", "role": "assistant", "content": [tool_use]},
                "session_id": SESSION,
            }
        )
        emit(
            {
                "type": "control_request",
                "request_id": f"perm-{os.getpid()}-{asked}",
                "request": {
                    "subtype": "can_use_tool",
                    "tool_name": "Bash",
                    "input": tool_input,
                    "tool_use_id": tool_id,
                },
            }
        )
        answer = None
        while answer is None and not interrupted.is_set():
            try:
                answer = answers.get(timeout=0.05)
            except queue.Empty:
                pass
        if answer is None:
            return
        behavior = answer.get("response", {}).get("response", {}).get("behavior", "?")
        content: list[dict] = [
            {"type": "tool_result", "tool_use_id": tool_id, "content": f"ran: {tool_input['command']}"}
        ]
        if behavior != "allow":
            content = [{"type": "tool_result", "tool_use_id": tool_id, "content": "denied", "is_error": True}]
        emit({"type": "user", "message": {"role": "user", "content": content}, "session_id": SESSION})
        emit(text(f"permission {behavior}"))
        emit(result(f"permission {behavior}"))
        return
    if kind == "pwd":  # the PWD the runtime gave it (opencode reads its project from PWD)
        emit(text(f"pwd: {os.environ.get('PWD')}"))
        emit(result(f"pwd: {os.environ.get('PWD')}"))
        return
    emit(text(f"echo: {prompt}"))
    emit(result(f"echo: {prompt}"))


def main() -> int:
    if "--version" in sys.argv:
        print("0.0.0-fake (Claude Code)")
        return 0
    worker: threading.Thread | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("type") == "control_response":
            answers.put(msg)
            continue
        if msg.get("type") == "control_request":
            emit({"type": "control_response", "response": {"subtype": "success", "request_id": msg["request_id"]}})
            if msg["request"].get("subtype") == "interrupt" and worker is not None and worker.is_alive():
                interrupted.set()
                worker.join()
                emit({"type": "result", "subtype": "error_during_execution", "is_error": True, "session_id": SESSION})
                interrupted.clear()
            continue
        if msg.get("type") == "user":
            if worker is not None:
                worker.join()
            worker = threading.Thread(target=turn, args=(msg["message"]["content"],))
            worker.start()
    if worker is not None:
        worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
