"""Load-aware routing on scraped engine metrics plus the gateway's in-flight count."""

from __future__ import annotations

import random

from llmfleet.clock import Clock
from llmfleet.config import ScorerWeightsConfig
from llmfleet.routing.scorers import (
    EngineRunningScorer,
    EngineWaitingScorer,
    InFlightScorer,
    KvUsageScorer,
    LatencyScorer,
    Scorer,
)
from llmfleet.routing.weighted import WeightedPolicy


def build_load_aware(
    weights: ScorerWeightsConfig, clock: Clock, rng: random.Random, extra: list[tuple[Scorer, float]] | None = None
) -> WeightedPolicy:
    """A :class:`WeightedPolicy` over in-flight, engine waiting/running, KV usage and latency (weights from
    config), plus ``extra`` terms (e.g. a prefix-match scorer). Reason: ``load_aware``."""
    age = weights.engine_metrics_max_age_s
    terms: list[tuple[Scorer, float]] = [
        (InFlightScorer(), weights.in_flight),
        (EngineWaitingScorer(clock, age), weights.engine_waiting),
        (EngineRunningScorer(clock, age), weights.engine_running),
        (KvUsageScorer(clock, age), weights.kv_usage),
        (LatencyScorer(prefer_ttft=True), weights.latency),
    ]
    terms.extend(extra or [])
    return WeightedPolicy("load_aware", terms, rng)
