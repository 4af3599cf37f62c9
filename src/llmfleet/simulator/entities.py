"""The simulated fleet's entities: what a replica is (:class:`ReplicaKind`), one replica's life
(:class:`SimReplica`), one client request across its attempts (:class:`Flight`) and one routing cell (:class:`Cell`)."""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.gateway.registry import Attempt, Replica
from llmfleet.routing.base import RouteRequest, RoutingPolicy
from llmfleet.routing.views import ReplicaView
from llmfleet.simulator.replica import EngineSpec, ReplicaModel
from llmfleet.simulator.stepcost import StepCost
from llmfleet.simulator.workload import SimRequest


@dataclass(frozen=True)
class ReplicaKind:
    """What a new replica is: its engine, price and capacity type."""

    spec: EngineSpec
    cost: StepCost
    gpus: int
    usd_per_gpu_hour: float
    spot: bool = False
    pool: str = "default"


@dataclass(eq=False)
class SimReplica:
    """One replica's life: created (billing starts), ready (routable), dead or removed (billing stops)."""

    id: str
    kind: ReplicaKind
    region: int
    cell: int
    created_s: float
    model: ReplicaModel | None = None
    ready_s: float | None = None
    ended_s: float | None = None
    alive: bool = True
    draining: bool = False
    reg: Replica | None = None
    """The registry's entry while the replica is registered."""
    home: Cell | None = None
    """The routing cell it serves in."""

    @property
    def serving(self) -> bool:
        return self.alive and self.ready_s is not None and self.ended_s is None


class Flight:
    """One client request across its attempts (slotted: one is made per request)."""

    __slots__ = ("attempt", "cell", "first_token_s", "replica", "req", "route", "tried")

    def __init__(self, req: SimRequest, route: RouteRequest, cell: int) -> None:
        self.req = req
        self.route = route
        self.cell = cell
        self.tried: set[str] = set()
        self.attempt: Attempt | None = None
        self.replica: SimReplica | None = None
        self.first_token_s: float | None = None


class Cell:
    """One gateway: its policy and the views of its replicas, kept current incrementally."""

    def __init__(self, index: int, policy: RoutingPolicy) -> None:
        self.index = index
        self.policy = policy
        self.ids: list[str] = []
        self.views: list[ReplicaView] = []
        """Refreshed on every change of a replica's bookkeeping, so no view is rebuilt per request."""
        self.pos: dict[str, int] = {}

    def add(self, rid: str, view: ReplicaView) -> None:
        self.pos[rid] = len(self.ids)
        self.ids.append(rid)
        self.views.append(view)

    def remove(self, rid: str) -> None:
        i = self.pos.pop(rid)
        last = self.ids.pop()
        last_view = self.views.pop()
        if last != rid:
            self.ids[i], self.views[i] = last, last_view
            self.pos[last] = i
