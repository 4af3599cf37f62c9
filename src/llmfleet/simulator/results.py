"""What a simulation measured: per-request latencies, failures, routing reasons and the fleet over time, and the
results JSON (``completed``, ``failed``, latency percentiles, SLO attainment, ``gpu_hours``, ``cost_usd``...)."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmfleet.bench.summary import percentile

if TYPE_CHECKING:
    from llmfleet.simulator.fleet import SimReplica
    from llmfleet.simulator.workload import SimRequest

STATS = ("mean", "p50", "p90", "p99")


@dataclass(frozen=True)
class Slo:
    """Latency objectives; a request attains the SLO when it completed and met every one set."""

    ttft_s: float | None = 1.0
    tpot_s: float | None = 0.1
    e2e_s: float | None = None


def _quantiles_ms(values: array[float], points: int = 101) -> list[float]:
    """``points`` evenly spaced quantiles (p0..p100) in ms: enough to draw a CDF, small enough for the JSON."""
    if not values:
        return []
    s = sorted(values)
    return [round(percentile(s, 100 * i / (points - 1)) * 1000, 3) for i in range(points)]


def _stats_ms(values: array[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(STATS)
    s = sorted(values)
    return {
        "mean": round(sum(s) / len(s) * 1000, 3),
        "p50": round(percentile(s, 50) * 1000, 3),
        "p90": round(percentile(s, 90) * 1000, 3),
        "p99": round(percentile(s, 99) * 1000, 3),
    }


class Recorder:
    """Collects measurements as the simulation runs (compact arrays: a million requests cost ~30 MB)."""

    def __init__(self, slo: Slo, timeline_step_s: float) -> None:
        self.slo = slo
        self.timeline_step_s = timeline_step_s
        self.arrivals = 0
        self.ttft = array("d")
        self.tpot = array("d")
        self.e2e = array("d")
        self.done_at = array("d")
        self.slo_met = 0
        self.failures: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.events: list[dict[str, object]] = []
        self.gpu_seconds = 0.0
        self.cost_usd = 0.0
        self.live: dict[str, SimReplica] = {}
        self.timeline: list[tuple[float, int, int]] = []
        """(time, ready replicas, billed replicas)."""
        self.decisions: list[dict[str, object]] = []
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.preemptions = 0
        self.output_tokens = 0

    # ---- requests -----------------------------------------------------------------------------------------
    def arrived(self, req: SimRequest) -> None:
        self.arrivals += 1

    def routed(self, reason: str) -> None:
        self.reasons[reason] += 1

    def retried(self, reason: str) -> None:
        self.retries[reason] += 1

    def completed(self, req: SimRequest, first_token_s: float, done_s: float, retries: int) -> None:
        ttft = first_token_s - req.arrival_s
        e2e = done_s - req.arrival_s
        tpot = (done_s - first_token_s) / (req.output_tokens - 1) if req.output_tokens > 1 else 0.0
        self.ttft.append(ttft)
        self.e2e.append(e2e)
        self.tpot.append(tpot)
        self.done_at.append(done_s)
        self.output_tokens += req.output_tokens
        slo = self.slo
        if (
            (slo.ttft_s is None or ttft <= slo.ttft_s)
            and (slo.tpot_s is None or tpot <= slo.tpot_s)
            and (slo.e2e_s is None or e2e <= slo.e2e_s)
        ):
            self.slo_met += 1

    def failed(self, req: SimRequest, reason: str, at_s: float) -> None:
        self.failures[reason] += 1

    # ---- replicas -----------------------------------------------------------------------------------------
    def replica_created(self, r: SimReplica) -> None:
        self.live[r.id] = r

    def replica_ready(self, r: SimReplica) -> None:
        """Nothing to record: readiness shows in the timeline."""

    def replica_killed(self, r: SimReplica, reason: str, at_s: float) -> None:
        self.events.append({"t": round(at_s, 3), "event": reason, "id": r.id})

    def replica_ended(self, r: SimReplica) -> None:
        self._bill(r, r.ended_s if r.ended_s is not None else r.created_s)
        self.live.pop(r.id, None)
        if r.model is not None:
            self.prompt_tokens += r.model.prompt_tokens_total
            self.cached_tokens += r.model.cached_tokens_total
            self.preemptions += r.model.preemptions

    def _bill(self, r: SimReplica, end_s: float) -> None:
        gpu_s = max(0.0, end_s - r.created_s) * r.kind.gpus
        self.gpu_seconds += gpu_s
        self.cost_usd += gpu_s / 3600 * r.kind.usd_per_gpu_hour

    def sample_fleet(self, now: float) -> None:
        ready = sum(1 for r in self.live.values() if r.serving)
        self.timeline.append((now, ready, len(self.live)))

    def finish(self, now: float) -> None:
        """Close the books at the end of the run: bill and count what is still running."""
        for r in list(self.live.values()):
            if r.ended_s is None:
                r.ended_s = now
            self.replica_ended(r)

    # ---- output -------------------------------------------------------------------------------------------
    def to_json(self, label: str, duration_s: float, wall_s: float, extra: dict[str, Any]) -> dict[str, Any]:
        completed = len(self.e2e)
        failed = sum(self.failures.values())
        total = completed + failed
        hours = self.gpu_seconds / 3600
        return {
            "label": label,
            "completed": completed,
            "failed": failed,
            "unfinished": max(0, self.arrivals - total),
            "failures": dict(self.failures),
            "retries": sum(self.retries.values()),
            "retries_by_reason": dict(self.retries),
            "ttft_ms": _stats_ms(self.ttft),
            "tpot_ms": _stats_ms(self.tpot),
            "e2e_ms": _stats_ms(self.e2e),
            "slo": {
                "ttft_ms": None if self.slo.ttft_s is None else self.slo.ttft_s * 1000,
                "tpot_ms": None if self.slo.tpot_s is None else self.slo.tpot_s * 1000,
                "e2e_ms": None if self.slo.e2e_s is None else self.slo.e2e_s * 1000,
                "attainment": round(self.slo_met / total, 5) if total else None,
            },
            "throughput": {
                "requests_per_s": round(completed / duration_s, 4) if duration_s else None,
                "output_tokens_per_s": round(self.output_tokens / duration_s, 2) if duration_s else None,
            },
            "prefix_cache_hit_rate": round(self.cached_tokens / self.prompt_tokens, 5) if self.prompt_tokens else 0.0,
            "preemptions": self.preemptions,
            "routing_reasons": dict(self.reasons),
            "gpu_hours": round(hours, 4),
            "cost_usd": round(self.cost_usd, 2),
            "cost_per_million_output_tokens_usd": round(self.cost_usd / self.output_tokens * 1e6, 4)
            if self.output_tokens
            else None,
            "quantiles_ms": {"ttft": _quantiles_ms(self.ttft), "e2e": _quantiles_ms(self.e2e)},
            "replicas_over_time": [{"t": round(t, 1), "ready": a, "billed": b} for t, a, b in self.timeline],
            "replica_events": self.events,
            "autoscaler_decisions": self.decisions,
            "duration_s": duration_s,
            "wall_s": round(wall_s, 3),
            **extra,
        }
