"""The one reader of Prometheus text exposition in llmfleet, on ``prometheus_client``'s own parser.

Everything that reads a ``/metrics`` page — the gateway's prober (engine load), the autoscaler's signal sources
(rates, means, quantiles), tests of the simulated engine — parses it here into a :class:`Scrape` and asks it for
totals over label sets, means, or a histogram's buckets.

Counters only grow, so rates are *differences* between two scrapes: requests in the interval, a histogram's sum,
count and bucket counts in the interval, from which a quantile is interpolated the way PromQL's
``histogram_quantile`` does. A counter that went down was reset (the process restarted): the new value is then the
whole difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from llmfleet.errors import LLMFleetError

LabelFilter = Callable[[Mapping[str, str]], bool]
"""Accepts or rejects one sample by its labels, e.g. ``lambda labels: labels["status"].startswith("5")``."""


class MetricsParseError(LLMFleetError):
    """A /metrics page that is not valid Prometheus text."""


class Sample(NamedTuple):
    """One sample line: its full name (``x_total``, ``x_bucket``...), labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """All samples of one /metrics page, looked up by sample name.

    Samples whose value is NaN are left out of every aggregate (an exporter's way of saying "unknown").
    """

    samples: tuple[Sample, ...]
    _by_name: Mapping[str, tuple[Sample, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Sample]] = {}
        for s in self.samples:
            index.setdefault(s.name, []).append(s)
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in index.items()})

    def names(self) -> frozenset[str]:
        """The sample names present on the page."""
        return frozenset(self._by_name)

    def values(self, name: str, where: LabelFilter | None = None) -> list[float]:
        """Values of sample ``name`` over its label sets (those ``where`` accepts), NaNs left out."""
        return [
            s.value
            for s in self._by_name.get(name, ())
            if not math.isnan(s.value) and (where is None or where(s.labels))
        ]

    def total(self, name: str, where: LabelFilter | None = None) -> float | None:
        """Sum of sample ``name`` over its label sets (those ``where`` accepts); None when there is none."""
        values = self.values(name, where)
        return sum(values) if values else None

    def mean(self, name: str, where: LabelFilter | None = None) -> float | None:
        """Mean of sample ``name`` over its label sets, e.g. a per-engine fraction; None when there is none."""
        values = self.values(name, where)
        return sum(values) / len(values) if values else None

    def counter(self, family: str, where: LabelFilter | None = None) -> float | None:
        """Total of a counter family (its ``<family>_total`` samples); None when there is none."""
        return self.total(f"{family}_total", where)

    def buckets(self, histogram: str, where: LabelFilter | None = None) -> dict[float, float]:
        """Cumulative bucket counts of ``histogram`` (its base name) summed over label sets, by upper bound."""
        out: dict[float, float] = {}
        for s in self._by_name.get(f"{histogram}_bucket", ()):
            if "le" not in s.labels or math.isnan(s.value) or (where is not None and not where(s.labels)):
                continue
            try:
                le = float(s.labels["le"])
            except ValueError:
                raise MetricsParseError(f"{histogram}_bucket: invalid le={s.labels['le']!r}") from None
            out[le] = out.get(le, 0.0) + s.value
        return out


def parse(text: str | bytes, only: Collection[str] | None = None) -> Scrape:
    """Parse Prometheus text exposition (raises :class:`MetricsParseError` naming what is wrong).

    ``only``: keep just the samples with these names, and parse nothing else. ``prometheus_client``'s parser costs
    ~15 us per line in Python (a vLLM page of ~600 lines: ~9 ms, on the event loop of a gateway that reads every
    replica's page every few seconds); the lines of other samples are dropped first by a bytes prefix test (~0.2 ms).
    """
    if only is not None:
        text = _select(text.encode() if isinstance(text, str) else text, only)
    try:
        page = text.decode() if isinstance(text, bytes) else text
        samples = tuple(
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(page)
            for s in family.samples
        )
    except (ValueError, IndexError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise MetricsParseError(f"invalid Prometheus text: {exc}") from None
    return Scrape(samples)


def _select(raw: bytes, names: Collection[str]) -> bytes:
    """The sample lines of ``raw`` whose name is one of ``names`` (comments and every other sample dropped)."""
    wanted = {n.encode() for n in names}
    prefixes = tuple(wanted)
    kept = []
    for line in raw.split(b"\n"):
        if line.startswith(prefixes):
            end = len(line)
            for sep in (b"{", b" ", b"\t"):
                i = line.find(sep)
                if 0 <= i < end:
                    end = i
            if line[:end] in wanted:
                kept.append(line)
    return b"\n".join(kept) + b"\n"


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram's running totals: sum, count and cumulative buckets."""

    sum: float = 0.0
    count: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, scrape: Scrape, histogram: str, where: LabelFilter | None = None) -> HistogramTotals:
        """The totals of ``histogram`` (its base name) on one page, summed over label sets."""
        return cls(
            scrape.total(f"{histogram}_sum", where) or 0.0,
            scrape.total(f"{histogram}_count", where) or 0.0,
            scrape.buckets(histogram, where),
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
        """Mean observation; None when nothing was observed."""
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
