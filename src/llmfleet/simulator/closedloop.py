"""One replica under a closed loop, on the simulated clock: what the replica model predicts for a benchmark.

``llmfleet bench --concurrency N`` keeps N requests in flight and sends the next one when one finishes. This runs the
same loop against :class:`~llmfleet.simulator.replica.ReplicaModel` with no wall clock, so its TTFT, TPOT and
throughput are the performance model's own prediction: unlike ``llmfleet engine sim``, which runs in real time and
falls behind its model when the machine does not give it the CPU (its ``llmfleet_sim_step_lateness_seconds``).
Each request waits ``request_overhead_s`` (a calibrated profile's API cost) before the scheduler sees it, as the
sim engine does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmfleet.bench.summary import percentile
from llmfleet.simulator.core import EventLoop, SimClock
from llmfleet.simulator.replica import EngineSpec, ReplicaModel, Seq
from llmfleet.simulator.stepcost import StepCost


@dataclass(frozen=True)
class LoopRequest:
    """One request of the loop: prompt and output lengths in tokens, and an optional shared prefix."""

    input_tokens: int
    output_tokens: int
    prefix_id: str | None = None
    prefix_tokens: int = 0


@dataclass(frozen=True)
class LoopResult:
    """Per-request timings (seconds, in request order) and the run's span."""

    ttft_s: tuple[float, ...]
    tpot_s: tuple[float, ...]
    """Time per output token after the first, for requests with more than one output token."""
    output_tokens: int
    span_s: float
    """From the first send to the last completion."""

    def summary_ms(self) -> dict[str, float]:
        """TTFT p50/p90, TPOT p50/mean (ms) and output tokens per second, named like ``llmfleet bench``'s."""
        ttft, tpot = sorted(self.ttft_s), sorted(self.tpot_s)
        return {
            "ttft_p50_ms": percentile(ttft, 50) * 1e3,
            "ttft_p90_ms": percentile(ttft, 90) * 1e3,
            "tpot_p50_ms": percentile(tpot, 50) * 1e3,
            "tpot_mean_ms": sum(tpot) / len(tpot) * 1e3 if tpot else float("nan"),
            "output_tokens_per_s": self.output_tokens / self.span_s if self.span_s > 0 else float("nan"),
        }


def closed_loop(
    cost: StepCost,
    spec: EngineSpec,
    requests: Sequence[LoopRequest],
    concurrency: int,
    request_overhead_s: float = 0.0,
) -> LoopResult:
    """Run ``requests`` in order with ``concurrency`` in flight through one replica model; see the module docstring."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if request_overhead_s < 0:
        raise ValueError("request_overhead_s must be >= 0")
    clock = SimClock()
    loop = EventLoop(clock)
    n = len(requests)
    sent, first, done = [0.0] * n, [0.0] * n, [-1.0] * n
    todo = iter(range(n))

    def on_first(seq: Seq, t: float) -> None:
        first[seq.job] = t

    def on_finish(seq: Seq, t: float) -> None:
        done[seq.job] = t
        loop.at(t, send_next)

    model = ReplicaModel(cost, spec, on_first, on_finish)
    model.attach(loop)

    def admit(i: int) -> None:
        r = requests[i]
        seq = Seq(i, r.input_tokens, r.output_tokens, r.prefix_id, r.prefix_tokens)
        model.schedule(model.submit(seq, clock.now()))

    def send_next() -> None:
        i = next(todo, None)
        if i is not None:
            sent[i] = clock.now()
            loop.call_at(clock.now() + request_overhead_s, admit, i)

    for _ in range(concurrency):
        loop.at(0.0, send_next)
    loop.run()
    finished = [i for i in range(n) if done[i] >= 0]
    return LoopResult(
        ttft_s=tuple(first[i] - sent[i] for i in finished),
        tpot_s=tuple(
            (done[i] - first[i]) / (requests[i].output_tokens - 1) for i in finished if requests[i].output_tokens > 1
        ),
        output_tokens=sum(requests[i].output_tokens for i in finished),
        span_s=max((done[i] for i in finished), default=0.0),
    )
