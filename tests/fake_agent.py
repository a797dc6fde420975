#!/usr/bin/env python3
"""A stand-in for ``claude`` speaking its stream-json protocol, for what the real CLI cannot do on demand.

Started as the runtime starts ``claude`` (``--claude-bin``). Each user message
picks a behaviour by its first word: ``echo`` (a text and a result),
``crash`` (stderr, exit 3, no result), ``hang`` (print nothing, ever),
``garbage`` (non-JSON lines, then exit 1), ``flood N`` (N text lines as fast as
it can, then a result), ``paced N RATE`` (N stamped lines at RATE a second),
``long N`` (one text line of N bytes), ``spawn`` (a grandchild in its own
session that sleeps, then hang). An ``interrupt``
control request ends the running turn the way the CLI does.
"""

from __future__ import annotations

import json
import os
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


def result(content: str, is_error: bool = False) -> dict:
    return {"type": "result", "subtype": "success", "is_error": is_error, "result": content, "session_id": SESSION}


interrupted = threading.Event()


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
    emit(text(f"echo: {prompt}"))
    emit(result(f"echo: {prompt}"))


def main() -> int:
    if "--version" in sys.argv:
        print("0.0.0-fake (Claude Code)")
        return 0
    worker: threading.Thread | None = None
    for line in sys.stdin:
        msg = json.loads(line)
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
