"""One run's output to one WebSocket client, as process streams and script-run streams both send it.

Output is read from the shared in-memory window while the client keeps up,
else from disk in batches, so every client follows at its own pace and the
run never waits for one. A client whose socket takes nothing for ``STALL_S``
while it is more than ``BEHIND_LIMIT`` behind is closed with 1013 (it
reconnects with ``?after=``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import tornado.iostream
import tornado.websocket

from wsruntime_ext.processes.engine import Run, RunEngine
from wsruntime_ext.processes.live import LIVE_BATCH
from wsruntime_ext.processes.runs import Cursor
from wsruntime_ext.websocket import ApiWebSocket

log = logging.getLogger("wsruntime.processes")

STREAM_BATCH = 512 << 10  # bytes read from disk per step of a streaming client (two steps queued on its socket)
BEHIND_LIMIT = 4 << 20  # a client this far behind whose socket takes nothing for STALL_S is closed with 1013


class RunOutputSocket(ApiWebSocket):
    """``WS …/{id}?after=SEQ``: stored output after SEQ, then live output, then ``exit`` and close 1000."""

    STALL_S = 5.0
    end_reason = "run ended"
    run: Run
    after = 0
    closing = False

    @property
    def engine(self) -> RunEngine:
        raise NotImplementedError

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.run = self.engine.get(next(iter(kwargs.values())) if kwargs else args[0])  # 404 before the upgrade
        self.after = self.query_after()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.set_nodelay(True)
        self.more = asyncio.Event()
        self.run.listen(self.more)
        self.pump = asyncio.ensure_future(self._guarded_pump())

    async def _guarded_pump(self) -> None:
        try:
            await self.pump_output()
        except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass
        except Exception:
            log.exception("streaming run %s failed", self.run.id)
            self.close_with(1011, "internal error: reconnect with ?after=")

    async def pump_output(self) -> None:
        await self.pump_pipes(None)

    async def sent(self, written: Any, position: int, head: Callable[[], int]) -> bool:
        """Wait until the socket took a write; False (and 1013) when the client stalls too far behind."""
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(written), self.STALL_S)
                return True
            except asyncio.TimeoutError:
                if head() - position > BEHIND_LIMIT:
                    self.close_with(1013, "too far behind: reconnect with ?after=")
                    return False

    def close_with(self, code: int, reason: str) -> None:
        self.closing = True
        self.close_after_queued(code, reason)

    def end(self) -> None:
        self.closing = True
        self.send_message(self.run.exit_frame())
        self.close_after_queued(1000, self.end_reason)

    async def pump_pipes(self, hello: dict[str, Any] | None) -> None:
        """Output frames (``seq`` after ``self.after``), after ``hello`` when given, to the end."""
        run, engine = self.run, self.engine
        cursor = Cursor(self.after + 1)
        if hello is not None:
            first_seqs = run.output.first_seqs
            self.send_message({**hello, "truncated": bool(first_seqs) and first_seqs[0] > cursor.next_seq})
        sent = 0  # output bytes (about) this client has been sent
        queued: Any = None  # the newest batch given to the socket: one more may be queued behind it

        def head() -> int:
            return int(run.record["output_bytes"])

        while not self.closing:
            self.more.clear()
            ended = run.ended.is_set()  # read before the frames: an end seen here has all its output stored
            frames = engine.read_live(run, cursor, LIVE_BATCH)
            from_disk = frames is None
            if frames is None:  # out of the window: from disk
                wanted = cursor.next_seq
                lines, skipped = await engine.read(run, cursor, STREAM_BATCH)
                if skipped:
                    # Older output than the run keeps on disk: say so, and go on from what is kept.
                    self.send_message({"type": "output_dropped", "frames": skipped, "next_seq": wanted + skipped})
                frames = lines
                written = self.write_text_frames(lines) if lines else None
            else:
                # The newest output, framed once for every live client (shared, not copied).
                written = self.write_prepared_frames(frames) if frames else None
            if written is not None:
                # Two batches on the socket at most, so that the next is ready when the kernel takes the first.
                earlier, queued = queued, written
                sent += sum(len(frame) for frame in frames)
                if earlier is not None and not await self.sent(earlier, sent + run.output_dropped_bytes, head):
                    return
                continue
            if ended:  # and everything stored has been sent (a frame that failed to store never comes)
                self.end()
                return
            if from_disk and run.output.lag:
                run.awaiting_disk = True  # what comes next is still on its way to the disk
            await self.more.wait()

    def on_close(self) -> None:
        super().on_close()
        self.closing = True
        run = getattr(self, "run", None)
        if run is not None and hasattr(self, "more"):
            run.unlisten(self.more)
            self.more.set()
