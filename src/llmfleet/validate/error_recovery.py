"""``error_recovery``: inject request timeouts (a hung replica), then load failures (a replica answering 500) into
one replica of the fleet; clients should see (nearly) no error (seed: < 0.1%) and the replica must rejoin once the
faults are cleared. Uses the simulated engine's ``/admin/faults``.
"""

from __future__ import annotations

from llmfleet.config import ValidateErrorRecoveryConfig
from llmfleet.validate.context import CheckContext
from llmfleet.validate.verdict import CheckResult, skipped, verdict

NAME = "error_recovery"


async def run(ctx: CheckContext, cfg: ValidateErrorRecoveryConfig) -> CheckResult:
    """Two fault phases under load, then recovery; PASS when the error rate stays within target and it recovers."""
    target = f"client error rate <= {cfg.max_error_rate:.2%}, faulty replica back within {cfg.recovery_timeout_s:g} s"
    missing = ctx.control_missing()
    if missing:
        return skipped(NAME, target, missing)
    fleet = ctx.fleet.config
    if fleet is not None and fleet.fleet.engine != "sim":
        return skipped(NAME, target, "fault injection needs simulated engines (/admin/faults)")
    healthy = [r for r in await ctx.replicas() if r["state"] == "healthy"]
    if len(healthy) < 2:
        return verdict(NAME, False, "-", target, f"{len(healthy)} healthy replica: nothing to fail over to")
    url = str(healthy[0]["url"])
    timeout_fault = {"extra_latency_ms": cfg.timeout_delay_ms} if cfg.timeout_delay_ms > 0 else {"hang": True}
    load = {"concurrency": cfg.concurrency, "duration_s": cfg.phase_s}
    tokens = {"input_tokens": cfg.input_tokens, "output_tokens": cfg.output_tokens}
    phases: dict[str, tuple[int, int]] = {}
    async with ctx.phase(NAME):
        try:
            for label, fault in (("timeouts", timeout_fault), ("load failures", {"hang": False, "error_rate": 1.0})):
                await ctx.set_faults(url, fault)
                ctx.progress(f"error_recovery: {label} injected into {url}")
                recs = await ctx.run_load(NAME, **load, **tokens)  # type: ignore[arg-type]
                phases[label] = (len(recs.records), sum(not r.ok for r in recs.records))
        finally:
            await ctx.set_faults(url, {"hang": False, "error_rate": 0.0, "extra_latency_ms": 0.0})
        recovered_s = await ctx.wait_routable(0, cfg.recovery_timeout_s, url=url)
    total = sum(n for n, _ in phases.values())
    failed = sum(f for _, f in phases.values())
    rate = failed / total if total else 1.0
    passed = total > 0 and rate <= cfg.max_error_rate and recovered_s is not None
    per_phase = "; ".join(f"{k}: {f} of {n} failed" for k, (n, f) in phases.items())
    back = "rejoined" if recovered_s is not None else f"NOT routable within {cfg.recovery_timeout_s:g} s"
    evidence = f"faults injected into {url}: {per_phase}; faults cleared, replica {back}"
    return verdict(
        NAME,
        passed,
        f"{rate:.2%} errors ({failed}/{total})",
        target,
        evidence,
        error_rate=rate,
        requests=total,
        failed=failed,
        recovered=recovered_s is not None,
    )
