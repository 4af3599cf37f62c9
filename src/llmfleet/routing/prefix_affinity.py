"""Prefix (and conversation) affinity: send a prompt to the replica most likely to hold its prefix in KV cache.

For each request the prompt's chained block keys are looked up in a bounded :class:`PrefixTable`:

* ``prefix_hit``: the replica holding the longest remembered prefix, unless it is overloaded;
* ``spill_shorter_prefix``: the holders of the longest prefix are overloaded, but a holder of a shorter prefix
  (typically a shared system prompt) is not;
* ``spill_overloaded``: every holder is overloaded: the least loaded replica instead;
* ``prefix_miss_least_loaded``: nothing remembered: the least loaded replica (not a hash of the prompt: hashing
  alone piles hot prefixes onto one replica). Ties among equally loaded replicas go to the one that was given the
  fewest new prefixes so far (then the rng), so on an idle fleet sequential requests and new conversations spread
  over every replica instead of piling onto one (what sglang-router's cache_aware does by placing a miss on the
  worker with the smallest cache tree).
* ``prefix_miss_hashed`` (``miss_placement: hashed``): nothing remembered: the first replica within the load bound
  in a rendezvous-hash order of the prompt's first block (:mod:`llmfleet.routing.rendezvous`). Every gateway process
  computes the same order without sharing anything, so with several unshared workers (``--workers N`` without Redis)
  a conversation's later turns that reach a worker that never saw it land where its first turn went; the bound keeps
  a hot shared prefix from piling onto one replica (``prefix_miss_least_loaded`` when every replica is over it).
  ``auto`` (the default) is hashed only for such workers (:func:`llmfleet.gateway.workers.unshared_routing`): in one
  process least-loaded placement spreads an idle fleet more evenly.

A prompt whose longest remembered prefix is a whole earlier prompt (the next turn of a conversation) and that has
no holder of any part of it within that bound stays where it was (``prefix_hit``) unless the fleet is clearly
imbalanced (``conversation_spill_margin``/``_factor``) or that replica's engine is queueing while some candidate's
is not (when every engine queues, as when the KV caches cannot hold the conversations, moving would wait as well):
moving it would re-prefill its whole history, and only its own conversation follows it. Such a holder may be
degraded (a slow probe, which on a busy replica mostly measures its own batch): degraded replicas get no new work,
but keep their conversations while they keep up. New conversations that share only a prefix (a system prompt)
spread at the general bound, so a hot prefix still fans out. With the engines' KV-cache events, a prompt this
gateway remembers nothing of but whose first half or more an engine holds counts as such a next turn too: a
conversation placed by another gateway worker (or before a restart).

"Overloaded" means the load exceeds both ``min_load + spill_margin`` and ``spill_factor x mean_load`` over the
eligible replicas: a conversation leaves its cache only when the fleet is imbalanced (a miss on a long prompt
costs a full prefill), and the bound keeps a popular prefix from piling everything onto one replica. Load is the
gateway's in-flight count, or the engine's scraped running + waiting when larger and scraped at most
``engine_load_max_age_s`` ago, per unit of weight. Every decision is recorded, so after a spill the prefix is
remembered on the new replica too (up to ``replicas_per_block`` holders per block). Replicas absent for
``forget_after_s`` are forgotten (see :mod:`llmfleet.routing.membership`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence

from llmfleet.clock import Clock
from llmfleet.config import PrefixAffinityConfig
from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible, fresh_loads, fresh_outstanding_load, pick_lowest
from llmfleet.routing.membership import Membership
from llmfleet.routing.prefix_table import PrefixTable, block_keys
from llmfleet.routing.rendezvous import rank
from llmfleet.routing.scorers import BaseScorer
from llmfleet.routing.views import ReplicaState, ReplicaView

log = logging.getLogger(__name__)


class PrefixAffinityPolicy:
    """Longest cached prefix wins, within a load bound; see the module docstring for the reasons it returns."""

    name = "prefix_affinity"

    def __init__(self, config: PrefixAffinityConfig, clock: Clock, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        self.table = PrefixTable(config.table_size, config.replicas_per_block)
        self._members = Membership(clock, config.forget_after_s)
        self._clock = clock
        self._placed: dict[str, int] = {}
        """New prefixes (misses) placed per replica: ties among idle replicas go to the least used."""
        self._hashed = config.miss_placement == "hashed"

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        cfg = self.config
        gen = self._members.sync(request.model, replicas)
        keys = block_keys(request.model, request.prompt_text, cfg.block_bytes, cfg.max_blocks)

        now = self._clock.now()
        loads = fresh_loads(cands, now, cfg.engine_load_max_age_s)
        min_load = min(loads.values())
        kv = request.kv_matched_blocks
        mean_load = sum(loads.values()) / len(loads)
        limit = max(min_load + cfg.spill_margin, cfg.spill_factor * mean_load)
        by_id = {r.id: r for r in cands}

        chosen: ReplicaView | None = None
        matched = 0
        saw_overloaded = False
        depth = self.table.deepest_present(keys)
        continuation = depth > 0 and self.table.ends_a_prompt(keys[depth - 1])
        # The engines' own KV-cache events, when given and some candidate holds a part of the prompt, rank the
        # holders exactly (blocks held in token blocks); otherwise the text table's memory of placements does
        # (which also covers prompts placed but not yet prefilled).
        kv_depth = max((n for rid, n in kv.items() if rid in by_id), default=0) if kv else 0
        levels = self._kv_levels(kv, kv_depth) if kv and kv_depth >= cfg.min_match_blocks else None
        if levels is not None:
            if depth == 0 and 2 * kv_depth >= request.kv_prompt_blocks > 0:
                # An engine holds most of a prompt this gateway never placed: a conversation another gateway
                # worker (or an earlier gateway) placed; moving it would prefill most of it again.
                continuation = True
            depth = kv_depth
        for i, holders in levels if levels is not None else self._text_levels(keys, depth, gen):
            best_load = float("inf")
            level_overloaded = False
            for rid in holders:
                r = by_id.get(rid)
                if r is None:
                    continue
                load = loads[rid]
                if load > limit:
                    level_overloaded = True
                elif load < best_load:
                    chosen, best_load = r, load
            if chosen is not None:
                matched = i
                break
            saw_overloaded = saw_overloaded or level_overloaded

        if chosen is None and continuation:
            # The next turn of a conversation and no replica holds even a part of it within the bound: moving it
            # would cost its whole history, so it stays unless the fleet is clearly imbalanced.
            bound = max(min_load + cfg.conversation_spill_margin, cfg.conversation_spill_factor * mean_load)
            for r in replicas:  # a degraded (slow-probing, often merely busy) holder may keep its conversation
                if r.state is ReplicaState.DEGRADED and r.id not in request.exclude and r.id not in by_id:
                    by_id[r.id] = r
                    loads[r.id] = fresh_outstanding_load(r, now, cfg.engine_load_max_age_s)
            everyone_queueing = all(self._queueing(r, now) for r in cands)
            if kv and levels is not None:
                top = max(n for rid, n in kv.items() if rid in by_id)
                sticky = [rid for rid, n in kv.items() if n == top]
            else:
                sticky = [rid for rid, g in self.table.holders(keys[depth - 1]) if gen.get(rid) == g]
            chosen = self._sticky_holder(sticky, by_id, loads, bound, now, everyone_queueing)
            matched = depth if chosen is not None else 0
        if chosen is not None:
            reason = "spill_shorter_prefix" if saw_overloaded and matched < depth else "prefix_hit"
            if levels is not None:
                reason = "kv_" + reason
        elif saw_overloaded:
            chosen, reason = self._least_loaded(cands, loads, min_load, gen), "spill_overloaded"
        else:
            hashed = self._hashed_choice(keys[0], cands, loads, limit) if self._hashed and keys else None
            if hashed is not None:
                chosen, reason = hashed, "prefix_miss_hashed"
            else:
                chosen, reason = self._least_loaded(cands, loads, min_load, gen), "prefix_miss_least_loaded"
        if keys:
            self.table.record(keys, (chosen.id, gen[chosen.id]))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "prefix_affinity %s -> %s: matched %d/%d blocks (deepest remembered %d%s), load %.1f, limit %.1f",
                reason,
                chosen.id,
                matched,
                len(keys),
                depth,
                ", a whole earlier prompt" if continuation else "",
                loads[chosen.id],
                limit,
            )
        return RouteDecision(chosen, reason)

    def _text_levels(self, keys: Sequence[int], depth: int, gen: dict[str, int]) -> Iterator[tuple[int, list[str]]]:
        """From the text table, deepest first: (blocks matched, the replicas recorded for that prefix)."""
        for i in range(depth, self.config.min_match_blocks - 1, -1):
            yield i, [rid for rid, g in self.table.holders(keys[i - 1]) if gen.get(rid) == g]

    def _kv_levels(self, kv: Mapping[str, int], depth: int) -> Iterator[tuple[int, list[str]]]:
        """From the engines' KV-cache events, deepest first: (blocks held, the replicas holding at least that)."""
        for n in sorted({n for n in kv.values() if self.config.min_match_blocks <= n <= depth}, reverse=True):
            yield n, [rid for rid, m in kv.items() if m >= n]

    def _sticky_holder(
        self,
        holders: Sequence[str],
        by_id: dict[str, ReplicaView],
        loads: dict[str, float],
        bound: float,
        now: float,
        everyone_queueing: bool = False,
    ) -> ReplicaView | None:
        """The least loaded of ``holders`` within ``bound`` whose engine is not queueing (a fresh scrape with
        requests waiting means it is full: staying would cost more than a prefill elsewhere), unless
        ``everyone_queueing`` (every candidate's engine queues: moving would wait as well and re-prefill the whole
        history, evicting other conversations there); None if none."""
        best: ReplicaView | None = None
        for rid in holders:
            r = by_id.get(rid)
            if r is None or loads[rid] > bound:
                continue
            if not everyone_queueing and self._queueing(r, now):
                continue
            if best is None or loads[rid] < loads[best.id]:
                best = r
        return best

    def _queueing(self, r: ReplicaView, now: float) -> bool:
        """A fresh scrape of ``r`` shows requests waiting in its engine."""
        at = r.load.scraped_at
        return at is not None and now - at <= self.config.engine_load_max_age_s and r.load.num_requests_waiting > 0

    def _least_loaded(
        self, cands: Sequence[ReplicaView], loads: dict[str, float], min_load: float, gen: dict[str, int]
    ) -> ReplicaView:
        """A miss: the least loaded candidate; ties go to the one given the fewest new prefixes so far, then the
        rng. Counts the placement."""
        placed = self._placed
        tied = [r for r in cands if loads[r.id] == min_load]
        chosen = tied[0] if len(tied) == 1 else pick_lowest(tied, lambda r: placed.get(r.id, 0), self._rng)
        if len(placed) > 4 * len(gen) + 64:  # forget replicas long gone (bounded memory)
            placed = self._placed = {k: v for k, v in placed.items() if k in gen}
        placed[chosen.id] = placed.get(chosen.id, 0) + 1
        return chosen

    @staticmethod
    def _hashed_choice(
        key: int, cands: Sequence[ReplicaView], loads: dict[str, float], limit: float
    ) -> ReplicaView | None:
        """A miss with ``miss_placement: hashed``: the first of ``cands`` in rendezvous order of ``key`` (the
        prompt's first block) whose load is within the overload ``limit``; None if every one is over it."""
        return next((r for r in rank(key, cands) if loads[r.id] <= limit), None)

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Placement is recorded at decision time; completion adds nothing."""

    # ---- sharing the table between gateways (gateway/shared_prefix.py does the I/O around choose) ----------------
    def block_keys(self, request: RouteRequest) -> list[int]:
        """The prompt's chained block keys, as :meth:`choose` computes them."""
        cfg = self.config
        return block_keys(request.model, request.prompt_text, cfg.block_bytes, cfg.max_blocks)

    def known_depth(self, keys: Sequence[int]) -> int:
        """How many leading ``keys`` this table remembers."""
        return self.table.deepest_present(keys)

    def learn(self, model: str, keys: Sequence[int], replica_id: str, replicas: Sequence[ReplicaView]) -> bool:
        """Remember that another gateway sent the prefix ``keys`` to ``replica_id`` (among ``replicas``, the
        model's current replicas); False when that replica is not one of them."""
        gen = self._members.sync(model, replicas).get(replica_id)
        if gen is None or not keys:
            return False
        self.table.record(keys, (replica_id, gen))
        return True

    def holder(self, keys: Sequence[int]) -> str | None:
        """The replica the prefix ``keys`` was last sent to (None: not remembered)."""
        found = self.table.holders(keys[-1]) if keys else ()
        return found[-1][0] if found else None


class PrefixMatchScorer(BaseScorer):
    """Scorer form of prefix affinity for :class:`~llmfleet.routing.weighted.WeightedPolicy`.

    Scores ``-(matched blocks / prompt blocks)`` in [-1, 0]: with weight ``w`` a full match is worth ``w``
    in-flight requests, so the weights trade cache hits against load smoothly instead of by a hard threshold.
    """

    name = "prefix"

    def __init__(self, config: PrefixAffinityConfig, clock: Clock) -> None:
        self.config = config
        self.table = PrefixTable(config.table_size, config.replicas_per_block)
        self._members = Membership(clock, config.forget_after_s)
        self._keys: list[int] = []
        self._gen: dict[str, int] = {}
        self._matched: dict[str, int] = {}

    def begin(self, request: RouteRequest, candidates: Sequence[ReplicaView]) -> None:
        cfg = self.config
        self._gen = self._members.sync(request.model, candidates)
        self._keys = block_keys(request.model, request.prompt_text, cfg.block_bytes, cfg.max_blocks)
        matched: dict[str, int] = {}
        wanted = len(candidates)
        i = self.table.deepest_present(self._keys)
        while i >= cfg.min_match_blocks and len(matched) < wanted:
            for rid, g in self.table.holders(self._keys[i - 1]):
                if rid not in matched and self._gen.get(rid) == g:
                    matched[rid] = i
            i -= 1
        self._matched = matched

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        m = self._matched.get(replica.id)
        return -m / len(self._keys) if m else 0.0

    def observe(self, request: RouteRequest, chosen: ReplicaView) -> None:
        if self._keys:
            self.table.record(self._keys, (chosen.id, self._gen[chosen.id]))
