"""``system_stats`` events (API.md "WebSocket events"): CPU, memory and disk use of the workspace's machine.

Numbers come from psutil when it can be imported, else from ``/proc`` and
``os.statvfs`` computed the way psutil computes them (the single-file build
runs where psutil has no wheel: free-threaded CPython, PyPy, a ``noexec``
temp dir). Samples are taken only while some subscriber listens to
``system_stats``, every ``--stats-interval`` seconds, off the IOLoop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from wsruntime_ext.hub import EventHub

log = logging.getLogger("wsruntime.stats")


class StatsReader(Protocol):
    source: str

    def cpu_percent(self) -> float: ...

    def memory_percent(self) -> float: ...

    def disk_percent(self, path: str) -> float: ...


class PsutilReader:
    """The numbers as psutil gives them."""

    source = "psutil"

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._busy, self._total = _busy_total(psutil.cpu_times()._asdict())

    def cpu_percent(self) -> float:
        """Busy share of all CPUs since the previous call.

        Our own baseline rather than ``psutil.cpu_percent()``'s module-wide one,
        which any other caller in the process would reset.
        """
        busy, total = _busy_total(self._psutil.cpu_times()._asdict())
        percent = _percent(busy - self._busy, total - self._total)
        self._busy, self._total = busy, total
        return percent

    def memory_percent(self) -> float:
        return float(self._psutil.virtual_memory().percent)

    def disk_percent(self, path: str) -> float:
        return float(self._psutil.disk_usage(path).percent)


class ProcReader:
    """The same numbers from ``/proc/stat``, ``/proc/meminfo`` and ``statvfs``, for when psutil is missing."""

    source = "proc"

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._busy, self._total = self._cpu_times()

    def _cpu_times(self) -> tuple[float, float]:
        with open(os.path.join(self._proc, "stat"), encoding="ascii") as f:
            values = [float(v) for v in f.readline().split()[1:]]
        return _busy_total(dict(zip(_PROC_STAT_FIELDS, values)))

    def cpu_percent(self) -> float:
        busy, total = self._cpu_times()
        percent = _percent(busy - self._busy, total - self._total)
        self._busy, self._total = busy, total
        return percent

    def memory_percent(self) -> float:
        info: dict[str, int] = {}
        with open(os.path.join(self._proc, "meminfo"), encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                value = rest.split()
                if value:
                    info[name] = int(value[0])
        total = info.get("MemTotal", 0)
        available = info.get("MemAvailable")
        if available is None:  # kernels before 3.14
            available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
        return _percent(total - available, total)

    def disk_percent(self, path: str) -> float:
        st = os.statvfs(path)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        available_to_users = st.f_bavail * st.f_frsize  # the root-reserved blocks count as full, like df
        return _percent(used, used + available_to_users)


_PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


def _busy_total(times: dict[str, float]) -> tuple[float, float]:
    """(busy, total) CPU time, counted as psutil counts it.

    Guest time is already included in user and nice; idle and iowait are not busy.
    """
    total = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)
    return total - times.get("idle", 0.0) - times.get("iowait", 0.0), total


def _percent(part: float, whole: float) -> float:
    return round(max(0.0, min(100.0, 100.0 * part / whole)), 1) if whole > 0 else 0.0


def make_reader() -> StatsReader:
    """psutil when it imports and works here, else the /proc reader."""
    try:
        return PsutilReader()
    except Exception as exc:  # ImportError, or a wheel that cannot load (noexec, free-threaded, PyPy)
        log.info("psutil unavailable (%s): system stats come from /proc", exc)
        return ProcReader()


class SystemStats:
    """Publishes ``system_stats`` every ``interval`` seconds while anyone listens."""

    def __init__(
        self,
        hub: EventHub,
        workspace: str,
        interval: float,
        run_blocking: Callable[..., Any],
        reader: StatsReader | None = None,
    ) -> None:
        self.hub = hub
        self.workspace = workspace
        self.interval = interval
        self.reader = reader or make_reader()
        self._run_blocking = run_blocking
        self._task: asyncio.Task[None] | None = None

    @property
    def source(self) -> str:
        return self.reader.source

    def start(self) -> None:
        """Sample from the moment the first listener subscribes until the last one leaves."""
        self.hub.on_demand("system_stats", self._demand)

    def _demand(self, listening: bool) -> None:
        if listening and self._task is None:
            self._task = asyncio.ensure_future(self._run())
        elif not listening and self._task is not None:
            self._task.cancel()
            self._task = None

    def sample(self) -> dict[str, float]:
        """One reading (blocking: statvfs of a network file system can take a while)."""
        return {
            "cpu_percent": self.reader.cpu_percent(),
            "memory_percent": self.reader.memory_percent(),
            "disk_percent": self.reader.disk_percent(self.workspace),
        }

    async def _run(self) -> None:
        # CPU use is a difference between two readings: this one only sets the baseline.
        await self._run_blocking(self.reader.cpu_percent)
        while True:
            await asyncio.sleep(self.interval)
            try:
                stats = await self._run_blocking(self.sample)
            except Exception:
                log.warning("reading system stats failed", exc_info=True)
                continue
            self.hub.publish("system_stats", {"stats": stats})

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def health(self) -> dict[str, Any]:
        return {"source": self.reader.source, "interval_s": self.interval, "sampling": self._task is not None}
