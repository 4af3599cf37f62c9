"""Which replicas a stateful policy still believes in, per model, so it can forget replicas that disappear.

Each (model, replica) gets a generation number when first seen. A replica absent from the candidates passed to
``choose`` for longer than ``forget_after_s`` is forgotten; if it comes back it gets a new generation, so table
entries recorded for its previous life (whose KV cache is gone) no longer match.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from llmfleet.clock import Clock
from llmfleet.routing.views import ReplicaView


class Membership:
    """Generation numbers of the replicas seen per model; forgets those absent for ``forget_after_s``."""

    def __init__(self, clock: Clock, forget_after_s: float) -> None:
        self._clock = clock
        self._forget_after_s = forget_after_s
        self._gen: dict[str, dict[str, int]] = {}
        self._absent_since: dict[str, dict[str, float]] = {}
        self._counter = itertools.count(1)

    def sync(self, model: str, replicas: Sequence[ReplicaView]) -> dict[str, int]:
        """Update with the replicas offered for ``model`` now; returns replica id -> current generation."""
        gen = self._gen.get(model)
        if gen is None:
            gen = self._gen[model] = {}
            self._absent_since[model] = {}
        absent = self._absent_since[model]
        for r in replicas:
            if r.id not in gen:
                gen[r.id] = next(self._counter)
        if len(gen) == len(replicas) and not absent:
            return gen
        present = {r.id for r in replicas}
        now = self._clock.now()
        for rid in list(gen):
            if rid in present:
                absent.pop(rid, None)
                continue
            since = absent.setdefault(rid, now)
            if now - since > self._forget_after_s:
                del gen[rid]
                del absent[rid]
        return gen
