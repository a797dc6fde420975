"""``system_stats`` numbers: the /proc reader agrees with psutil, and the sampler only runs when listened to."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import pytest

from wsruntime_ext.hub import EventHub
from wsruntime_ext.stats import ProcReader, PsutilReader, SystemStats, make_reader

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc here")


def test_proc_reader_agrees_with_psutil(tmp_path: Any) -> None:
    pytest.importorskip("psutil")
    proc, ps = ProcReader(), PsutilReader()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # some load, so that the CPU share is not just noise around 0
        sum(range(10_000))
    cpu_proc, cpu_ps = proc.cpu_percent(), ps.cpu_percent()
    assert 0 <= cpu_proc <= 100 and 0 <= cpu_ps <= 100
    assert abs(cpu_proc - cpu_ps) <= 5, (cpu_proc, cpu_ps)
    assert abs(proc.memory_percent() - ps.memory_percent()) <= 1.0
    assert 0 < proc.memory_percent() < 100
    assert abs(proc.disk_percent(str(tmp_path)) - ps.disk_percent(str(tmp_path))) <= 0.5
    assert 0 < proc.disk_percent(str(tmp_path)) <= 100


def test_proc_reader_on_a_fake_proc(tmp_path: Any) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (tmp_path / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")
    reader = ProcReader(str(tmp_path))
    (tmp_path / "stat").write_text("cpu  150 0 150 850 50 0 0 0 0 0\n")  # 100 busy of 200 (iowait is idle)
    assert reader.cpu_percent() == 50.0
    assert reader.memory_percent() == 75.0
    assert reader.cpu_percent() == 0.0  # nothing happened since


def test_without_psutil_the_proc_reader_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil → ImportError
    assert make_reader().source == "proc"


async def test_sampling_starts_and_stops_with_listeners(tmp_path: Any) -> None:
    hub = EventHub()

    async def run_blocking(fn: Any, *args: Any) -> Any:
        return fn(*args)

    stats = SystemStats(hub, str(tmp_path), 0.05, run_blocking, ProcReader())
    stats.start()
    await asyncio.sleep(0.15)
    assert hub.last_seq == 0 and not stats.health()["sampling"]
    sub = hub.subscribe(["system_stats"])
    event = await asyncio.wait_for(sub.get(), 2)
    assert event.topic == "system_stats" and set(event.data["stats"]) == {
        "cpu_percent",
        "memory_percent",
        "disk_percent",
    }
    sub.close()
    assert not stats.health()["sampling"]
    published = hub.last_seq
    await asyncio.sleep(0.15)
    assert hub.last_seq == published
    await stats.stop()
