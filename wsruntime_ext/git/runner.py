"""Running git: the environment, the fixed options, timeouts, streaming progress, and errors → API codes.

Every git call goes through :class:`GitRunner`: an argument list through the
subprocess registry (never a shell), a timeout on every call, and an
environment in which nothing can wait for a terminal — no prompt
(``GIT_TERMINAL_PROMPT=0``), askpass programs that fail, ``ssh -o
BatchMode=yes``, no pager, no editor — and in which git's messages are
parseable (``LC_ALL=C``). :func:`classify` turns what a failed command
printed into the API's error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Callable

from wsruntime_ext.base import ApiError
from wsruntime_ext.git.parse import parse_progress
from wsruntime_ext.procs import Completed, ProcessRegistry

LOCAL_TIMEOUT_S = 30.0
HOOK_TIMEOUT_S = 300.0  # commit runs the repository's hooks (linters, tests): they get longer
NETWORK_TIMEOUT_S = 300.0
OUTPUT_LIMIT = 64 << 20

# Variables that would point git at another repository, index or config than the workspace's
# (set, e.g., when the runtime itself is started from a git hook), or that change its output.
_SCRUBBED = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_CONFIG_PARAMETERS",
        "GIT_REFLOG_ACTION",
        "GIT_LITERAL_PATHSPECS",
        "GIT_GLOB_PATHSPECS",
        "GIT_NOGLOB_PATHSPECS",
        "GIT_ICASE_PATHSPECS",
        "GIT_QUARANTINE_PATH",
        "LANGUAGE",
    }
)


def _false_program() -> str:
    """A program that prints nothing and fails: git and ssh take it as "no credentials"."""
    return shutil.which("false") or "/bin/false"


def build_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of every git child: ``base`` without redirections, never interactive, C locale."""
    env = {k: v for k, v in base.items() if k not in _SCRUBBED and not k.startswith(("GIT_TRACE", "LC_"))}
    fail = _false_program()
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS=fail,
        SSH_ASKPASS=fail,
        GCM_INTERACTIVE="never",
        GIT_PAGER="cat",
        PAGER="cat",
        GIT_EDITOR="true",
        GIT_SEQUENCE_EDITOR="true",
        GIT_MERGE_AUTOEDIT="no",
        # A transfer that stalls (under 1 byte/s for 30 s) fails instead of waiting for the timeout.
        GIT_HTTP_LOW_SPEED_LIMIT="1",
        GIT_HTTP_LOW_SPEED_TIME="30",
        LC_ALL="C",
    )
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=15"
    return env


def batch_ssh_command(configured: str) -> str:
    """A user's ``core.sshCommand`` made non-interactive (``ssh`` gets ``-o BatchMode=yes``)."""
    try:
        words = shlex.split(configured)
    except ValueError:
        return configured
    if words and os.path.basename(words[0]) == "ssh" and "BatchMode" not in configured:
        return f"{configured} -o BatchMode=yes"
    return configured


def literal(path: str) -> str:
    """A client path (workspace-relative, already jailed) as a pathspec git takes literally: no globs, no magic."""
    return ":(literal)" + (path or ".")


def literal_top(repo_path: str) -> str:
    """A repository-relative path as a literal pathspec."""
    return ":(top,literal)" + repo_path


_CREDENTIALS_IN_URL = re.compile(r"(://[^/@\s:]*:)[^@/\s]+@")


def clean_output(raw: bytes, limit: int = 8000) -> str:
    """git's output for a response: text, credentials in URLs masked, bounded."""
    text = _CREDENTIALS_IN_URL.sub(r"\1***@", raw.decode("utf-8", "replace"))
    text = text.replace("\r\n", "\n")
    # Progress meters rewrite their line with \r: keep only what each line ended as.
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return text if len(text) <= limit else "…" + text[-limit:]


def first_error_line(text: str) -> str:
    """The line of git's output that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("fatal:", "error:", "remote: error:", "! ["):
        for line in lines:
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "git failed"


# (status, code, message) by what git printed; the first matching pattern wins.
_FAILURES: list[tuple[re.Pattern[str], int, str, str]] = [
    (
        re.compile(r"not a git repository|must be run in a work tree", re.I),
        409,
        "not_a_git_repository",
        "The workspace is not in a git repository",
    ),
    (
        re.compile(r"detected dubious ownership", re.I),
        409,
        "git_unsafe_repository",
        "git refuses the repository: it is owned by someone else (see git config safe.directory)",
    ),
    (
        re.compile(
            r"\.lock'?: File exists|cannot lock ref|Unable to create '[^']*\.lock'|could not lock config file",
            re.I,
        ),
        409,
        "git_locked",
        "Another git process holds a lock on the repository (index.lock or a ref lock); try again",
    ),
    (
        re.compile(
            r"Please tell me who you are|unable to auto-detect email|no email was given|no name was given"
            r"|empty ident name",
            re.I,
        ),
        422,
        "git_identity_missing",
        "git has no author identity: set user.name and user.email, or pass an author",
    ),
    (
        re.compile(
            r"Authentication failed|could not read (Username|Password)|terminal prompts disabled"
            r"|Permission denied \(|Permission denied, please try again|returned error: 40[13]"
            r"|HTTP Basic: Access denied|Invalid username or password|Host key verification failed"
            r"|access denied|403 Forbidden",
            re.I,
        ),
        502,
        "git_auth_failed",
        "The remote refused the credentials, or needs credentials that are not configured",
    ),
    (
        re.compile(
            r"Could not resolve host|Connection refused|Could not read from remote repository|unable to access"
            r"|Connection timed out|Operation timed out|does not appear to be a git repository"
            r"|repository '[^']*' not found|Repository not found|the remote end hung up|RPC failed",
            re.I,
        ),
        502,
        "git_remote_error",
        "The remote could not be reached or did not answer as a git remote",
    ),
]


def classify(done: Completed, action: str) -> ApiError:
    """The API error for a failed git command, from what it printed."""
    text = clean_output(done.stderr + b"\n" + done.stdout)
    for pattern, status, code, message in _FAILURES:
        if pattern.search(text):
            return ApiError(status, code, message, git_message=first_error_line(text), output=text.strip())
    return ApiError(
        502, "git_failed", f"git {action} failed: {first_error_line(text)}", exit_code=done.returncode, output=text
    )


class GitRunner:
    """Runs git in the workspace through the subprocess registry, with the environment above."""

    def __init__(self, procs: ProcessRegistry, workspace: str, base_env: Mapping[str, str] | None = None) -> None:
        self.procs = procs
        self.workspace = workspace
        self.git = "git"
        self.local_timeout = LOCAL_TIMEOUT_S
        self.hook_timeout = HOOK_TIMEOUT_S
        self.network_timeout = NETWORK_TIMEOUT_S
        self.set_base_env(os.environ if base_env is None else base_env)

    def set_base_env(self, base_env: Mapping[str, str]) -> None:
        """Replace the environment git children start from (tests point HOME at an empty directory)."""
        self.base_env = dict(base_env)
        self.env = build_env(self.base_env)

    def argv(self, args: Sequence[str], read_only: bool = False) -> list[str]:
        head = [
            self.git,
            # Trust the workspace the runtime was started on even when another user owns it: the
            # operator chose it. A parent repository owned by someone else is still refused.
            "-c",
            f"safe.directory={self.workspace}",
            "-c",
            "core.quotepath=false",
            "-c",
            "color.ui=false",
            # Never let git guess an identity from the login and host names: commit as
            # configured (config, GIT_AUTHOR_* / GIT_COMMITTER_*, or the request), or refuse.
            "-c",
            "user.useConfigOnly=true",
        ]
        if read_only:
            head.append("--no-optional-locks")  # status/diff never take index.lock from a user's command
        return [*head, *args]

    async def run(
        self,
        args: Sequence[str],
        *,
        read_only: bool = False,
        timeout: float | None = None,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        output_limit: int = OUTPUT_LIMIT,
    ) -> Completed:
        """Run git to completion; a missing git → 503, a timeout → 504. Other failures are the caller's."""
        full_env = {**self.env, **env} if env else self.env
        try:
            done = await self.procs.run(
                self.argv(args, read_only),
                cwd or self.workspace,
                env=full_env,
                timeout=timeout or self.local_timeout,
                input=input,
                output_limit=output_limit,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise git_unavailable(exc) from None
        if done.timed_out:
            raise timed_out(args, timeout or self.local_timeout)
        return done

    async def stream(
        self,
        args: Sequence[str],
        on_line: Callable[[str], None],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        """Run git, handing each line of its stderr (progress, split on \\r and \\n) to ``on_line`` as it arrives."""
        limit = timeout or self.network_timeout
        full_env = {**self.env, **(env or {})}
        argv = self.argv(args)
        try:
            managed = await self.procs.spawn(argv, self.workspace, env=full_env)
        except (FileNotFoundError, PermissionError) as exc:
            raise git_unavailable(exc) from None
        proc = managed.proc
        assert proc.stdout is not None and proc.stderr is not None
        stderr = bytearray()

        async def read_stdout(stream: asyncio.StreamReader) -> bytes:
            chunks = bytearray()
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return bytes(chunks)
                if len(chunks) < OUTPUT_LIMIT:
                    chunks += chunk

        async def read_stderr(stream: asyncio.StreamReader) -> None:
            pending = b""
            while True:
                chunk = await stream.read(4096)
                if not chunk:
                    break
                if len(stderr) < OUTPUT_LIMIT:
                    stderr.extend(chunk)
                pending += chunk
                *lines, pending = re.split(rb"[\r\n]", pending)
                for line in lines:
                    if line.strip():
                        with contextlib.suppress(Exception):  # a listener's failure never fails git
                            on_line(clean_output(line).strip())
            if pending.strip():
                with contextlib.suppress(Exception):
                    on_line(clean_output(pending).strip())

        work = asyncio.gather(read_stdout(proc.stdout), read_stderr(proc.stderr), proc.wait())
        try:
            out, _, code = await asyncio.wait_for(asyncio.shield(work), limit)
        except asyncio.TimeoutError:
            await managed.kill_tree(grace=1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(work, 5.0)
            raise timed_out(args, limit) from None
        except BaseException:
            await managed.kill_tree(grace=0.5)
            raise
        return Completed(argv, code, out, bytes(stderr))


def git_unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "git_unavailable", f"git cannot be run on this machine: {exc}")


def timed_out(args: Sequence[str], seconds: float) -> ApiError:
    action = next((a for a in args if not a.startswith("-")), "git")
    return ApiError(504, "git_timeout", f"git {action} did not finish within {seconds:g} s and was stopped")


class ProgressThrottle:
    """Progress lines → ``git_progress`` events: a new phase or 100 % at once, the rest at most every 100 ms."""

    def __init__(self, operation: str, publish: Callable[[str, dict], None], interval: float = 0.1) -> None:
        self.operation = operation
        self.publish = publish
        self.interval = interval
        self._last_at = 0.0
        self._last_phase: str | None = None

    def __call__(self, line: str) -> None:
        event = parse_progress(line)
        now = time.monotonic()
        phase = event.get("phase")
        urgent = phase != self._last_phase or event.get("percent") == 100 or phase is None
        if not urgent and now - self._last_at < self.interval:
            return
        self._last_at, self._last_phase = now, phase
        self.publish("git_progress", {"operation": self.operation, **event})
