"""Every recorded Claude Code stream (tests/fixtures/claude-code, real output of claude 2.1.197) → AgentMessages.

The expectations below are ours, written from API.md and CLAUDE-CODE.md §3:
each message is summarised as (type, what it says) — text prefixes compared
with ``startswith`` — and a few semantic rules get tests of their own.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import pytest

from wsruntime_ext.agents.adapter import LIVE_TYPES
from wsruntime_ext.agents.claude_code import ClaudeCodeAdapter, ClaudeCodeParser, result_error_text, tool_result_text

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "claude-code")

EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "01-text/no-verbose.stdout.jsonl": [],
    "01-text/output-json.stdout.json": [
        ("done", "Hello from mock (text); turn with 2 mess"),
    ],
    "01-text/prompt-on-stdin.stdout.jsonl": [
        ("text", "Hello from mock (text); turn with 2 mess"),
        ("done", "Hello from mock (text); turn with 2 mess"),
    ],
    "01-text/stdout.jsonl": [
        ("text", "Hello from mock (text); turn with 2 mess"),
        ("done", "Hello from mock (text); turn with 2 mess"),
    ],
    "02-thinking-bash-tool/stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "03-write-read/stdout.jsonl": [
        ("text", "Creating the file."),
        ("tool_use", "Write"),
        ("tool_result", "Write", False, "File created successfully at: "),
        ("text", "Reading it back."),
        ("tool_use", "Read"),
        ("tool_result", "Read", False, "1\thello from Write\n2\t"),
        ("text", "File created and read back."),
        ("done", "File created and read back."),
    ],
    "04-permission-denied/denywrite.stdout.jsonl": [
        ("text", "I'll write a file."),
        ("tool_use", "Write"),
        ("tool_result", "Write", True, "Claude requested permissions t"),
        ("text", "The tool was not permitted."),
        ("done", "The tool was not permitted."),
    ],
    "04-permission-denied/disallowed.stdout.jsonl": [
        ("text", "I'll run a command."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", True, "<tool_use_error>Error: No such"),
        ("text", "The tool was not permitted."),
        ("done", "The tool was not permitted."),
    ],
    "04-permission-denied/echo-auto-allowed.stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "04-permission-denied/redirect.stdout.jsonl": [
        ("text", "I'll run a command."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", True, "Output redirection to '/worksp"),
        ("text", "The command was not permitted."),
        ("done", "The command was not permitted."),
    ],
    "04-permission-denied/stdout.jsonl": [
        ("text", "I'll run a command."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", True, "touch in '/workspace/ws-s4/den"),
        ("text", "The tool was not permitted."),
        ("done", "The tool was not permitted."),
    ],
    "04b-permission-prompt-stdio/stdout.jsonl": [
        ("text", "I'll run a command."),
        ("tool_use", "Bash"),
        ("permission_request", "Bash"),
        ("tool_result", "Bash", False, "(Bash completed with no output"),
        ("text", "The tool was not permitted."),
        ("done", "The tool was not permitted."),
        ("text", "I'll write a file."),
        ("tool_use", "Write"),
        ("permission_request", "Write"),
        ("tool_result", "Write", True, "Denied by test driver"),
        ("text", "The tool was not permitted."),
        ("done", "The tool was not permitted."),
    ],
    "05a-api-error-500/default-retries.stdout.jsonl": [
        ("error", "API Error: 500 Internal server error (mo"),
    ],
    "05a-api-error-500/stdout.jsonl": [
        ("error", "API Error: 500 Internal server error (mo"),
    ],
    "05b-api-error-529/default-retries.stdout.jsonl": [
        ("error", "API Error: Repeated 529 Overloaded error"),
    ],
    "05b-api-error-529/stdout.jsonl": [
        ("error", "API Error: Repeated 529 Overloaded error"),
    ],
    "05c-api-error-401/default-retries.stdout.jsonl": [
        ("error", "Invalid API key · Fix external API key"),
    ],
    "05c-api-error-401/stdout.jsonl": [
        ("error", "Invalid API key · Fix external API key"),
    ],
    "05d-api-error-400/output-json.stdout.json": [
        ("error", "API Error: 400 bad request (mock)"),
    ],
    "05d-api-error-400/stdout.jsonl": [
        ("error", "API Error: 400 bad request (mock)"),
    ],
    "05e-api-error-midstream/stdout.jsonl": [
        ("text", "Recovered via non-streaming fallback."),
        ("done", "Recovered via non-streaming fallback."),
    ],
    "05f-api-unreachable/stdout.jsonl": [
        ("error", "API Error: Unable to connect to API (Con"),
    ],
    "06-multi-turn-stdin/exit-after-error.stdout.jsonl": [
        ("text", "Hello from mock (text); turn with 2 mess"),
        ("done", "Hello from mock (text); turn with 2 mess"),
        ("error", "API Error: 400 bad request (mock)"),
    ],
    "06-multi-turn-stdin/exit-after-ok.stdout.jsonl": [
        ("error", "API Error: 400 bad request (mock)"),
        ("text", "Hello from mock (text); turn with 2 mess"),
        ("done", "Hello from mock (text); turn with 2 mess"),
    ],
    "06-multi-turn-stdin/ignored-input.stdout.jsonl": [
        ("text", "Reply to: 'scn:multi after garbage' (nms"),
        ("done", "Reply to: 'scn:multi after garbage' (nms"),
    ],
    "06-multi-turn-stdin/invalid-json.stdout.jsonl": [],
    "06-multi-turn-stdin/queued-replay.stdout.jsonl": [
        ("text", "Reply to: 'scn:multi first question' (nm"),
        ("done", "Reply to: 'scn:multi first question' (nm"),
        ("text", "Reply to: 'second question' (nmsg=4)"),
        ("done", "Reply to: 'second question' (nmsg=4)"),
    ],
    "06-multi-turn-stdin/stdout.jsonl": [
        ("text", "Reply to: 'scn:multi first question' (nm"),
        ("done", "Reply to: 'scn:multi first question' (nm"),
        ("text", "Reply to: 'second question' (nmsg=4)"),
        ("done", "Reply to: 'second question' (nmsg=4)"),
    ],
    "07-resume/continue.stdout.jsonl": [
        ("text", "Hello from mock (resume); turn with 4 me"),
        ("done", "Hello from mock (resume); turn with 4 me"),
    ],
    "07-resume/other-cwd.stdout.jsonl": [
        ("error", "No conversation found with session ID: 3"),
    ],
    "07-resume/run1.stdout.jsonl": [
        ("text", "Hello from mock (resume); turn with 2 me"),
        ("done", "Hello from mock (resume); turn with 2 me"),
    ],
    "07-resume/run2-resume.stdout.jsonl": [
        ("text", "Hello from mock (resume); turn with 4 me"),
        ("done", "Hello from mock (resume); turn with 4 me"),
    ],
    "07-resume/run3-fork.stdout.jsonl": [
        ("text", "Hello from mock (resume); turn with 6 me"),
        ("done", "Hello from mock (resume); turn with 6 me"),
    ],
    "07-resume/session-id-reused.stdout.jsonl": [],
    "07-resume/session-id.stdout.jsonl": [
        ("text", "Hello from mock (resume); turn with 2 me"),
        ("done", "Hello from mock (resume); turn with 2 me"),
    ],
    "07-resume/unknown-id.stdout.jsonl": [
        ("error", "No conversation found with session ID: 1"),
    ],
    "08a-interrupt-sigint/during-tool.stdout.jsonl": [
        ("text", "Running a slow command."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", True, "The user doesn't want to proce"),
        ("error", "interrupted"),
    ],
    "08a-interrupt-sigint/stdin-left-open.stdout.jsonl": [
        ("text", "chunk0 chunk1 chunk2 chunk3 "),
        ("error", "interrupted"),
    ],
    "08a-interrupt-sigint/stdout.jsonl": [
        ("text", "chunk0 chunk1 chunk2 "),
        ("error", "interrupted"),
    ],
    "08a-interrupt-sigint/stream-json-input.stdout.jsonl": [
        ("text", "chunk0 chunk1 chunk2 chunk3 "),
        ("error", "interrupted"),
    ],
    "08b-interrupt-sigterm/during-tool.stdout.jsonl": [
        ("text", "Running a slow command."),
        ("tool_use", "Bash"),
    ],
    "08b-interrupt-sigterm/stdout.jsonl": [],
    "08c-interrupt-control-request/during-tool.stdout.jsonl": [
        ("text", "Running a slow command."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", True, "The user doesn't want to proce"),
        ("error", "interrupted"),
    ],
    "08c-interrupt-control-request/other-requests.stdout.jsonl": [
        ("text", "Hello from mock (text); turn with 2 mess"),
        ("done", "Hello from mock (text); turn with 2 mess"),
    ],
    "08c-interrupt-control-request/stdout.jsonl": [
        ("text", "chunk0 chunk1 chunk2 chunk3 "),
        ("error", "interrupted"),
        ("text", "Reply to: 'scn:multi after interrupt' (n"),
        ("done", "Reply to: 'scn:multi after interrupt' (n"),
    ],
    "08c-interrupt-control-request/then-eof.stdout.jsonl": [
        ("text", "chunk0 chunk1 chunk2 "),
        ("error", "interrupted"),
    ],
    "09-partial-messages/stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "10-hooks/blocking-hook.stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", True, "PreToolUse:Bash hook error: [e"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "10-hooks/hook-events.stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "10-hooks/scopes.stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "10-hooks/setting-sources-project.stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "10-hooks/settings-flag.stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "10-hooks/stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("text", "Done: hello from mock."),
        ("done", "Done: hello from mock."),
    ],
    "11-mcp/allowed.stdout.jsonl": [
        ("text", "Calling the MCP tool."),
        ("tool_use", "mcp__echo__echo"),
        ("tool_result", "mcp__echo__echo", False, "echo: ping"),
        ("text", "Done. mcp tools offered: ['mcp__echo__ec"),
        ("done", "Done. mcp tools offered: ['mcp__echo__ec"),
    ],
    "11-mcp/disabled.stdout.jsonl": [
        ("text", "Done. mcp tools offered: []"),
        ("done", "Done. mcp tools offered: []"),
    ],
    "11-mcp/mcp-config-flag.stdout.jsonl": [
        ("text", "Calling the MCP tool."),
        ("tool_use", "mcp__cfg__echo"),
        ("tool_result", "mcp__cfg__echo", False, "echo: ping"),
        ("text", "Done. mcp tools offered: ['mcp__cfg__ech"),
        ("done", "Done. mcp tools offered: ['mcp__cfg__ech"),
    ],
    "11-mcp/stdout.jsonl": [
        ("text", "Calling the MCP tool."),
        ("tool_use", "mcp__echo__echo"),
        ("tool_result", "mcp__echo__echo", True, "Claude requested permissions t"),
        ("text", "Done. mcp tools offered: ['mcp__echo__ec"),
        ("done", "Done. mcp tools offered: ['mcp__echo__ec"),
    ],
    "12-max-turns/stdout.jsonl": [
        ("thinking", "Let me run a command."),
        ("text", "I'll list files."),
        ("tool_use", "Bash"),
        ("tool_result", "Bash", False, "hi-from-tool"),
        ("error", "Reached maximum number of turns (1)"),
    ],
}


def parse_file(name: str, live: bool = False) -> list[dict[str, Any]]:
    """The messages of a recording; the live-only deltas too when ``live``."""
    parser = ClaudeCodeParser()
    out: list[dict[str, Any]] = []
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.extend(m for m in parser.parse(json.loads(line)) if live or m["type"] not in LIVE_TYPES)
    return out


@pytest.mark.parametrize(
    ("name", "blocks", "same"),
    [
        ("09-partial-messages/stdout.jsonl", [("thinking", 0), ("text", 1), ("text", 0)], True),
        # The stream broke mid-block and the CLI asked again without streaming: the complete block differs
        # from its deltas, and it is the one that counts (the deltas were only a preview).
        ("05e-api-error-midstream/stdout.jsonl", [("text", 0)], False),
    ],
)
def test_partial_messages_become_deltas_of_the_following_block(
    name: str, blocks: list[tuple[str, int]], same: bool
) -> None:
    """--include-partial-messages: each block's deltas, joined, are the complete block that follows them."""
    seen: list[tuple[str, int]] = []
    pending: list[dict[str, Any]] = []
    for message in parse_file(name, live=True):
        if message["type"] in LIVE_TYPES:
            assert set(message) == {"type", "content", "block"} and message["content"]
            pending.append(message)
            continue
        if pending:
            kind = pending[0]["type"].removesuffix("_delta")
            assert all(p["type"] == pending[0]["type"] and p["block"] == pending[0]["block"] for p in pending)
            if message["type"] == kind:
                assert ("".join(p["content"] for p in pending) == message["content"]) is same
            seen.append((kind, pending[0]["block"]))
            pending = []
    assert seen == blocks


def summary(message: dict[str, Any]) -> tuple[Any, ...]:
    kind = message["type"]
    if kind in ("text", "thinking", "done"):
        return (kind, message["content"])
    if kind in ("tool_use", "permission_request"):
        return (kind, message["tool"])
    if kind == "tool_result":
        return (kind, message["tool"], message["is_error"], message["output"])
    assert kind == "error", kind
    return (kind, message["error"])


def test_every_recording_has_an_expectation() -> None:
    recorded = {os.path.relpath(p, FIXTURES) for p in glob.glob(os.path.join(FIXTURES, "*", "*stdout.json*"))}
    assert recorded == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_maps_to_expected_messages(name: str) -> None:
    got = [summary(m) for m in parse_file(name)]
    want = EXPECTED[name]
    assert len(got) == len(want), got
    for g, w in zip(got, want):
        assert g[0] == w[0] and len(g) == len(w), (g, w)
        for gv, wv in zip(g[1:], w[1:]):
            assert gv.startswith(wv) if isinstance(wv, str) else gv == wv, (g, w)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_turn_ends_once(name: str) -> None:
    """Nothing follows a turn's end but the next turn; a recording with a result ends with exactly one."""
    messages = parse_file(name)
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        results = sum(1 for line in f if line.strip() and json.loads(line).get("type") == "result")
    assert sum(1 for m in messages if m["type"] in ("done", "error")) == results
    if results:
        assert messages[-1]["type"] in ("done", "error")


def test_api_error_is_decided_by_is_error_not_subtype() -> None:
    messages = parse_file("05c-api-error-401/stdout.jsonl")
    with open(os.path.join(FIXTURES, "05c-api-error-401/stdout.jsonl"), encoding="utf-8") as f:
        result = next(json.loads(line) for line in f if '"type":"result"' in line)
    assert result["subtype"] == "success" and result["is_error"] is True
    assert [m["type"] for m in messages] == ["error"]  # the synthetic assistant text is not shown
    assert messages[0]["error"] == "Invalid API key · Fix external API key"


def test_done_carries_usage_cost_and_duration() -> None:
    done = parse_file("01-text/stdout.jsonl")[-1]
    assert done["type"] == "done"
    assert isinstance(done["usage"], dict) and done["usage"]["output_tokens"] >= 0
    assert done["cost_usd"] > 0 and done["duration_ms"] >= 0


def test_tool_results_are_paired_by_id() -> None:
    messages = parse_file("03-write-read/stdout.jsonl")
    uses = {m["tool_use_id"]: m["tool"] for m in messages if m["type"] == "tool_use"}
    results = [m for m in messages if m["type"] == "tool_result"]
    assert len(results) == 2
    for result in results:
        assert result["tool"] == uses[result["tool_use_id"]]
        assert result["is_error"] is False and "error" not in result  # a missing is_error means success


def test_failed_tool_result_has_error() -> None:
    result = next(m for m in parse_file("04-permission-denied/denywrite.stdout.jsonl") if m["type"] == "tool_result")
    assert result["is_error"] is True
    assert result["error"] == result["output"] and "requested permissions" in result["error"]


def test_mcp_list_content_is_joined() -> None:
    assert tool_result_text([{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]) == "a\nb"
    result = next(m for m in parse_file("11-mcp/allowed.stdout.jsonl") if m["type"] == "tool_result")
    assert result["output"] == "echo: ping"


def test_permission_request_carries_what_the_answer_needs() -> None:
    requests = [m for m in parse_file("04b-permission-prompt-stdio/stdout.jsonl") if m["type"] == "permission_request"]
    assert [r["tool"] for r in requests] == ["Bash", "Write"]
    assert requests[0]["request_id"] == "0dda3960-236c-4c1c-9c68-5e7ff46155c8"
    assert requests[0]["input"] == {"command": "touch denied.txt", "description": "touch"}
    assert requests[0]["tool_use_id"] == "toolu_mock_01"


def test_session_id_is_remembered() -> None:
    parser = ClaudeCodeParser()
    with open(os.path.join(FIXTURES, "07-resume/run1.stdout.jsonl"), encoding="utf-8") as f:
        first = json.loads(f.readline())
    parser.parse(first)
    assert parser.agent_session_id == first["session_id"]


def test_mcp_servers_are_taken_from_the_init_line() -> None:
    parser = ClaudeCodeParser()
    assert parser.mcp_servers is None
    with open(os.path.join(FIXTURES, "11-mcp/stdout.jsonl"), encoding="utf-8") as f:
        for line in f:
            parser.parse(json.loads(line))
    assert parser.mcp_servers == [{"name": "echo", "status": "connected"}, {"name": "broken", "status": "failed"}]


def test_interrupt_result_reads_interrupted() -> None:
    assert result_error_text(
        {"is_error": True, "terminal_reason": "aborted_tools", "errors": ["[ede_diagnostic] x"]}
    ) == ("interrupted")
    assert (
        result_error_text({"is_error": True, "subtype": "error_max_turns", "errors": ["Reached max"]}) == "Reached max"
    )


def test_replayed_user_lines_and_unknown_lines_give_nothing() -> None:
    parser = ClaudeCodeParser()
    assert parser.parse({"type": "user", "isReplay": True, "message": {"content": [{"type": "tool_result"}]}}) == []
    assert parser.parse({"type": "something_new", "x": 1}) == []
    assert parser.parse({"type": "assistant", "message": "not an object"}) == []


def test_adapter_encodes_the_stdin_protocol() -> None:
    adapter = ClaudeCodeAdapter()
    assert json.loads(adapter.encode_user("hi")) == {"type": "user", "message": {"role": "user", "content": "hi"}}
    assert json.loads(adapter.encode_interrupt("r1"))["request"] == {"subtype": "interrupt"}
    allow = json.loads(adapter.encode_permission("q", True, None, {"a": 1}))["response"]
    assert allow == {
        "subtype": "success",
        "request_id": "q",
        "response": {"behavior": "allow", "updatedInput": {"a": 1}},
    }
    deny = json.loads(adapter.encode_permission("q", False, "no", {}))["response"]["response"]
    assert deny == {"behavior": "deny", "message": "no"}
