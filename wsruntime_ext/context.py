"""The Context every module shares: the config, the shared services and runtime-wide state.

It sits on the ground floor: it imports no feature module at run time (their
service types are named for the type checker only), so every module can import
it and ``app.py`` alone knows the modules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import os
import time
from collections.abc import Awaitable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from wsruntime_ext.config import Config
from wsruntime_ext.hub import EventHub
from wsruntime_ext.procs import ProcessRegistry
from wsruntime_ext.security import Security
from wsruntime_ext.temps import TempRegistry

if TYPE_CHECKING:
    from wsruntime_ext.agents import AgentService
    from wsruntime_ext.events import LiveEvents
    from wsruntime_ext.files import FileService, SearchService, WriteGroups
    from wsruntime_ext.git import GitService
    from wsruntime_ext.openspec import OpenSpecService
    from wsruntime_ext.processes import ProcessService
    from wsruntime_ext.scripts import ScriptService
    from wsruntime_ext.settings import AgentSettingsService, SettingsService

T = TypeVar("T")


class Context:
    """What every module may reach: the config, shared services and runtime-wide state."""

    files: FileService  # set by files.startup
    search: SearchService  # set by files.startup
    write_groups: WriteGroups  # set by files.startup: small writes landed in groups
    git: GitService  # set by git.startup
    agents: AgentService  # set by agents.startup
    openspec: OpenSpecService  # set by openspec.startup
    settings: SettingsService  # set by settings.startup
    agent_settings: AgentSettingsService  # set by settings.startup
    scripts: ScriptService  # set by scripts.startup
    processes: ProcessService  # set by processes.startup

    def __init__(self, config: Config, modules: Sequence[ModuleType]) -> None:
        self.config = config
        self.modules = list(modules)
        self.security = Security(self)
        self.started_monotonic = time.monotonic()
        self.started_at = now_iso()
        self.websockets: set[Any] = set()  # every open ApiWebSocket, closed with 1001 on shutdown
        self.health_providers: list[Callable[[], dict[str, Any]]] = []
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(32, (os.cpu_count() or 1) * 4), thread_name_prefix="wsruntime-io"
        )
        self.procs = ProcessRegistry()  # every subprocess (git, agents, scripts), stopped at shutdown
        # Every temporary file the runtime writes is recorded here first (temps.py); the roots are where
        # its writes may land: the workspace, the state directory, the settings' home.
        # Agent CLIs' own homes may be moved by their variables (profiles.py reads the same ones).
        moved = ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "QWEN_HOME", "XDG_CONFIG_HOME")
        self.temps = TempRegistry(
            config.state_dir,
            [config.workspace, config.home_dir, *(os.environ[v] for v in moved if os.environ.get(v))],
        )
        self.hub = EventHub()  # live events: every module publishes here, WS /api/v1/ws subscribes (hub.py)
        self.live_events: LiveEvents | None = None  # the file watcher and stats sampler (events.startup)
        self.shutting_down = False
        self.openapi_document: dict[str, Any] = {}  # set by docs.startup
        self.openapi_json: tuple[bytes, str] = (b"{}", '""')

    @property
    def workspace(self) -> str:
        return self.config.workspace

    def open_paths(self) -> list[str]:
        """The routes that need no token, as every module declares them (``open_paths``)."""
        return [p for m in self.modules for p in getattr(m, "open_paths", [])]

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run blocking work (disk walks, big reads and writes, hashing) off the IOLoop."""
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def check_workspace_id(self, workspace_id: str) -> bool:
        return workspace_id == self.config.workspace_id


def now_iso() -> str:
    """ISO 8601 UTC with milliseconds, as API.md's timestamps."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
