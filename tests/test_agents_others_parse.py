"""Every recorded Codex, Gemini CLI, Qwen Code and opencode stream (tests/fixtures/<cli>) → AgentMessages.

The recordings are the real CLIs' output (OTHER-AGENTS.md: codex 0.171.0,
gemini 0.61.0, qwen 0.24.4, opencode 1.18.33) against a mock model. The
expectations are ours, from OTHER-AGENTS.md's mappings: each message as
(type, what it says), text compared with ``startswith``; the process exit code
recorded next to each stream goes to the parser's ``finish``. The quirks get
tests of their own below.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import pytest

from wsruntime_ext.agents.adapter import LIVE_TYPES, SessionOptions, StreamParser
from wsruntime_ext.agents.codex import CodexAdapter, CodexParser
from wsruntime_ext.agents.gemini import GeminiAdapter, GeminiParser
from wsruntime_ext.agents.opencode import OpencodeAdapter, OpencodeParser
from wsruntime_ext.agents.qwen_code import QwenCodeAdapter, QwenCodeParser

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
PARSERS: dict[str, type[StreamParser]] = {
    "codex": CodexParser,
    "gemini-cli": GeminiParser,
    "qwen-code": QwenCodeParser,
    "opencode": OpencodeParser,
}

THINK = "The user wants me to run a command."
FIRST = "I will run the command with the shell tool."
CODEX_TOOL = [
    ("thinking", THINK),
    ("text", FIRST),
    ("tool_use", "shell", "/bin/bash -lc 'echo hi'"),
    ("tool_result", "shell", False, "hi\n"),
    ("text", "Done. The command output was: Chunk ID"),
    ("done", "Done. The command output was: Chunk ID"),
]
CODEX_CUT = [("thinking", THINK), ("text", FIRST), ("tool_use", "shell", '/bin/bash -lc "python3 -c')]
HIGH_DEMAND = "We’re currently experiencing high demand"
GEMINI_TOOL = [
    ("text", FIRST),
    ("tool_use", "run_shell_command", "echo hi"),
    ("tool_result", "run_shell_command", False, "hi"),
    ("text", "Done. The command output was: <untrusted_context> Output: hi"),
    ("done", "Done. The command output was: <untrusted_context> Output: hi"),
]
GEMINI_CUT = [("text", FIRST), ("tool_use", "run_shell_command", "python3 -c 'import time")]
GEMINI_500 = '[API Error: {"error":{"code":500,"message":"mock internal server error"'
QWEN_TOOL = [
    ("thinking", THINK),
    ("text", FIRST),
    ("tool_use", "run_shell_command", "echo hi"),
    ("tool_result", "run_shell_command", False, "hi"),
    ("text", "Done. The command output was: Command: echo hi"),
    ("done", "Done. The command output was: Command: echo hi"),
]
QWEN_CANCELLED = ("tool_result", "run_shell_command", True, "[Operation Cancelled]")
QWEN_CUT = [("thinking", THINK), ("text", FIRST), ("tool_use", "run_shell_command", "python3 -c"), QWEN_CANCELLED]
OPENCODE_TOOL = [
    ("text", FIRST),
    ("tool_use", "bash", "echo hi"),
    ("tool_result", "bash", False, "hi\n"),
    ("text", "Done. The command output was: hi"),
    ("done", "Done. The command output was: hi"),
]

EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    # codex app-server speaks JSON-RPC, not `exec --json`: the runtime does not drive it, and its lines map to nothing.
    "codex/app-server-interrupt/stdout.jsonl": [],
    "codex/error-retry/stdout.jsonl": [("error", HIGH_DEMAND)],
    "codex/error/stdout.jsonl": [("error", HIGH_DEMAND)],
    "codex/interrupt-sigint/stdout.jsonl": CODEX_CUT,
    "codex/interrupt-sigterm/stdout.jsonl": CODEX_CUT,
    "codex/resume/stdout.jsonl": CODEX_TOOL,
    "codex/resume/turn1.stdout.jsonl": CODEX_TOOL,
    "codex/tool/stdout.jsonl": CODEX_TOOL,
    "gemini-cli/error-retry/stdout.jsonl": [("error", GEMINI_500)],
    "gemini-cli/error/stdout.jsonl": [("error", GEMINI_500)],
    "gemini-cli/interrupt-sigint/stdout.jsonl": GEMINI_CUT,
    "gemini-cli/interrupt-sigterm/stdout.jsonl": GEMINI_CUT,
    "gemini-cli/resume/stdout.jsonl": GEMINI_TOOL,
    "gemini-cli/resume/turn1.stdout.jsonl": GEMINI_TOOL,
    "gemini-cli/tool/stdout.jsonl": GEMINI_TOOL,
    # --output-format json (one object at the end) is not what the runtime asks for: nothing is made of it.
    "gemini-cli/tool-json-format/stdout.json": [],
    "opencode/error/stdout.jsonl": [("error", "mock internal server error")],
    "opencode/interrupt-sigint/stdout.jsonl": [("text", FIRST)],
    "opencode/interrupt-sigterm/stdout.jsonl": [("text", FIRST)],
    "opencode/resume/stdout.jsonl": OPENCODE_TOOL,
    "opencode/resume/turn1.stdout.jsonl": OPENCODE_TOOL,
    "opencode/tool/stdout.jsonl": [("thinking", THINK), *OPENCODE_TOOL],
    "qwen-code/error/stdout.jsonl": [("error", "[API Error: 500 mock internal server error]")],
    "qwen-code/interrupt-sigint/stdout.jsonl": QWEN_CUT,
    "qwen-code/interrupt-sigterm/stdout.jsonl": QWEN_CUT,
    # The resumed turn's model replayed the first call id: Qwen refused it as a duplicate (a failed tool_result).
    "qwen-code/resume/stdout.jsonl": [
        ("thinking", THINK),
        ("text", FIRST),
        ("tool_use", "run_shell_command", "echo hi"),
        ("tool_result", "run_shell_command", True, 'Duplicate provider tool call id "call_2"'),
        ("text", "Done. The command output was: Duplicate"),
        ("done", "Done. The command output was: Duplicate"),
    ],
    "qwen-code/resume/turn1.stdout.jsonl": QWEN_TOOL,
    "qwen-code/stdin-interrupt/stdout.jsonl": [
        *QWEN_CUT,
        ("error", "interrupted"),
        ("thinking", THINK),
        ("text", FIRST),
        ("tool_use", "run_shell_command", "python3 -c"),
        ("tool_result", "run_shell_command", False, "Command: python3 -c"),
        ("text", "Done. The command output was: Command: python3"),
        ("done", "Done. The command output was: Command: python3"),
    ],
    "qwen-code/stdin-multi/stdout.jsonl": QWEN_TOOL + QWEN_TOOL,
    "qwen-code/tool-partial-messages/stdout.jsonl": QWEN_TOOL,
    "qwen-code/tool/stdout.jsonl": QWEN_TOOL,
}


def recordings() -> list[str]:
    found = []
    for agent in PARSERS:
        for path in glob.glob(os.path.join(FIXTURES, agent, "*", "*stdout.json*")):
            found.append(os.path.relpath(path, FIXTURES))
    return sorted(found)


def exit_code(name: str) -> int:
    stem = name.rsplit("stdout.json", 1)[0]
    with open(os.path.join(FIXTURES, stem + "exit_code"), encoding="utf-8") as f:
        return int(f.read())


def lines(name: str) -> list[dict[str, Any]]:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        raw = f.read()
    out = []
    for text in [raw] if name.endswith(".json") else raw.splitlines():
        try:
            decoded = json.loads(text)
        except ValueError:
            continue
        if isinstance(decoded, dict):
            out.append(decoded)
    return out


def run(parser: StreamParser, decoded: list[dict[str, Any]], code: int, live: bool = False) -> list[dict[str, Any]]:
    """The messages of a recording; the live-only deltas too when ``live``."""
    messages = []
    for line in decoded:
        messages += [m for m in parser.parse(line) if live or m["type"] not in LIVE_TYPES]
    return messages + parser.finish(code)


def test_qwen_partial_messages_become_deltas_of_their_block() -> None:
    name = "qwen-code/tool-partial-messages/stdout.jsonl"
    messages = run(PARSERS["qwen-code"](), lines(name), exit_code(name), live=True)
    shape = [
        (m["type"], m.get("block")) for m in messages if m["type"] in LIVE_TYPES or m["type"] in ("text", "thinking")
    ]
    assert shape == [
        ("thinking_delta", 0),
        ("thinking", None),
        ("text_delta", 0),
        ("text_delta", 0),
        ("text", None),
        ("text_delta", 0),
        ("text", None),
    ]
    assert (
        messages[2]["content"] + messages[3]["content"]
        == messages[4]["content"]
        == ("I will run the command with the shell tool.")
    )


def parse_file(name: str) -> tuple[StreamParser, list[dict[str, Any]]]:
    parser = PARSERS[name.split("/", 1)[0]]()
    return parser, run(parser, lines(name), exit_code(name))


def summary(message: dict[str, Any]) -> tuple[Any, ...]:
    kind = message["type"]
    if kind in ("text", "thinking", "done"):
        return (kind, message["content"])
    if kind == "tool_use":
        return (kind, message["tool"], str(message["input"].get("command", "")))
    if kind == "tool_result":
        return (kind, message["tool"], message["is_error"], message["output"])
    if kind == "error":
        return (kind, message["error"])
    return (kind,)


def matches(got: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if isinstance(w, str) and isinstance(g, str):
            if not g.startswith(w):
                return False
        elif g != w:
            return False
    return True


def test_every_recording_has_an_expectation() -> None:
    assert recordings() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_maps_to_expected_messages(name: str) -> None:
    _, messages = parse_file(name)
    got = [summary(m) for m in messages]
    assert len(got) == len(EXPECTED[name]), got
    for g, w in zip(got, EXPECTED[name]):
        assert matches(g, w), (g, w)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tool_results_pair_with_their_tool_use(name: str) -> None:
    _, messages = parse_file(name)
    uses = {m["tool_use_id"]: m["tool"] for m in messages if m["type"] == "tool_use"}
    for result in (m for m in messages if m["type"] == "tool_result"):
        assert uses[result["tool_use_id"]] == result["tool"]
        assert ("error" in result) == result["is_error"]


@pytest.mark.parametrize(
    ("name", "sid"),
    [
        ("codex/tool/stdout.jsonl", "01a221a7-144e-79e1-a397-f10da2ba2d94"),
        ("gemini-cli/tool/stdout.jsonl", "2fafc645-80a8-4c46-bce5-48f91bcf13f3"),
        ("qwen-code/tool/stdout.jsonl", "e438a1f3-e00c-46d9-bcb2-186a4b79d99f"),
        ("opencode/tool/stdout.jsonl", "ses_dde5d2c36ffe69Vgk1anA0h3MU"),
    ],
)
def test_the_agents_session_id_is_remembered_for_resume(name: str, sid: str) -> None:
    parser, _ = parse_file(name)
    assert parser.agent_session_id == sid


def test_resumed_recordings_keep_the_session_id() -> None:
    for agent in PARSERS:
        first, _ = parse_file(f"{agent}/resume/turn1.stdout.jsonl")
        second, _ = parse_file(f"{agent}/resume/stdout.jsonl")
        assert first.agent_session_id and first.agent_session_id == second.agent_session_id


# -- quirks: warnings that look like errors ---------------------------------------------------


def test_codex_retry_notices_and_item_errors_are_warnings() -> None:
    parser = CodexParser()
    messages = run(parser, lines("codex/error-retry/stdout.jsonl"), 1)
    assert [m["type"] for m in messages] == ["error"]  # only turn.failed, once
    assert parser.warnings[0].startswith("Model metadata for `mock-model` not found")
    assert [w for w in parser.warnings if w.startswith("Reconnecting... ")] == [
        f"Reconnecting... {n}/2 ({HIGH_DEMAND}, which may cause temporary errors.)" for n in (1, 2)
    ]


def test_gemini_error_lines_are_warnings_and_the_result_decides() -> None:
    parser = GeminiParser()
    stream: list[dict[str, Any]] = [
        {"type": "init", "session_id": "s1"},
        {"type": "message", "role": "assistant", "content": "Looking", "delta": True},
        {"type": "error", "severity": "warning", "message": "Loop detected, stopping execution"},
        {"type": "message", "role": "assistant", "content": " again.", "delta": True},
        {"type": "message", "role": "assistant", "content": " Done.", "delta": True},
        {"type": "result", "status": "success", "stats": {"total_tokens": 3, "duration_ms": 12}},
    ]
    messages = run(parser, stream, 0)
    assert [summary(m) for m in messages] == [("text", "Looking"), ("text", " again. Done."), ("done", " again. Done.")]
    assert messages[-1]["usage"] == {"total_tokens": 3} and messages[-1]["duration_ms"] == 12
    assert parser.warnings == ["warning: Loop detected, stopping execution"]


def test_gemini_failed_tool_result_carries_its_error() -> None:
    parser = GeminiParser()
    stream = [
        {"type": "tool_use", "tool_name": "read_file", "tool_id": "t1", "parameters": {"path": "x"}},
        {"type": "tool_result", "tool_id": "t1", "status": "error", "output": "", "error": {"message": "no such file"}},
    ]
    result = run(parser, stream, 0)[-1]
    assert result["tool"] == "read_file" and result["is_error"] is True and result["error"] == "no such file"


# -- quirks: exit codes that say little ------------------------------------------------------------


def test_gemini_interrupted_exit_0_gives_no_end_of_turn() -> None:
    """Exit 0 after SIGINT with no `result`: the parser ends nothing, so the session reports the turn as failed."""
    messages = run(GeminiParser(), lines("gemini-cli/interrupt-sigint/stdout.jsonl"), 0)
    assert not [m for m in messages if m["type"] in ("done", "error")]


def test_gemini_http_500_exit_244_is_an_error_from_the_stream() -> None:
    assert exit_code("gemini-cli/error/stdout.jsonl") == 244
    messages = run(GeminiParser(), lines("gemini-cli/error/stdout.jsonl"), 244)
    assert [m["type"] for m in messages] == ["error"] and "mock internal server error" in messages[0]["error"]


def test_opencode_is_done_only_when_it_exits_0_without_an_error() -> None:
    decoded = lines("opencode/tool/stdout.jsonl")
    done = run(OpencodeParser(), decoded, 0)[-1]
    assert (
        done["type"] == "done" and done["usage"]["total"] == 240 and done["usage"]["cache"] == {"write": 0, "read": 0}
    )
    assert "done" not in [m["type"] for m in run(OpencodeParser(), decoded, -2)]  # killed by a signal: no done
    errored = run(OpencodeParser(), lines("opencode/error/stdout.jsonl"), 0)
    assert [m["type"] for m in errored] == ["error"]


# -- quirks: Qwen's "[API Error: …]" text ----------------------------------------------------------


def test_qwen_api_error_text_is_dropped_before_an_error_result() -> None:
    messages = run(QwenCodeParser(), lines("qwen-code/error/stdout.jsonl"), 1)
    assert [summary(m) for m in messages] == [("error", "[API Error: 500 mock internal server error]")]


def test_qwen_api_error_like_text_shows_when_the_turn_succeeds() -> None:
    def assistant(text: str) -> dict[str, Any]:
        return {"type": "assistant", "message": {"model": "m", "content": [{"type": "text", "text": text}]}}

    messages = run(
        QwenCodeParser(),
        [
            assistant("[API Error is a string I was asked to print]"),
            {"type": "result", "is_error": False, "result": "ok"},
        ],
        0,
    )
    assert [summary(m) for m in messages] == [("text", "[API Error is a string I was asked to print]"), ("done", "ok")]
    # A held text goes out before whatever the next line brings, in order.
    messages = run(QwenCodeParser(), [assistant("[API Error? no"), assistant("more")], 0)
    assert [m["content"] for m in messages] == ["[API Error? no", "more"]


# -- the command lines ------------------------------------------------------------------------------


def options(**kw: Any) -> SessionOptions:
    return SessionOptions(prompt=kw.pop("prompt", "-rf do it"), cwd="/w", **kw)


def test_command_lines_keep_the_prompt_a_value() -> None:
    assert CodexAdapter().command(options(model="o3", permission_mode="read-only", resume_agent_session_id="t1")) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "-C", "/w", "-m", "o3", "-s", "read-only",
        "resume", "t1", "--", "-rf do it",
    ]  # fmt: skip
    assert GeminiAdapter("/opt/g").command(options(permission_mode="yolo", resume_agent_session_id="s")) == [
        "/opt/g", "--prompt=-rf do it", "--output-format", "stream-json", "--approval-mode", "yolo", "--resume", "s",
    ]  # fmt: skip
    assert OpencodeAdapter().command(options(model="mock/m", resume_agent_session_id="ses_1")) == [
        "opencode", "run", "--format", "json", "--thinking", "--model", "mock/m", "--session", "ses_1",
        "--", "-rf do it",
    ]  # fmt: skip
    qwen = QwenCodeAdapter().command(options(permission_mode="yolo", max_turns=3, system_prompt="-x"))
    assert qwen == [
        "qwen", "--input-format", "stream-json", "--output-format", "stream-json", "--approval-mode", "yolo",
        "--system-prompt=-x", "--max-session-turns", "3",
    ]  # fmt: skip
    assert QwenCodeAdapter().encode_user("hi") == b'{"type":"user","message":{"role":"user","content":"hi"}}\n'


def test_gemini_runs_the_agent_itself_not_a_relaunched_child() -> None:
    assert GeminiAdapter().environment({"PATH": "/bin"})["GEMINI_CLI_NO_RELAUNCH"] == "true"
    assert GeminiAdapter().environment({"GEMINI_CLI_NO_RELAUNCH": "false"})["GEMINI_CLI_NO_RELAUNCH"] == "false"


def test_the_long_lived_modes_command_lines() -> None:
    """interactive, permission_prompts or deltas pick the long-lived mode; its argv keeps the session's options."""
    assert QwenCodeAdapter().driver(options(interactive=True)) is None  # Qwen's stream-json mode is interactive
    qwen = QwenCodeAdapter().driver(options(permission_prompts=True, model="m", system_prompt="-x", max_turns=2))
    assert qwen is not None and qwen.command() == [
        "qwen", "--acp", "--model", "m", "--system-prompt=-x", "--max-session-turns", "2",
    ]  # fmt: skip
    gemini = GeminiAdapter("/opt/g").driver(options(deltas=True, model="gemini-2.5-flash"))
    assert gemini is not None and gemini.command() == ["/opt/g", "--acp", "--model", "gemini-2.5-flash"]
    assert not gemini.can_resume()
    opencode = OpencodeAdapter().driver(options(permission_prompts=True, model="mock/m"))
    assert opencode is not None and opencode.command() == ["opencode", "acp", "--cwd", "/w"]
    env = opencode.environment({"PATH": "/bin"})
    assert json.loads(env["OPENCODE_PERMISSION"]) == {"bash": "ask", "edit": "ask"}
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"]) == {"model": "mock/m"}
    codex = CodexAdapter().driver(options(interactive=True, model="o3"))
    assert codex is not None and codex.command() == ["codex", "app-server", "-c", 'model="o3"']
    for adapter in (CodexAdapter(), GeminiAdapter(), OpencodeAdapter()):
        assert adapter.driver(options()) is None  # one process per turn, as before
