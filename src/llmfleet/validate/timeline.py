"""What a validation run observed over time, for the checks and the report: requests, fleet size, autoscaler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmfleet.bench.records import RequestRecord


@dataclass(frozen=True)
class FleetSample:
    """The gateway's view at one moment (fleet seconds since the run started)."""

    t_s: float
    replicas_total: int
    replicas_routable: int


@dataclass(frozen=True)
class ScalingEvent:
    """An autoscaler decision as the gateway's status document published it."""

    t_s: float
    direction: str
    current: int
    replicas: int
    reason: str


@dataclass(frozen=True)
class Phase:
    """A named stretch of the run (one check, or a step inside one), for shading the report's plots."""

    name: str
    start_s: float
    end_s: float


@dataclass
class Timeline:
    """Everything sampled during the run; times in fleet seconds from ``origin_s`` of the fleet clock."""

    origin_s: float
    requests: list[tuple[str, RequestRecord]] = field(default_factory=list)
    fleet: list[FleetSample] = field(default_factory=list)
    scaling: list[ScalingEvent] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)
    """Measured and projected GPU-hours of the cost check (for its chart)."""

    def rel(self, t_s: float) -> float:
        """Fleet seconds since the run started."""
        return t_s - self.origin_s
