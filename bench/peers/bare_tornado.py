"""The cost floor: a bare Tornado app answering ``GET /health`` with a small JSON object.

One plain ``tornado.web.RequestHandler``, default settings, no middleware, no logging
configured (so Tornado's access log goes nowhere). ``PUT /files/NAME`` is the floor of a durable
small write in Tornado: the body written to a temporary file in the current directory, fsynced,
renamed over ``NAME`` and the directory fsynced, in a thread pool — what wsruntime's ``PUT`` does,
without its checks, jail, ETags, preconditions or events. ``bench/run.py`` starts it as
``python bench/peers/bare_tornado.py --port PORT``; it prints the same ``  URL:`` banner
line as wsruntime and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import signal
import sys
import time
from collections.abc import Sequence

import tornado.httpserver
import tornado.netutil
import tornado.web

STARTED = time.monotonic()


class HealthHandler(tornado.web.RequestHandler):
    """``GET /health``: a few fields, the size of a minimal liveness answer."""

    def get(self) -> None:
        self.write({"status": "ok", "version": tornado.version, "uptime_s": round(time.monotonic() - STARTED, 3)})


POOL = concurrent.futures.ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4))


def atomic_write(name: str, data: bytes) -> int:
    """Temporary file, write, fsync, rename, directory fsync; the size written."""
    directory = os.getcwd()
    temp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, os.path.join(directory, name))
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return len(data)


class PutHandler(tornado.web.RequestHandler):
    """``PUT /files/NAME``: the body landed durably and atomically, nothing else."""

    async def put(self, name: str) -> None:
        size = await asyncio.get_running_loop().run_in_executor(POOL, atomic_write, name, self.request.body)
        self.write({"path": name, "size": size})


def make_app() -> tornado.web.Application:
    """The application: /health and the small durable write."""
    return tornado.web.Application(
        [(r"/health", HealthHandler), (r"/files/([A-Za-z0-9_-][A-Za-z0-9_.-]*)", PutHandler)]
    )


async def serve(host: str, port: int) -> None:
    """Listen on host:port, print the banner, run until SIGTERM or SIGINT."""
    sockets = tornado.netutil.bind_sockets(port, host)
    server = tornado.httpserver.HTTPServer(make_app())
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    print(f"bare_tornado {tornado.version}\n  URL:   http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--host`` and ``--port`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 0 picks a free one (default: 0)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
