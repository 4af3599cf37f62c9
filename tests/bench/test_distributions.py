from __future__ import annotations

import random
import statistics

import pytest

from llmfleet.bench.distributions import parse_length
from llmfleet.errors import ConfigError


def _draws(spec: str, n: int = 20000) -> list[int]:
    dist = parse_length(spec, "--input-tokens")
    rng = random.Random(7)
    return [dist.sample(rng) for _ in range(n)]


def test_fixed() -> None:
    assert set(_draws("200", 50)) == {200}


def test_uniform_is_inclusive_and_flat() -> None:
    d = _draws("uniform:100:300")
    assert min(d) == 100 and max(d) == 300
    assert statistics.mean(d) == pytest.approx(200, rel=0.02)


def test_normal_mean_and_std() -> None:
    d = _draws("normal:200:50")
    assert statistics.mean(d) == pytest.approx(200, rel=0.02)
    assert statistics.stdev(d) == pytest.approx(50, rel=0.05)


def test_lognormal_median_and_mean() -> None:
    spec = "lognormal:200:0.5"
    d = _draws(spec)
    assert statistics.median(d) == pytest.approx(200, rel=0.03)
    assert statistics.mean(d) == pytest.approx(parse_length(spec, "x").mean, rel=0.03)


def test_exponential_mean_and_clamp() -> None:
    d = _draws("exponential:50")
    assert statistics.mean(d) == pytest.approx(50, rel=0.05)
    assert min(d) >= 1


def test_same_seed_same_draws() -> None:
    assert _draws("normal:100:30", 100) == _draws("normal:100:30", 100)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "expected N, uniform"),
        ("0", "must be >= 1"),
        ("-5", "must be >= 1"),
        ("zipf:1:2", "unknown distribution 'zipf'"),
        ("uniform:100", "uniform takes 2 number(s)"),
        ("uniform:300:100", "LOW must be <= HIGH"),
        ("uniform:1.5:3", "whole numbers"),
        ("normal:200:x", "must be numbers"),
        ("normal:-1:5", "MEAN must be > 0"),
        ("lognormal:200:-1", "SIGMA must be >= 0"),
        ("exponential:0", "MEAN must be > 0"),
        ("normal:inf:1", "finite"),
    ],
)
def test_errors_name_the_option(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_length(spec, "--output-tokens")
    assert str(err.value).startswith(f"--output-tokens: {spec!r}")
    assert message in str(err.value)
