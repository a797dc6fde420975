"""Configuration: every option is a command-line flag and a ``WSRUNTIME_<NAME>`` variable.

Flags win over variables, variables over the embedded defaults. A bad value in
either place exits with status 2 and a message naming the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from wsruntime_ext import __version__
from wsruntime_ext.globs import glob_to_regex

DEFAULT_PORT = 3002
DEFAULT_MAX_UPLOAD_SIZE = 1 << 30  # 1 GiB
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
WATCH_BACKENDS = ("inotify", "poll", "off")
DEFAULT_STATS_INTERVAL = 2.0
DEFAULT_MAX_SESSIONS = 10
DEFAULT_MAX_RUNS = 8
DEFAULT_SCRIPT_OUTPUT_LIMIT = 16 << 20
DEFAULT_MAX_PROCESSES = 32
DEFAULT_TERMINAL_SCROLLBACK = 1 << 20
MIN_TERMINAL_SCROLLBACK = 4 << 10


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the runtime was told at start-up; immutable once parsed."""

    host: str
    port: int
    workspace: str  # absolute, symlinks resolved
    workspace_id: str
    token: str | None
    allow_origins: tuple[str, ...]
    state_dir: str  # absolute
    log_level: str
    log_format: str
    max_upload_size: int
    watch: str = "inotify"  # inotify (polling where it is missing), poll, or off
    watch_ignore: tuple[str, ...] = ()  # --watch-ignore patterns, on top of the default ignores
    stats_interval: float = DEFAULT_STATS_INTERVAL  # seconds between system_stats events
    max_sessions: int = DEFAULT_MAX_SESSIONS  # agent sessions running at once; more are refused with 429
    claude_bin: str | None = None  # the Claude Code executable (default: claude on PATH)
    openspec_bin: str | None = None  # the OpenSpec CLI (default: openspec on PATH)
    home: str | None = None  # the home directory of agent sessions and ~ of the settings (default: $HOME)
    max_runs: int = DEFAULT_MAX_RUNS  # script runs at once; more are refused with 429
    script_output_limit: int = DEFAULT_SCRIPT_OUTPUT_LIMIT  # output kept per run; the oldest goes first
    max_processes: int = DEFAULT_MAX_PROCESSES  # processes and terminals at once; more are refused with 429
    terminal_scrollback: int = DEFAULT_TERMINAL_SCROLLBACK  # a terminal's last output bytes kept for replay
    process_output_limit: int = DEFAULT_SCRIPT_OUTPUT_LIMIT  # pipe output kept per process; the oldest goes first
    codex_bin: str | None = None  # the Codex CLI executable (default: codex on PATH)
    gemini_bin: str | None = None  # the Gemini CLI executable (default: gemini on PATH)
    qwen_bin: str | None = None  # the Qwen Code executable (default: qwen on PATH)
    opencode_bin: str | None = None  # the opencode executable (default: opencode on PATH)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.token)

    @property
    def allow_any_origin(self) -> bool:
        return "*" in self.allow_origins

    @property
    def home_dir(self) -> str:
        """``--home``, else ``$HOME`` (found the way the agent CLIs find theirs)."""
        return self.home or os.path.expanduser("~")


def in_container(environ: Mapping[str, str] | None = None) -> bool:
    """True inside Docker, Podman or Kubernetes, where the runtime must be reachable from outside."""
    environ = os.environ if environ is None else environ
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv") or "KUBERNETES_SERVICE_HOST" in environ


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(value: str) -> int:
    """Parse ``1073741824``, ``512M``, ``1G``, ``64KiB`` into bytes."""
    text = _strip_size_suffix(value.strip().lower())
    unit = text[-1:] if text[-1:].isalpha() else ""
    number = text[: len(text) - len(unit)]
    try:
        size = int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, KeyError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (use e.g. 1048576, 512M or 1G)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {value!r}")
    return size


def _strip_size_suffix(text: str) -> str:
    for suffix in ("ib", "b"):
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    return parse


def _origin(value: str) -> str:
    value = value.strip().rstrip("/")
    if value == "*":
        return value
    if "://" not in value or value.split("://", 1)[1] == "":
        raise argparse.ArgumentTypeError(f"an origin looks like http://host:port, not {value!r}")
    return value.lower()


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 3600 seconds: {value!r}")
    return seconds


def _session_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000: {value!r}")
    return count


def _scrollback(value: str) -> int:
    size = _size(value)
    if size < MIN_TERMINAL_SCROLLBACK:
        raise argparse.ArgumentTypeError(f"must be at least 4K: {value!r}")
    return size


def _ignore_pattern(value: str) -> str:
    pattern = value.strip()
    if not pattern.strip("!/") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        raise argparse.ArgumentTypeError(f"not an ignore pattern: {value!r} (e.g. '*.log', 'build/', 'dist/**')")
    try:
        re.compile(glob_to_regex(pattern.lstrip("!").strip("/")))
    except (ValueError, re.error) as exc:
        raise argparse.ArgumentTypeError(f"not an ignore pattern: {value!r} ({exc})") from None
    return pattern


# (flag, dest, type, help); the environment variable is WSRUNTIME_<DEST upper-cased>.
_OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("--host", "host", str, "address to bind (default: 0.0.0.0 in a container, else 127.0.0.1)"),
    ("--port", "port", _port, f"port to listen on, 0 picks a free one (default: {DEFAULT_PORT})"),
    ("--workspace", "workspace", str, "the workspace directory (default: the current directory)"),
    ("--workspace-id", "workspace_id", str, "the workspace id (default: $WORKSPACE_ID, else the directory name)"),
    ("--token", "token", str, "bearer token required on every API call (default: none)"),
    ("--state-dir", "state_dir", str, "where runtime state is kept (default: <workspace>/.wsruntime)"),
    ("--log-level", "log_level", _choice(LOG_LEVELS), "debug, info, warning or error (default: info)"),
    ("--log-format", "log_format", _choice(LOG_FORMATS), "text or json (default: text)"),
    ("--max-upload-size", "max_upload_size", _size, "largest request body for uploads and writes (default: 1G)"),
    ("--watch", "watch", _choice(WATCH_BACKENDS), "file watcher: inotify (falls back to polling), poll or off"),
    ("--stats-interval", "stats_interval", _seconds, "seconds between system_stats events (default: 2)"),
    ("--max-sessions", "max_sessions", _session_count, "agent sessions running at once, 1-1000 (default: 10)"),
    ("--claude-bin", "claude_bin", str, "the Claude Code executable (default: claude on PATH)"),
    ("--openspec-bin", "openspec_bin", str, "the OpenSpec CLI, for the init action (default: openspec on PATH)"),
    ("--home", "home", str, "home directory of agent sessions, where user settings live (default: $HOME)"),
    ("--max-runs", "max_runs", _session_count, "script runs at once, 1-1000 (default: 8)"),
    ("--script-output-limit", "script_output_limit", _size, "output kept per script run, oldest dropped (16M)"),
    ("--max-processes", "max_processes", _session_count, "processes and terminals at once, 1-1000 (default: 32)"),
    ("--terminal-scrollback", "terminal_scrollback", _scrollback, "a terminal's output kept for replay (1M)"),
    ("--process-output-limit", "process_output_limit", _size, "pipe output kept per process, oldest dropped (16M)"),
    ("--codex-bin", "codex_bin", str, "the Codex CLI executable (default: codex on PATH)"),
    ("--gemini-bin", "gemini_bin", str, "the Gemini CLI executable (default: gemini on PATH)"),
    ("--qwen-bin", "qwen_bin", str, "the Qwen Code executable (default: qwen on PATH)"),
    ("--opencode-bin", "opencode_bin", str, "the opencode executable (default: opencode on PATH)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsruntime",
        description="wsruntime — the Workspace Runtime: files, git, agent sessions, "
        "OpenSpec, settings, scripts and live events of one workspace over HTTP and WebSocket.",
        epilog="Every option can also be set as an environment variable WSRUNTIME_<NAME>, "
        "e.g. WSRUNTIME_PORT=3002 or WSRUNTIME_ALLOW_ORIGIN=https://a.example,https://b.example.",
    )
    for flag, dest, kind, text in _OPTIONS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument(
        "--allow-origin",
        dest="allow_origin",
        type=_origin,
        action="append",
        default=None,
        help="an origin allowed for CORS and WebSockets, repeatable; '*' allows any (default: same origin only)",
    )
    parser.add_argument(
        "--watch-ignore",
        dest="watch_ignore",
        type=_ignore_pattern,
        action="append",
        default=None,
        help="a path pattern whose changes are not reported, repeatable ('*.log', 'build/', 'dist/**'); "
        "'!node_modules' reports node_modules again (default: .git internals, node_modules, the state directory)",
    )
    parser.add_argument("--version", action="version", version=f"wsruntime {__version__}")
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse flags and environment into a Config; exits 2 with a clear message on bad input."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = vars(args)

    # Environment variables fill what the command line left unset, through the same parsers.
    for _flag, dest, kind, _ in _OPTIONS:
        env_name = "WSRUNTIME_" + dest.upper()
        if values[dest] is None and environ.get(env_name, "") != "":
            try:
                values[dest] = kind(environ[env_name])
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{env_name}: {exc}")
    if values["allow_origin"] is None and environ.get("WSRUNTIME_ALLOW_ORIGIN"):
        try:
            values["allow_origin"] = [_origin(o) for o in environ["WSRUNTIME_ALLOW_ORIGIN"].split(",") if o.strip()]
        except argparse.ArgumentTypeError as exc:
            parser.error(f"WSRUNTIME_ALLOW_ORIGIN: {exc}")
    if values["watch_ignore"] is None and environ.get("WSRUNTIME_WATCH_IGNORE"):
        try:
            values["watch_ignore"] = [
                _ignore_pattern(p) for p in environ["WSRUNTIME_WATCH_IGNORE"].split(",") if p.strip()
            ]
        except argparse.ArgumentTypeError as exc:
            parser.error(f"WSRUNTIME_WATCH_IGNORE: {exc}")

    workspace_arg = values["workspace"] or os.getcwd()
    workspace = os.path.realpath(os.path.expanduser(workspace_arg))
    if not os.path.isdir(workspace):
        parser.error(f"workspace is not a directory: {workspace_arg}")

    workspace_id = values["workspace_id"] or environ.get("WORKSPACE_ID") or os.path.basename(workspace) or "workspace"
    if "/" in workspace_id or any(ord(c) < 0x20 or ord(c) == 0x7F for c in workspace_id):
        parser.error(f"workspace id must not contain '/' or control characters: {workspace_id!r}")

    token = values["token"]
    if token is not None and (token.strip() != token or not token):
        parser.error("token must not be empty or start or end with white space")

    state_dir = values["state_dir"] or os.path.join(workspace, ".wsruntime")
    state_dir = os.path.abspath(os.path.expanduser(state_dir))

    host = values["host"] or ("0.0.0.0" if in_container(environ) else "127.0.0.1")
    return Config(
        host=host,
        port=DEFAULT_PORT if values["port"] is None else values["port"],
        workspace=workspace,
        workspace_id=workspace_id,
        token=token or None,
        allow_origins=tuple(values["allow_origin"] or ()),
        state_dir=state_dir,
        log_level=values["log_level"] or "info",
        log_format=values["log_format"] or "text",
        max_upload_size=values["max_upload_size"] or DEFAULT_MAX_UPLOAD_SIZE,
        watch=values["watch"] or "inotify",
        watch_ignore=tuple(values["watch_ignore"] or ()),
        stats_interval=values["stats_interval"] or DEFAULT_STATS_INTERVAL,
        max_sessions=values["max_sessions"] or DEFAULT_MAX_SESSIONS,
        claude_bin=values["claude_bin"] or None,
        openspec_bin=values["openspec_bin"] or None,
        home=os.path.abspath(os.path.expanduser(values["home"])) if values["home"] else None,
        max_runs=values["max_runs"] or DEFAULT_MAX_RUNS,
        script_output_limit=values["script_output_limit"] or DEFAULT_SCRIPT_OUTPUT_LIMIT,
        max_processes=values["max_processes"] or DEFAULT_MAX_PROCESSES,
        terminal_scrollback=values["terminal_scrollback"] or DEFAULT_TERMINAL_SCROLLBACK,
        process_output_limit=values["process_output_limit"] or DEFAULT_SCRIPT_OUTPUT_LIMIT,
        codex_bin=values["codex_bin"] or None,
        gemini_bin=values["gemini_bin"] or None,
        qwen_bin=values["qwen_bin"] or None,
        opencode_bin=values["opencode_bin"] or None,
    )


def exit_with_error(message: str) -> None:
    """Print a start-up failure the way argparse does and exit 2."""
    print(f"wsruntime: error: {message}", file=sys.stderr)
    raise SystemExit(2)
