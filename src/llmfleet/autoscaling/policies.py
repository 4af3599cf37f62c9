"""Per-signal proposals. Each policy looks at the signal window and proposes a replica count with a reason.

- ``threshold``: the seed's rule — scale up when average latency > 500 ms (proportionally to the breach), down by
  one when it is < 250 ms, or when the fleet was idle (no request, nothing outstanding) over the whole window.
  ``latency_signal`` picks e2e or TTFT, mean or p95.
- ``target_ratio``: HPA-style, running requests per replica towards a target: ceil(running / target).
- ``queue``: KEDA-like on the engines' outstanding work: ceil((waiting + running) / target per replica).
- ``model``: size from the performance model: observed arrival rate x (1 + spare capacity) / per-replica
  requests/s at the observed token lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llmfleet.autoscaling.pipeline import Proposal
from llmfleet.autoscaling.signals import SignalWindow
from llmfleet.config import AutoscalerConfig
from llmfleet.errors import ConfigError
from llmfleet.perfmodel.model import PerfModel

PolicyFn = Callable[[SignalWindow, int, AutoscalerConfig, float], Proposal | None]


_LATENCY_FIELD = {"e2e": "latency_s", "ttft": "ttft_s", "e2e_p95": "latency_p95_s", "ttft_p95": "ttft_p95_s"}


def _idle(w: SignalWindow, window_s: float) -> bool:
    """No request arrived and nothing was outstanding in any of at least two samples over the window."""
    latest = w.latest
    if latest is None:
        return False
    recent = w.since(latest.t - window_s)
    return len(recent) >= 2 and all(s.request_rate == 0 and s.outstanding == 0 and s.in_flight == 0 for s in recent)


def threshold(w: SignalWindow, current: int, cfg: AutoscalerConfig, window_s: float) -> Proposal | None:
    """The seed's latency band (see the module docstring)."""
    lat = w.mean(_LATENCY_FIELD[cfg.latency_signal], window_s)
    if lat is None:
        if _idle(w, window_s):
            return Proposal(max(0, current - 1), f"idle: no requests for {window_s:.0f} s", "threshold")
        return None
    ms = lat * 1000
    if ms > cfg.latency_up_ms:
        n = max(current + 1, math.ceil(current * ms / cfg.latency_up_ms))
        return Proposal(n, f"{cfg.latency_signal} latency {ms:.0f} ms > {cfg.latency_up_ms:.0f} ms", "threshold")
    if ms < cfg.latency_down_ms:
        return Proposal(
            max(0, current - 1), f"{cfg.latency_signal} latency {ms:.0f} ms < {cfg.latency_down_ms:.0f} ms", "threshold"
        )
    return Proposal(current, f"{cfg.latency_signal} latency {ms:.0f} ms within band", "threshold")


def target_ratio(w: SignalWindow, current: int, cfg: AutoscalerConfig, window_s: float) -> Proposal | None:
    """HPA-style: running requests over a per-replica target."""
    running = w.mean("running", window_s)
    if running is None:
        return None
    n = math.ceil(running / cfg.target_running_per_replica)
    return Proposal(n, f"running {running:.1f} / target {cfg.target_running_per_replica:g} per replica", "target_ratio")


def queue(w: SignalWindow, current: int, cfg: AutoscalerConfig, window_s: float) -> Proposal | None:
    """KEDA-like: outstanding work (waiting + running) over a per-replica target."""
    waiting, running = w.mean("waiting", window_s), w.mean("running", window_s)
    if waiting is None or running is None:
        return None
    outstanding = waiting + running
    n = math.ceil(outstanding / cfg.target_queue_per_replica)
    return Proposal(
        n,
        f"outstanding {outstanding:.1f} (waiting {waiting:.1f}) / target {cfg.target_queue_per_replica:g} per replica",
        "queue",
    )


def model_based(
    perf: PerfModel,
    input_tokens: int,
    output_tokens: int,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int = 256,
) -> PolicyFn:
    """A policy closed over the performance model and the workload's typical lengths.

    A replica is rated at ``model_concurrency_per_replica`` sequences, or fewer when the KV cache cannot hold that
    many at these lengths (with the engine's ``gpu_memory_utilization`` and ``max_num_seqs``); its requests/s follow
    from Little's law over the model's steady state (concurrency / end-to-end latency).
    """
    fits = perf.max_concurrency(input_tokens, output_tokens, gpu_memory_utilization, max_num_seqs)
    if fits < 1:
        raise ConfigError(
            f"autoscaler.model_input_tokens/model_output_tokens: a {input_tokens}+{output_tokens}-token request does "
            f"not fit in the KV cache of {perf.model.name} on {perf.tp} x {perf.gpu.name}"
        )

    def propose(w: SignalWindow, current: int, cfg: AutoscalerConfig, window_s: float) -> Proposal | None:
        rate = w.mean("request_rate", window_s)
        if rate is None:
            return None
        concurrency = min(cfg.model_concurrency_per_replica, fits)
        per_replica = perf.steady_state(concurrency, input_tokens, output_tokens).requests_per_s
        n = math.ceil(rate * (1 + cfg.spare_capacity) / per_replica) if rate > 0 else 0
        return Proposal(
            n,
            f"arrivals {rate:.2f}/s x {1 + cfg.spare_capacity:.2f} / {per_replica:.2f}/s per replica"
            f" (at concurrency {concurrency})",
            "model",
        )

    return propose


BUILTIN: dict[str, PolicyFn] = {"threshold": threshold, "target_ratio": target_ratio, "queue": queue}
