"""Memory measuring shared by the tests and bench/: a process's peak RSS, and big bodies sent a piece at a time."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psutil

MIB = 1 << 20


class PeakRss:
    """Samples a process's RSS every few milliseconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return  # the process ended: the peak stands
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def body_pieces(total: int, piece: int = MIB) -> Iterator[bytes]:
    """``total`` bytes of incompressible data, ``piece`` at a time (the client holds one piece)."""
    block = os.urandom(piece)
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        yield block[:n]
        sent += n
