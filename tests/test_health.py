"""``/health``'s detailed answer, assembled from cached pieces, is exactly the dict it stands for."""

from __future__ import annotations

import json
import types
from typing import Any

from tests.conftest import ServerThread
from wsruntime_ext import __version__
from wsruntime_ext.health import HealthAnswer, runtime_info


def fake_ctx(*providers: Any) -> Any:
    config = types.SimpleNamespace(workspace_id="ws-ü", auth_enabled=False)
    return types.SimpleNamespace(config=config, health_providers=list(providers))


def as_dict(ctx: Any, uptime: float) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "ok", "version": __version__, "uptime_s": uptime, "workspace_id": "ws-ü"}
    body.update(auth=False, runtime=runtime_info())
    for provider in ctx.health_providers:
        body.update(provider())
    return body


def test_the_answer_follows_what_the_providers_report() -> None:
    """Also when a provider changes the very dict it returned last time, and when one reports nothing."""
    state: dict[str, Any] = {"watch": {"ready": False, "resyncs": 0}}
    ctx = fake_ctx(lambda: state, lambda: {"git": {"available": True, "version": "2.39"}}, dict)
    answer = HealthAnswer(ctx)
    for uptime in (0.0, 1.5, 12345.678):
        encoded = answer.detailed(uptime)
        assert encoded is not None
        assert list(json.loads(encoded).items()) == list(as_dict(ctx, uptime).items())
        state["watch"]["resyncs"] += 1  # changed in place: the cached copy must not follow it
        state["watch"]["ready"] = True
    encoded = answer.detailed(2.0)
    assert encoded is not None and json.loads(encoded)["watch"] == {"ready": True, "resyncs": 3}


def test_a_key_reported_twice_leaves_the_answer_to_the_dict() -> None:
    ctx = fake_ctx(lambda: {"a": 1}, lambda: {"a": 2})
    assert HealthAnswer(ctx).detailed(1.0) is None
    assert HealthAnswer(fake_ctx(lambda: {"runtime": "mine"})).detailed(1.0) is None


async def test_health_answers_the_same_with_and_without_the_cache(server: ServerThread) -> None:
    first = await server.request("GET", "/health")
    second = await server.request("GET", "/health")
    assert first.status == second.status == 200
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"
    a, b = json.loads(first.raw), json.loads(second.raw)
    assert a.pop("uptime_s") <= b.pop("uptime_s")
    assert a.keys() == b.keys() and {"auth", "runtime", "git", "watch"} <= a.keys()
