"""What one benchmark run is made of: the requests to send, the endpoint, the load model and when to stop."""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request of a workload, before it is rendered into a prompt.

    Requests with the same ``prefix_id`` share their first ``prefix_tokens`` tokens; requests with the same
    ``session_id`` are turns of one conversation: each turn's prompt extends the previous one, and a turn is sent only
    after the previous turn of its session has finished.
    """

    index: int
    input_tokens: int
    output_tokens: int
    at_s: float | None = None
    """Send time from the start of the run (trace replay); ``None`` when the load model decides."""
    session_id: str | None = None
    prefix_id: str | None = None
    prefix_tokens: int = 0


@dataclass(frozen=True)
class Target:
    """The OpenAI-compatible endpoint under test."""

    url: str
    model: str
    api: str = "chat"
    """``chat`` (``/v1/chat/completions``) or ``completions`` (``/v1/completions``)."""
    timeout_s: float = 600.0
    api_key: str | None = None


@dataclass(frozen=True)
class Load:
    """Closed loop (``concurrency`` requests always in flight), open loop (``rate_per_s`` with an arrival process),
    or, with neither, trace replay at each request's ``at_s``."""

    concurrency: int | None = None
    rate_per_s: float | None = None
    arrivals: str = "poisson"
    burstiness: float = 1.0

    @property
    def mode(self) -> str:
        """``closed``, ``open`` or ``trace``."""
        if self.concurrency is not None:
            return "closed"
        return "open" if self.rate_per_s is not None else "trace"

    def label(self) -> str:
        """Short human-readable description (``rate 4/s poisson``, ``concurrency 8``, ``trace timestamps``)."""
        if self.mode == "closed":
            return f"concurrency {self.concurrency}"
        if self.mode == "open":
            extra = f" b={self.burstiness:g}" if self.arrivals == "gamma" else ""
            return f"rate {self.rate_per_s:g}/s {self.arrivals}{extra}"
        return "trace timestamps"


@dataclass(frozen=True)
class Bounds:
    """When to stop sending: after ``duration_s`` seconds or ``max_requests`` requests, whichever comes first.

    Requests in flight at that moment still complete and count.
    """

    duration_s: float | None = None
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration: {self.duration_s:g} must be > 0 seconds")
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigError(f"--requests: {self.max_requests} must be >= 1")


@dataclass(frozen=True)
class Slo:
    """Service-level objectives for goodput: a request counts when it meets every objective set."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
