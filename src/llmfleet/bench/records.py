"""What the client records: one :class:`RequestRecord` per request, gathered into a :class:`RunRecords`."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmfleet.bench.spec import Load


@dataclass(slots=True)
class RequestRecord:
    """Timings of one request, in seconds of the run's clock (absolute; :class:`RunRecords` holds the origin)."""

    index: int
    scheduled_s: float
    """When the load model wanted it sent (for a session's later turn: when the previous turn finished, if later)."""
    start_s: float
    """When it was sent."""
    end_s: float = 0.0
    first_token_s: float | None = None
    """When the first chunk with output text arrived."""
    itl_s: list[float] = field(default_factory=list)
    """Gaps between consecutive chunks with output text."""
    output_tokens: int = 0
    """From the server's ``usage`` when it sends one (else the number of chunks with text)."""
    input_tokens: int = 0
    """From the server's ``usage`` when it sends one (else the count the workload asked for)."""
    usage_reported: bool = False
    error: str | None = None
    """Error kind (``http_503``, ``connect``, ``timeout``, ``disconnected``, ``stream_error``, ...), None if fine."""
    error_detail: str = ""

    @property
    def ok(self) -> bool:
        """Completed with output."""
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        """Time to first output token, from sending."""
        return None if self.first_token_s is None else self.first_token_s - self.start_s

    @property
    def e2e_s(self) -> float:
        """End-to-end latency, from sending to the end of the stream."""
        return self.end_s - self.start_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - TTFT) / (output tokens - 1); None for one-token answers."""
        if self.first_token_s is None or self.output_tokens < 2:
            return None
        return (self.end_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def lag_s(self) -> float:
        """How late it was sent compared with its schedule (the client falling behind)."""
        return max(0.0, self.start_s - self.scheduled_s)


@dataclass
class RunRecords:
    """Everything one run (one point of a sweep) recorded."""

    load: Load
    start_s: float
    end_s: float = 0.0
    records: list[RequestRecord] = field(default_factory=list)
    client_cpu_s: float = 0.0
    """CPU seconds this process spent during the run (user + system)."""
    wall_s: float = 0.0
    """Wall seconds of the run, measured beside the CPU time."""

    @property
    def client_cpu_fraction(self) -> float:
        """Share of one core the client used: near 1 means the client itself was the bottleneck."""
        return self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0
