"""``memory``: a soak under steady load (seed: 8 h; time-compressed on simulated engines with ``--time-scale``).

Gradual degradation shows as GPU memory creeping up (``DCGM_FI_DEV_FB_USED`` of every replica, read idle before and
after the soak so the KV cache in use does not blur it; the growth is extrapolated to 8 h), replica process memory
growing (RSS, last third of the soak against the first), or latency growing (e2e p50, last third against the first).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from llmfleet.bench.summary import percentile
from llmfleet.config import ValidateMemoryConfig
from llmfleet.promtext import MetricsParseError, parse
from llmfleet.validate.context import CheckContext
from llmfleet.validate.local_fleet import rss_mib
from llmfleet.validate.verdict import CheckResult, skipped, verdict

NAME = "memory"
SEED_SOAK_S = 8 * 3600.0


@dataclass(frozen=True)
class MemorySample:
    """Summed over the replicas present at the start of the soak."""

    t_s: float
    gpu_used_mib: float
    gpu_total_mib: float
    rss_mib: float


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def thirds_growth(values: list[float]) -> float | None:
    """Mean of the last third over the mean of the first third, minus 1 (None with fewer than three values)."""
    if len(values) < 3:
        return None
    k = len(values) // 3
    first, last = values[:k], values[-k:]
    base = sum(first) / len(first)
    return (sum(last) / len(last)) / base - 1.0 if base > 0 else None


async def _sample(ctx: CheckContext, urls: list[str]) -> MemorySample | None:
    pids = ctx.fleet.replica_pids() if ctx.fleet.replica_pids else {}
    used = total = rss = 0.0
    for url in urls:
        text = await ctx.scrape(url)
        try:
            scrape = parse(text)
        except MetricsParseError:
            return None
        u, f = scrape.total("DCGM_FI_DEV_FB_USED"), scrape.total("DCGM_FI_DEV_FB_FREE")
        pid = pids.get(urlsplit(url).port or -1)
        r = rss_mib(pid) if pid is not None else None
        if u is None or f is None or r is None:
            return None  # a replica restarted or does not export GPU memory: skip this sample
        used, total, rss = used + u, total + u + f, rss + r
    return MemorySample(ctx.timeline.rel(ctx.clock.now()), used, total, rss)


async def run(ctx: CheckContext, cfg: ValidateMemoryConfig) -> CheckResult:
    """Soak for ``soak_s`` fleet seconds; PASS when neither memory nor latency creeps up."""
    target = (
        f"GPU memory growth over 8 h <= {cfg.max_gpu_memory_growth:.0%} of GPU memory, RSS growth <= "
        f"{cfg.max_rss_growth:.0%}, e2e p50 growth <= {cfg.max_latency_growth:.0%}"
    )
    missing = ctx.control_missing()
    if missing:
        return skipped(NAME, target, missing)
    urls = [str(r["url"]) for r in await ctx.replicas() if r["state"] in ("healthy", "degraded")]
    samples: list[MemorySample] = []
    interval_s = max(cfg.soak_s / 40.0, 0.25 * ctx.fleet.time_scale)

    async def sampler() -> None:
        while True:
            s = await _sample(ctx, urls)
            if s is not None:
                samples.append(s)
            await ctx.clock.sleep(interval_s)

    async with ctx.phase(NAME):
        idle_before = await _sample(ctx, urls)
        task = asyncio.create_task(sampler())
        recs = await ctx.run_load(
            NAME,
            concurrency=cfg.concurrency,
            duration_s=cfg.soak_s,
            input_tokens=cfg.input_tokens,
            output_tokens=cfg.output_tokens,
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        idle_after = await _sample(ctx, urls)
    if len(samples) < 3 or idle_before is None or idle_after is None:
        return verdict(NAME, False, "-", target, f"only {len(samples)} memory samples (replicas restarted?)")
    total_mib = idle_before.gpu_total_mib
    span = idle_after.t_s - idle_before.t_s
    idle_delta = idle_after.gpu_used_mib - idle_before.gpu_used_mib
    gpu_growth = idle_delta / span * SEED_SOAK_S / total_mib if total_mib and span > 0 else 0.0
    under_load = slope([s.t_s for s in samples], [s.gpu_used_mib for s in samples]) * 60.0
    rss_growth = thirds_growth([s.rss_mib for s in samples]) or 0.0
    ok = sorted((r.end_s, r.e2e_s) for r in recs.records if r.ok)
    k = max(1, len(ok) // 3)
    first = sorted(e for _, e in ok[:k])
    last = sorted(e for _, e in ok[-k:])
    lat_growth = percentile(last, 50) / percentile(first, 50) - 1.0 if first and last else 0.0
    failed = sum(not r.ok for r in recs.records)
    passed = (
        gpu_growth <= cfg.max_gpu_memory_growth
        and rss_growth <= cfg.max_rss_growth
        and lat_growth <= cfg.max_latency_growth
        and failed == 0
    )
    soak = samples[-1].t_s - samples[0].t_s
    mode = (
        f"time-compressed soak: {soak:,.0f} fleet-s in {soak / ctx.fleet.time_scale:,.0f} wall s at time-scale "
        f"{ctx.fleet.time_scale:g}"
        if ctx.fleet.time_scale != 1.0
        else f"soak of {soak:,.0f} s"
    )
    evidence = (
        f"{mode}; {len(samples)} samples of {len(urls)} replicas; idle GPU memory {idle_before.gpu_used_mib:,.0f} -> "
        f"{idle_after.gpu_used_mib:,.0f} MiB of {total_mib:,.0f} (extrapolated to 8 h: {gpu_growth:+.1%}; "
        f"{under_load:+,.0f} MiB/min under load, KV cache included); "
        f"RSS {samples[0].rss_mib:,.0f} -> {samples[-1].rss_mib:,.0f} MiB ({rss_growth:+.1%}); "
        f"e2e p50 {lat_growth:+.1%}; {len(recs.records)} requests, {failed} failed"
    )
    return verdict(
        NAME,
        passed,
        f"GPU mem {gpu_growth:+.1%}/8 h, RSS {rss_growth:+.1%}, e2e {lat_growth:+.1%}",
        target,
        evidence,
        gpu_memory_growth_8h=gpu_growth,
        rss_growth=rss_growth,
        latency_growth=lat_growth,
        samples=[[s.t_s, s.gpu_used_mib, s.rss_mib] for s in samples],
    )
