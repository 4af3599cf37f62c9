from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from llmfleet.bench.arrivals import arrival_offsets_s, interarrival_gaps_s
from llmfleet.errors import ConfigError

N = 20000


def _gaps(kind: str, rate: float, burstiness: float = 1.0, seed: int = 3) -> list[float]:
    return list(itertools.islice(interarrival_gaps_s(kind, rate, burstiness, random.Random(seed)), N))


def test_constant_is_exact() -> None:
    assert set(_gaps("constant", 4.0)[:100]) == {0.25}


def test_offsets_start_at_zero_and_accumulate() -> None:
    offsets = list(itertools.islice(arrival_offsets_s("constant", 2.0, 1.0, random.Random(0)), 4))
    assert offsets == [0.0, 0.5, 1.0, 1.5]


def test_poisson_mean_and_cv() -> None:
    g = _gaps("poisson", 10.0)
    assert statistics.mean(g) == pytest.approx(0.1, rel=0.03)
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_keeps_the_rate_and_sets_the_burstiness(burstiness: float) -> None:
    g = _gaps("gamma", 10.0, burstiness)
    assert statistics.mean(g) == pytest.approx(0.1, rel=0.05)
    # Coefficient of variation of a gamma(shape k) is 1/sqrt(k).
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(1 / math.sqrt(burstiness), rel=0.07)


def test_poisson_counts_per_window() -> None:
    # Arrivals in 1 s windows of a rate-20 Poisson process: mean 20 and variance 20.
    offsets = list(itertools.takewhile(lambda t: t < 2000, arrival_offsets_s("poisson", 20.0, 1.0, random.Random(1))))
    counts = [0] * 2000
    for t in offsets:
        counts[int(t)] += 1
    assert statistics.mean(counts) == pytest.approx(20, rel=0.03)
    assert statistics.variance(counts) == pytest.approx(20, rel=0.1)


def test_seeded() -> None:
    assert _gaps("gamma", 5.0, 0.5, seed=9)[:50] == _gaps("gamma", 5.0, 0.5, seed=9)[:50]
    assert _gaps("poisson", 5.0, seed=1)[:50] != _gaps("poisson", 5.0, seed=2)[:50]


@pytest.mark.parametrize(
    ("kind", "rate", "burstiness", "option"),
    [("weibull", 1.0, 1.0, "--arrivals"), ("poisson", 0.0, 1.0, "--rate"), ("gamma", 1.0, 0.0, "--burstiness")],
)
def test_errors_name_the_option(kind: str, rate: float, burstiness: float, option: str) -> None:
    with pytest.raises(ConfigError, match=f"^{option}"):
        next(interarrival_gaps_s(kind, rate, burstiness, random.Random(0)))
