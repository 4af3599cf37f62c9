"""The filtering and load helpers every policy shares, so each honours the same rules.

* never a replica in ``request.exclude`` (already tried for this request),
* only routable replicas (healthy or degraded),
* a degraded replica only when no healthy candidate exists,
* otherwise :class:`~llmfleet.routing.base.NoReplicaAvailable` with a message that says why.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from llmfleet.routing.base import NoReplicaAvailable, RouteRequest
from llmfleet.routing.views import ReplicaState, ReplicaView

_MIN_WEIGHT = 1e-6
_T = TypeVar("_T")
_HEALTHY = ReplicaState.HEALTHY
_DEGRADED = ReplicaState.DEGRADED


def eligible(request: RouteRequest, replicas: Sequence[ReplicaView]) -> list[ReplicaView]:
    """The replicas ``request`` may go to: healthy ones, or degraded ones only when no healthy one is left.

    Keeps the caller's order. Raises :class:`NoReplicaAvailable` when nothing is left.
    """
    exclude = request.exclude
    healthy = [r for r in replicas if r.state is _HEALTHY and r.id not in exclude]
    if healthy:
        return healthy
    degraded = [r for r in replicas if r.state is _DEGRADED and r.id not in exclude]
    if degraded:
        return degraded
    raise NoReplicaAvailable(_explain(request, replicas))


def _explain(request: RouteRequest, replicas: Sequence[ReplicaView]) -> str:
    if not replicas:
        return f"no replica serves model {request.model!r}"
    excluded = sum(1 for r in replicas if r.id in request.exclude)
    states: dict[str, int] = {}
    for r in replicas:
        if r.id not in request.exclude:
            states[r.state.value] = states.get(r.state.value, 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    parts = [f"{len(replicas)} replica(s) for model {request.model!r}"]
    if excluded:
        parts.append(f"{excluded} already tried")
    if detail:
        parts.append(detail)
    return "no routable replica: " + "; ".join(parts)


def weight_of(replica: ReplicaView) -> float:
    """The replica's relative capacity, guarded against zero."""
    return replica.weight if replica.weight > _MIN_WEIGHT else _MIN_WEIGHT


def in_flight_load(replica: ReplicaView) -> float:
    """Gateway-side outstanding requests per unit of capacity (what nginx's least_conn looks at)."""
    return replica.in_flight / weight_of(replica)


def outstanding_load(replica: ReplicaView) -> float:
    """Best estimate of outstanding requests per unit of capacity.

    When the scrape recorded the gateway's own in-flight count at that moment: the gateway's count now (exact) plus
    the other clients' requests as of the scrape (engine running + waiting minus the gateway's own then). Otherwise
    the larger of the gateway's own count (fresh, but blind to other gateways) and the engine's scraped
    running + waiting (covers every client, but as old as the last scrape: it keeps a replica looking busy after
    this gateway's requests there finished).
    """
    load = replica.load
    engine = load.num_requests_waiting + load.num_requests_running
    if load.in_flight_at_scrape is not None:
        return (replica.in_flight + max(0.0, engine - load.in_flight_at_scrape)) / weight_of(replica)
    n = replica.in_flight if replica.in_flight >= engine else engine
    return n / weight_of(replica)


def fresh_outstanding_load(replica: ReplicaView, now: float, max_age_s: float) -> float:
    """:func:`outstanding_load`, counting the engine's scraped running + waiting only while the scrape is at most
    ``max_age_s`` old: a stale scrape would keep a replica looking busy after its requests finished."""
    scraped = replica.load.scraped_at
    if scraped is None or now - scraped > max_age_s:
        return in_flight_load(replica)
    return outstanding_load(replica)


def fresh_loads(replicas: Sequence[ReplicaView], now: float, max_age_s: float) -> dict[str, float]:
    """:func:`fresh_outstanding_load` of each of ``replicas``, by id."""
    return {r.id: fresh_outstanding_load(r, now, max_age_s) for r in replicas}


def pick_lowest(items: Sequence[_T], key: Callable[[_T], float], rng: random.Random) -> _T:
    """The item with the lowest ``key``; ties broken by ``rng`` (deterministic for a seeded rng)."""
    best: list[_T] = []
    best_value = float("inf")
    for item in items:
        v = key(item)
        if v < best_value:
            best_value = v
            best = [item]
        elif v == best_value:
            best.append(item)
    if not best:
        raise NoReplicaAvailable("no candidate replica")
    return best[0] if len(best) == 1 else best[rng.randrange(len(best))]
