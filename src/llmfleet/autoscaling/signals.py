"""Fleet signals over sliding windows (injected clock: the same code runs live and in simulation).

A :class:`FleetSample` is one observation of the whole fleet at the controller's clock time: gateway-side request
rate, latency and TTFT (means and p95 of the requests completed since the previous sample), error rate, and the
engines' load (waiting, running, KV-cache usage), summed or averaged over ready replicas and kept per replica.
:class:`SignalWindow` keeps the samples of the last ``max_age_s`` seconds and aggregates any numeric field (or
property) of them over a shorter window: mean, max, percentile.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaLoad:
    """Engine-side load of one ready replica (vLLM's gauges)."""

    id: str
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    """``vllm:kv_cache_usage_perc``, a fraction in [0, 1]."""


@dataclass(frozen=True)
class FleetSample:
    """One observation of the fleet. Rates and latencies are in the controller's clock."""

    t: float
    ready_replicas: int
    request_rate: float = 0.0
    """Requests per second arriving at the gateway."""
    latency_s: float | None = None
    """Mean end-to-end latency of requests completed since the previous sample."""
    ttft_s: float | None = None
    """Mean time to first token of requests completed since the previous sample."""
    waiting: float = 0.0
    """Sum of vllm:num_requests_waiting over replicas."""
    running: float = 0.0
    """Sum of vllm:num_requests_running over replicas."""
    kv_usage: float = 0.0
    """Mean KV-cache usage over replicas (0..1)."""
    error_rate: float = 0.0
    """Fraction of requests since the previous sample that failed (5xx)."""
    in_flight: float = 0.0
    """Requests the gateway has outstanding."""
    latency_p95_s: float | None = None
    """95th percentile end-to-end latency since the previous sample (from histogram buckets)."""
    ttft_p95_s: float | None = None
    replicas: tuple[ReplicaLoad, ...] = ()
    """Per-replica engine load (empty when the source only knows totals)."""

    @property
    def kv_usage_max(self) -> float:
        """KV-cache usage of the fullest replica (the mean when per-replica loads are unknown)."""
        return max((r.kv_usage for r in self.replicas), default=self.kv_usage)

    @property
    def outstanding(self) -> float:
        """Waiting plus running requests over the fleet."""
        return self.waiting + self.running


class SignalWindow:
    """Samples of the last ``max_age_s`` seconds (bounded: older samples are dropped as new ones arrive)."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._samples: deque[FleetSample] = deque()

    def add(self, s: FleetSample) -> None:
        self._samples.append(s)
        while self._samples and s.t - self._samples[0].t > self.max_age_s:
            self._samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def since(self, t: float) -> list[FleetSample]:
        return [s for s in self._samples if s.t >= t]

    @property
    def latest(self) -> FleetSample | None:
        return self._samples[-1] if self._samples else None

    def values(self, field: str, window_s: float) -> list[float]:
        """Values of a field over the last ``window_s`` (ending at the latest sample), skipping unknown ones."""
        latest = self.latest
        if latest is None:
            return []
        values = (getattr(s, field) for s in self.since(latest.t - window_s))
        return [float(v) for v in values if v is not None]

    def mean(self, field: str, window_s: float) -> float | None:
        """Mean of a field over the last ``window_s`` (None when no sample has it)."""
        values = self.values(field, window_s)
        return sum(values) / len(values) if values else None

    def max(self, field: str, window_s: float) -> float | None:
        """Largest value of a field over the last ``window_s`` (None when no sample has it)."""
        values = self.values(field, window_s)
        return max(values) if values else None

    def percentile(self, field: str, q: float, window_s: float) -> float | None:
        """The ``q``-th percentile (0..100, nearest rank) of a field over the last ``window_s``."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        values = sorted(self.values(field, window_s))
        if not values:
            return None
        rank = max(1, math.ceil(q / 100 * len(values)))
        return values[rank - 1]
