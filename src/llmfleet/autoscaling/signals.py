"""Fleet signals over sliding windows (injected clock: the same code runs live and in simulation)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


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
    waiting: float = 0.0
    """Sum of vllm:num_requests_waiting over replicas."""
    running: float = 0.0
    kv_usage: float = 0.0
    """Mean KV-cache usage over replicas (0..1)."""
    error_rate: float = 0.0
    in_flight: float = 0.0


class SignalWindow:
    """Samples of the last ``max_age_s`` seconds."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._samples: deque[FleetSample] = deque()

    def add(self, s: FleetSample) -> None:
        self._samples.append(s)
        while self._samples and s.t - self._samples[0].t > self.max_age_s:
            self._samples.popleft()

    def since(self, t: float) -> list[FleetSample]:
        return [s for s in self._samples if s.t >= t]

    @property
    def latest(self) -> FleetSample | None:
        return self._samples[-1] if self._samples else None

    def mean(self, field: str, window_s: float) -> float | None:
        """Mean of a field over the last ``window_s`` (None when no sample has it)."""
        latest = self.latest
        if latest is None:
            return None
        values = [getattr(s, field) for s in self.since(latest.t - window_s)]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None
