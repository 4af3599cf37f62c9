"""Reading Prometheus text exposition for the autoscaler: totals over label sets, histogram windows, quantiles.

Counters only grow, so the controller's signals are *differences* between two scrapes: requests in the interval,
latency sum and count in the interval, and the histogram's bucket counts in the interval, from which a quantile is
interpolated the way PromQL's ``histogram_quantile`` does. A counter that went down was reset (the process
restarted): the new value is then the whole difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from llmfleet.errors import LLMFleetError

LabelFilter = Callable[[Mapping[str, str]], bool]


class MetricsParseError(LLMFleetError):
    """A /metrics page that is not valid Prometheus text."""


@dataclass(frozen=True)
class Scrape:
    """All samples of one /metrics page as (sample name, labels, value)."""

    samples: tuple[tuple[str, Mapping[str, str], float], ...]

    def total(self, name: str, where: LabelFilter | None = None) -> float | None:
        """Sum of sample ``name`` over its label sets (those ``where`` accepts); None when there is none."""
        values = [v for n, labels, v in self.samples if n == name and (where is None or where(labels))]
        return sum(values) if values else None

    def buckets(self, histogram: str) -> dict[float, float]:
        """Cumulative bucket counts of ``histogram`` (its base name) summed over label sets, by upper bound."""
        out: dict[float, float] = {}
        for n, labels, v in self.samples:
            if n == f"{histogram}_bucket" and "le" in labels:
                le = float(labels["le"])
                out[le] = out.get(le, 0.0) + v
        return out


def parse(text: str) -> Scrape:
    """Parse Prometheus text exposition (raises :class:`MetricsParseError`)."""
    try:
        samples = tuple(
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        )
    except (ValueError, IndexError, KeyError) as exc:
        raise MetricsParseError(f"invalid Prometheus text: {exc}") from None
    return Scrape(samples)


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram's running totals: sum, count and cumulative buckets."""

    sum: float = 0.0
    count: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, scrape: Scrape, histogram: str) -> HistogramTotals:
        return cls(
            scrape.total(f"{histogram}_sum") or 0.0,
            scrape.total(f"{histogram}_count") or 0.0,
            scrape.buckets(histogram),
        )

    def __add__(self, other: HistogramTotals) -> HistogramTotals:
        keys = set(self.buckets) | set(other.buckets)
        merged = {k: self.buckets.get(k, 0.0) + other.buckets.get(k, 0.0) for k in keys}
        return HistogramTotals(self.sum + other.sum, self.count + other.count, merged)

    def since(self, prev: HistogramTotals | None) -> HistogramTotals:
        """What was observed between ``prev`` and now (all of it after a reset)."""
        if prev is None or self.count < prev.count:
            return self
        buckets = {k: max(0.0, v - prev.buckets.get(k, 0.0)) for k, v in self.buckets.items()}
        return HistogramTotals(self.sum - prev.sum, self.count - prev.count, buckets)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) by linear interpolation inside the bucket that holds it, like PromQL.

        Observations above the largest finite bound report that bound; None when nothing was observed."""
        bounds = sorted(self.buckets)
        if not bounds or self.count <= 0:
            return None
        total = self.buckets[bounds[-1]] if math.isinf(bounds[-1]) else self.count
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for le in bounds:
            count = self.buckets[le]
            if count >= rank:
                if math.isinf(le):
                    return lower_bound
                if count == lower_count:
                    return le
                return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = le, count
        return lower_bound


def counter_since(now: float | None, prev: float | None) -> float:
    """Increase of a counter between two scrapes of the same source: all of ``now`` after a reset or when the counter
    first appeared (labelled counters are created on first use); 0 when it is gone."""
    if now is None:
        return 0.0
    return now if prev is None or now < prev else now - prev
