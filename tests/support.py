"""Test-only routes mounted beside the real ones, to exercise the base classes."""

from __future__ import annotations

from typing import Any

from wsruntime_ext.base import ApiHandler
from wsruntime_ext.openapi import route
from wsruntime_ext.websocket import ApiWebSocket


class EchoHandler(ApiHandler):
    """A secured endpoint: echoes a JSON object body, and typed query arguments."""

    def get(self) -> None:
        self.send_json(
            {"limit": self.query_int("limit", 10, 1, 100), "flag": self.query_bool("flag"), "q": self.query("q")}
        )

    def post(self) -> None:
        self.send_json({"echo": self.json_body()})


class CrashHandler(ApiHandler):
    def get(self) -> None:
        raise RuntimeError("secret internal detail /etc/shadow")


class EchoSocket(ApiWebSocket):
    def on_message(self, message: Any) -> None:
        self.write_message(message)


EXTRA = [
    route("/test/echo", EchoHandler),
    route("/test/crash", CrashHandler),
    route("/test/ws", EchoSocket),
]
