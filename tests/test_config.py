"""Configuration: flags, WSRUNTIME_* variables, defaults, and clear failures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ENTRY
from wsruntime_ext import __version__
from wsruntime_ext.config import DEFAULT_MAX_UPLOAD_SIZE, in_container, parse_config


def test_defaults(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = os.path.join(os.fspath(tmp_path), "my-project")
    os.mkdir(workspace)
    monkeypatch.chdir(workspace)
    config = parse_config([], environ={})
    assert config.port == 3002
    assert config.workspace == os.path.realpath(workspace)
    assert config.workspace_id == "my-project"
    assert config.token is None and not config.auth_enabled
    assert config.allow_origins == ()
    assert config.state_dir == os.path.join(os.path.realpath(workspace), ".wsruntime")
    assert config.log_level == "info" and config.log_format == "text"
    assert config.max_upload_size == DEFAULT_MAX_UPLOAD_SIZE
    assert config.host == ("0.0.0.0" if in_container() else "127.0.0.1")


def test_environment_variables(tmp_path: os.PathLike[str]) -> None:
    env = {
        "WSRUNTIME_HOST": "::1",
        "WSRUNTIME_PORT": "4000",
        "WSRUNTIME_WORKSPACE": os.fspath(tmp_path),
        "WSRUNTIME_WORKSPACE_ID": "from-env",
        "WSRUNTIME_TOKEN": "s3cret",
        "WSRUNTIME_ALLOW_ORIGIN": "https://a.example, https://b.example",
        "WSRUNTIME_STATE_DIR": os.path.join(os.fspath(tmp_path), "state"),
        "WSRUNTIME_LOG_LEVEL": "DEBUG",
        "WSRUNTIME_LOG_FORMAT": "json",
        "WSRUNTIME_MAX_UPLOAD_SIZE": "512M",
    }
    config = parse_config([], environ=env)
    assert config.host == "::1" and config.port == 4000
    assert config.workspace_id == "from-env" and config.token == "s3cret"
    assert config.allow_origins == ("https://a.example", "https://b.example")
    assert config.state_dir == os.path.join(os.fspath(tmp_path), "state")
    assert config.log_level == "debug" and config.log_format == "json"
    assert config.max_upload_size == 512 << 20


def test_flags_win_over_environment(tmp_path: os.PathLike[str]) -> None:
    env = {"WSRUNTIME_PORT": "4000", "WSRUNTIME_TOKEN": "env", "WORKSPACE_ID": "env-id"}
    config = parse_config(["--port", "5000", "--token", "flag", "--workspace", os.fspath(tmp_path)], environ=env)
    assert config.port == 5000 and config.token == "flag"
    assert config.workspace_id == "env-id"  # WORKSPACE_ID beats the directory name
    config = parse_config(
        ["--workspace", os.fspath(tmp_path), "--workspace-id", "flag-id", "--allow-origin", "*"], environ=env
    )
    assert config.workspace_id == "flag-id" and config.allow_any_origin


def test_container_detection() -> None:
    assert in_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    if not (os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")):
        assert not in_container({})
        assert parse_config([], environ={}).host == "127.0.0.1"
    assert parse_config([], environ={"KUBERNETES_SERVICE_HOST": "x"}).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "abc"], {}, "not a port number"),
        (["--port", "70000"], {}, "out of range"),
        ([], {"WSRUNTIME_PORT": "nope"}, "WSRUNTIME_PORT"),
        (["--log-level", "loud"], {}, "not one of"),
        (["--log-format", "xml"], {}, "not one of"),
        (["--max-upload-size", "lots"], {}, "not a size"),
        (["--max-upload-size", "-5"], {}, "positive"),
        (["--allow-origin", "example.com"], {}, "origin"),
        (["--workspace", "/definitely/not/here"], {}, "not a directory"),
        (["--workspace-id", "a/b"], {}, "workspace id"),
        (["--token", " padded "], {}, "token"),
        (["--no-such-flag"], {}, "unrecognized arguments"),
    ],
)
def test_bad_options_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WSRUNTIME_")}
    full_env.update(env)
    result = subprocess.run([sys.executable, ENTRY, *args], capture_output=True, text=True, env=full_env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_help() -> None:
    result = subprocess.run([sys.executable, ENTRY, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"wsruntime {__version__}"
    result = subprocess.run([sys.executable, ENTRY, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--workspace", "--workspace-id", "--token", "--allow-origin", "--state-dir"):
        assert flag in result.stdout
    assert "WSRUNTIME_" in result.stdout


@pytest.mark.parametrize(("text", "size"), [("1024", 1024), ("64K", 64 << 10), ("1G", 1 << 30), ("2MiB", 2 << 20)])
def test_sizes(tmp_path: os.PathLike[str], text: str, size: int) -> None:
    config = parse_config(["--workspace", os.fspath(tmp_path), "--max-upload-size", text], environ={})
    assert config.max_upload_size == size
