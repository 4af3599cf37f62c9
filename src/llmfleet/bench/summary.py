"""Metrics of a run: latency percentiles, throughput, goodput under SLOs, errors by kind, and a timeline.

Percentiles interpolate linearly between order statistics (as ``numpy.percentile`` and ``vllm bench serve``).
Latencies are reported in milliseconds: TTFT (first output text), ITL (gaps between chunks with text), TPOT
((e2e - TTFT) / (output tokens - 1), output tokens from the server's ``usage``), e2e.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llmfleet.bench.records import RequestRecord, RunRecords
from llmfleet.bench.spec import Slo

CPU_BOTTLENECK_FRACTION = 0.85
"""Above this share of one core the client itself may be what limits the run."""
LAG_WARNING_MS = 25.0
"""Open loop: a p99 send lag above this means the client fell behind its schedule."""
STATS = ("mean", "p50", "p90", "p99")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of already sorted values; nan when empty."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def stats_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """``{mean, p50, p90, p99}`` in milliseconds of values in seconds; ``None`` each when there are none."""
    if not values_s:
        return dict.fromkeys(STATS)
    s = sorted(v * 1000.0 for v in values_s)
    return {
        "mean": sum(s) / len(s),
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
    }


def nice_bucket_s(span_s: float, buckets: int = 50) -> float:
    """A round bucket width (0.1, 0.2, 0.5, 1, 2, 5... s) giving about ``buckets`` buckets over ``span_s``."""
    raw = max(span_s / buckets, 0.1)
    mag = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if raw <= step * mag:
            return float(step * mag)
    return float(10 * mag)


def meets_slo(rec: RequestRecord, slo: Slo) -> bool:
    """Whether a completed request met every objective set."""
    if not rec.ok:
        return False
    ttft, tpot = rec.ttft_s, rec.tpot_s
    if slo.ttft_ms is not None and (ttft is None or ttft * 1000 > slo.ttft_ms):
        return False
    if slo.tpot_ms is not None and tpot is not None and tpot * 1000 > slo.tpot_ms:
        return False
    return not (slo.e2e_ms is not None and rec.e2e_s * 1000 > slo.e2e_ms)


def timeline(run: RunRecords, bucket_s: float) -> list[dict[str, Any]]:
    """Per bucket of completion time: completions, failures, output tokens, TTFT and e2e percentiles."""
    n = max(1, math.ceil(max(run.end_s - run.start_s, 1e-9) / bucket_s))
    rows: list[list[RequestRecord]] = [[] for _ in range(n)]
    for rec in run.records:
        rows[min(n - 1, max(0, int((rec.end_s - run.start_s) / bucket_s)))].append(rec)
    out = []
    for i, recs in enumerate(rows):
        ok = [r for r in recs if r.ok]
        ttft = sorted((r.ttft_s or 0.0) * 1000 for r in ok)
        e2e = sorted(r.e2e_s * 1000 for r in ok)
        out.append(
            {
                "t_s": round(i * bucket_s, 6),
                "completed": len(ok),
                "failed": len(recs) - len(ok),
                "output_tokens": sum(r.output_tokens for r in ok),
                "ttft_p50_ms": percentile(ttft, 50) if ttft else None,
                "ttft_p99_ms": percentile(ttft, 99) if ttft else None,
                "e2e_p50_ms": percentile(e2e, 50) if e2e else None,
                "e2e_p99_ms": percentile(e2e, 99) if e2e else None,
            }
        )
    return out


def summarize(run: RunRecords, slo: Slo) -> dict[str, Any]:
    """The result of one run as a JSON-ready dict (the ``--out`` schema, one entry per sweep point)."""
    ok = [r for r in run.records if r.ok]
    failed = [r for r in run.records if not r.ok]
    duration_s = max(run.end_s - run.start_s, 1e-9)
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.input_tokens for r in ok)
    good = [r for r in ok if meets_slo(r, slo)]
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}
    for r in failed:
        kind = r.error or "unknown"
        errors[kind] = errors.get(kind, 0) + 1
        examples.setdefault(kind, r.error_detail)
    lag = stats_ms([r.lag_s for r in run.records])
    load = run.load
    summary: dict[str, Any] = {
        "load": {
            "mode": load.mode,
            "label": load.label(),
            "concurrency": load.concurrency,
            "rate_per_s": load.rate_per_s,
            "arrivals": load.arrivals if load.mode == "open" else None,
            "burstiness": load.burstiness if load.mode == "open" else None,
        },
        "completed": len(ok),
        "failed": len(failed),
        "duration_s": duration_s,
        "requests_per_s": len(ok) / duration_s,
        "output_tokens_per_s": out_tokens / duration_s,
        "input_tokens_per_s": in_tokens / duration_s,
        "total_output_tokens": out_tokens,
        "total_input_tokens": in_tokens,
        "ttft_ms": stats_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_ms": stats_ms([gap for r in ok for gap in r.itl_s]),
        "tpot_ms": stats_ms([t for r in ok if (t := r.tpot_s) is not None]),
        "e2e_ms": stats_ms([r.e2e_s for r in ok]),
        "goodput": {
            "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "e2e_ms": slo.e2e_ms},
            "requests": len(good),
            "requests_per_s": len(good) / duration_s,
            "fraction": len(good) / len(run.records) if run.records else 0.0,
        },
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "error_examples": examples,
        "schedule_lag_ms": lag,
        "client": {
            "cpu_s": run.client_cpu_s,
            "wall_s": run.wall_s,
            "cpu_fraction": run.client_cpu_fraction,
        },
        "usage_reported_fraction": sum(r.usage_reported for r in ok) / len(ok) if ok else 0.0,
    }
    summary["warnings"] = warnings(summary)
    # About 30 buckets, but wide enough for ~5 requests each so that percentiles per bucket mean something.
    summary["timeline"] = timeline(run, nice_bucket_s(duration_s, min(30, max(5, len(run.records) // 5))))
    return summary


def warnings(summary: dict[str, Any]) -> list[str]:
    """Reasons to distrust a run's figures: a saturated client, a client behind schedule, no server usage."""
    out = []
    cpu = summary["client"]["cpu_fraction"]
    if cpu >= CPU_BOTTLENECK_FRACTION:
        out.append(
            f"the client used {cpu:.0%} of a CPU core: it may be the bottleneck (run several clients or lower the load)"
        )
    lag_p99 = summary["schedule_lag_ms"]["p99"]
    if summary["load"]["mode"] != "closed" and lag_p99 is not None and lag_p99 > LAG_WARNING_MS:
        out.append(f"requests left up to {lag_p99:.0f} ms (p99) behind schedule: the client could not keep the rate")
    if summary["completed"] and summary["usage_reported_fraction"] < 1.0:
        out.append("the server sent no usage for some requests: their output tokens were counted as chunks")
    return out
