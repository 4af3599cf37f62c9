"""Scheduled disruptions: replica failures, spot interruptions and region loss.

``--events`` is a comma-separated list of ``KIND@TIME[:ARG]``:

* ``fail@2h:3`` — 3 random serving replicas crash at 2 h;
* ``spot@3h:5`` — 5 spot replicas are reclaimed at 3 h;
* ``region-loss@6h:1`` — every replica in region 1 dies at 6 h and no new replica is placed there.

Besides these, spot replicas are reclaimed at random (a Poisson process of ``spot_interruptions_per_hour`` per
spot replica). Every dead replica is replaced by the provider (ready after the start-up delay), as a Deployment
or a node group would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from llmfleet.errors import ConfigError
from llmfleet.simulator.core import EventLoop
from llmfleet.simulator.fleet import Fleet, SimReplica
from llmfleet.simulator.units import parse_duration_s

KINDS = ("fail", "spot", "region-loss")


@dataclass(frozen=True)
class Disruption:
    """One scheduled event."""

    kind: str
    at_s: float
    arg: int


def parse_events(text: str, option: str = "--events") -> list[Disruption]:
    """Parse ``KIND@TIME[:ARG]`` items; errors name ``option`` and the item."""
    out: list[Disruption] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        where = f"{option}: {item!r}"
        if "@" not in item:
            raise ConfigError(f"{where}: expected KIND@TIME[:ARG], e.g. fail@2h:3 (kinds: {', '.join(KINDS)})")
        kind, rest = item.split("@", 1)
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
        when, _, arg = rest.partition(":")
        at = parse_duration_s(when, where, allow_zero=True)
        default = 0 if kind == "region-loss" else 1
        try:
            n = int(arg) if arg else default
        except ValueError:
            raise ConfigError(f"{where}: ARG {arg!r} must be a whole number") from None
        if n < 0:
            raise ConfigError(f"{where}: ARG {arg!r} must be >= 0")
        out.append(Disruption(kind, at, n))
    return out


class Disruptor:
    """Applies disruptions to the fleet and asks for replacements (``replace``)."""

    def __init__(
        self,
        fleet: Fleet,
        rng: random.Random,
        replace: Callable[[], None],
        lost_regions: set[int],
        spot_interruptions_per_hour: float = 0.0,
    ) -> None:
        self.fleet = fleet
        self.rng = rng
        self.replace = replace
        self.lost_regions = lost_regions
        self.spot_rate_per_s = spot_interruptions_per_hour / 3600.0

    def start(self, loop: EventLoop, scheduled: list[Disruption]) -> None:
        for d in scheduled:
            loop.at(d.at_s, lambda d=d: self.apply(d))  # type: ignore[misc]
        if self.spot_rate_per_s > 0:
            self._next_spot(loop)

    def _serving(self, spot_only: bool = False) -> list[SimReplica]:
        return [r for r in self.fleet.replicas.values() if r.serving and (r.kind.spot or not spot_only)]

    def apply(self, d: Disruption) -> None:
        if d.kind == "region-loss":
            self.lost_regions.add(d.arg)
            victims = [r for r in self.fleet.replicas.values() if r.region == d.arg and r.alive]
            reason = "region_loss"
        else:
            pool = self._serving(spot_only=d.kind == "spot")
            victims = self.rng.sample(pool, min(d.arg, len(pool)))
            reason = "spot_interruption" if d.kind == "spot" else "failure"
        for r in victims:
            self.fleet.kill(r, reason)
        self.replace()

    def _next_spot(self, loop: EventLoop) -> None:
        n = sum(1 for r in self.fleet.replicas.values() if r.kind.spot and r.alive)
        rate = self.spot_rate_per_s * max(1, n)

        def fire() -> None:
            spots = self._serving(spot_only=True)
            if spots:
                self.fleet.kill(self.rng.choice(spots), "spot_interruption")
                self.replace()
            self._next_spot(loop)

        loop.after(self.rng.expovariate(rate), fire)
