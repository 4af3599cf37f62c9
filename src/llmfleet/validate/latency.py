"""``latency``: TTFT and end-to-end percentiles under load; the gate is TTFT p99 (seed: p99 < 800 ms, 1K prompts).

The seed's "P99 latency 500-800 ms for 1K input tokens" cannot be end-to-end latency of a generated answer (hundreds
of tokens at tens of ms each), so the gate is time to first token; e2e percentiles are reported beside it.
"""

from __future__ import annotations

from llmfleet.bench.spec import Slo
from llmfleet.bench.summary import summarize
from llmfleet.config import ValidateLatencyConfig
from llmfleet.validate.context import CheckContext
from llmfleet.validate.verdict import CheckResult, verdict

NAME = "latency"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


async def run(ctx: CheckContext, cfg: ValidateLatencyConfig) -> CheckResult:
    """Closed loop at ``cfg.concurrency``; PASS when TTFT p99 is within the target and nothing failed."""
    target = (
        f"TTFT p99 <= {cfg.max_ttft_p99_ms:,.0f} ms ({cfg.input_tokens}-token prompts, {cfg.concurrency} in flight)"
    )
    async with ctx.phase(NAME):
        run_ = await ctx.run_load(
            NAME,
            concurrency=cfg.concurrency,
            requests=cfg.requests,
            input_tokens=cfg.input_tokens,
            output_tokens=cfg.output_tokens,
        )
    s = summarize(run_, Slo())
    ttft, e2e = s["ttft_ms"], s["e2e_ms"]
    p99 = ttft["p99"]
    passed = p99 is not None and p99 <= cfg.max_ttft_p99_ms and s["failed"] == 0
    evidence = (
        f"TTFT p50/p90/p99 {_ms(ttft['p50'])}/{_ms(ttft['p90'])}/{_ms(p99)} ms; "
        f"e2e p50/p90/p99 {_ms(e2e['p50'])}/{_ms(e2e['p90'])}/{_ms(e2e['p99'])} ms; "
        f"TPOT p50 {_ms(s['tpot_ms']['p50'])} ms; {s['completed']} completed, {s['failed']} failed"
    )
    return verdict(
        NAME,
        passed,
        f"TTFT p99 {_ms(p99)} ms",
        target,
        evidence,
        ttft_ms=ttft,
        e2e_ms=e2e,
        tpot_ms=s["tpot_ms"],
        failed=s["failed"],
    )
