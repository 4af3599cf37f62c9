"""``throughput``: ``concurrency`` requests in flight (seed: 100); sustained output tokens/s against the target."""

from __future__ import annotations

from llmfleet.bench.spec import Slo
from llmfleet.bench.summary import summarize
from llmfleet.config import ValidateThroughputConfig
from llmfleet.validate.context import CheckContext
from llmfleet.validate.verdict import CheckResult, verdict

NAME = "throughput"


async def run(ctx: CheckContext, cfg: ValidateThroughputConfig) -> CheckResult:
    """Closed loop at ``cfg.concurrency``; PASS when output tokens/s reach the target and nothing failed."""
    target = f">= {cfg.min_output_tokens_per_s:,.0f} output tokens/s at {cfg.concurrency} concurrent, 0 failed"
    async with ctx.phase(NAME):
        run_ = await ctx.run_load(
            NAME,
            concurrency=cfg.concurrency,
            requests=max(cfg.requests, cfg.concurrency),
            input_tokens=cfg.input_tokens,
            output_tokens=cfg.output_tokens,
        )
    s = summarize(run_, Slo())
    tps = float(s["output_tokens_per_s"])
    passed = tps >= cfg.min_output_tokens_per_s and s["failed"] == 0
    evidence = (
        f"{s['completed']} completed, {s['failed']} failed in {s['duration_s']:.1f} s; "
        f"{s['requests_per_s']:.1f} req/s; {cfg.input_tokens}+{cfg.output_tokens} tokens per request"
    )
    return verdict(
        NAME,
        passed,
        f"{tps:,.0f} output tokens/s",
        target,
        evidence,
        output_tokens_per_s=tps,
        requests_per_s=s["requests_per_s"],
        completed=s["completed"],
        failed=s["failed"],
        errors=s["errors"],
    )
