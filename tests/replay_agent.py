#!/usr/bin/env python3
"""A stand-in for codex, gemini and opencode that replays a recording (tests/fixtures/<cli>/<scenario>).

Started as the runtime starts those CLIs (``--codex-bin`` …), with the prompt on
its command line: a prompt holding ``replay:<cli>/<scenario>`` prints that
scenario's ``stdout.jsonl`` and exits with its recorded ``exit_code`` (a
negative one by that signal), as the real CLI did; with ``hold`` in the prompt
it then waits to be stopped instead, with ``silent`` it waits before printing anything. ``--version`` prints a version.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def main() -> None:
    if "--version" in sys.argv:
        print("replay-agent 0.0.1-replay")
        return
    found = re.search(r"replay:([A-Za-z0-9_-]+/[A-Za-z0-9_-]+)", " ".join(sys.argv[1:]))
    if found is None:
        print("replay agent: no replay:<cli>/<scenario> in the prompt", file=sys.stderr)
        sys.exit(2)
    folder = os.path.join(FIXTURES, found.group(1))
    if " silent" in " ".join(sys.argv[1:]):
        time.sleep(600)  # a CLI still setting itself up: nothing said yet, not even its session id
    with open(os.path.join(folder, "stdout.jsonl"), "rb") as f:
        sys.stdout.buffer.write(f.read())
    sys.stdout.flush()
    if " hold" in " ".join(sys.argv[1:]):
        time.sleep(600)
    with open(os.path.join(folder, "exit_code"), encoding="utf-8") as f:
        code = int(f.read())
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
