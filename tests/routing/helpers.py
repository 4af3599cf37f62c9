"""Small builders for routing tests."""

from __future__ import annotations

from typing import Any

from llmfleet.routing.base import RouteRequest
from llmfleet.routing.views import EngineLoad, ReplicaState, ReplicaView


def rv(
    rid: str,
    *,
    in_flight: int = 0,
    state: ReplicaState = ReplicaState.HEALTHY,
    pool: str = "default",
    waiting: float = 0.0,
    running: float = 0.0,
    kv: float = 0.0,
    scraped_at: float | None = None,
    **kw: Any,
) -> ReplicaView:
    """A replica view with id ``rid`` (also its URL host part)."""
    load = EngineLoad(
        num_requests_waiting=waiting, num_requests_running=running, kv_cache_usage=kv, scraped_at=scraped_at
    )
    return ReplicaView(
        id=rid,
        url=f"http://{rid}",
        state=state,
        pool=pool,
        models=frozenset({"m"}),
        in_flight=in_flight,
        load=load,
        **kw,
    )


def req(prompt: str = "hello", **kw: Any) -> RouteRequest:
    """A chat request for model ``m``."""
    return RouteRequest(model="m", endpoint="chat", prompt_text=prompt, **kw)
