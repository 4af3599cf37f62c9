"""Arrival processes for open-loop load: when each request is sent, as offsets in seconds from the start.

* ``constant`` — exactly ``1/rate`` apart;
* ``poisson`` — exponential gaps with mean ``1/rate``;
* ``gamma`` — gamma-distributed gaps with mean ``1/rate`` and shape ``burstiness`` (as ``vllm bench serve``):
  ``burstiness < 1`` is burstier than Poisson (clumps and lulls), ``1`` is Poisson, ``> 1`` is smoother.

Every process draws from the caller's ``random.Random``, so a seed fixes the schedule.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from llmfleet.errors import ConfigError

ARRIVALS = ("constant", "poisson", "gamma")


def check_arrivals(kind: str, rate_per_s: float, burstiness: float) -> None:
    """Raise :class:`ConfigError` naming the option when the process cannot be built."""
    if kind not in ARRIVALS:
        raise ConfigError(f"--arrivals: {kind!r} is not one of {', '.join(ARRIVALS)}")
    if not rate_per_s > 0:
        raise ConfigError(f"--rate: {rate_per_s:g} must be > 0 requests/s")
    if not burstiness > 0:
        raise ConfigError(f"--burstiness: {burstiness:g} must be > 0")


def interarrival_gaps_s(kind: str, rate_per_s: float, burstiness: float, rng: random.Random) -> Iterator[float]:
    """Endless gaps between consecutive arrivals, in seconds."""
    check_arrivals(kind, rate_per_s, burstiness)
    mean_s = 1.0 / rate_per_s
    if kind == "constant":
        while True:
            yield mean_s
    elif kind == "poisson":
        while True:
            yield rng.expovariate(rate_per_s)
    else:
        scale = mean_s / burstiness
        while True:
            yield rng.gammavariate(burstiness, scale)


def arrival_offsets_s(kind: str, rate_per_s: float, burstiness: float, rng: random.Random) -> Iterator[float]:
    """Endless send times in seconds from the start; the first request goes at 0."""
    t = 0.0
    for gap in interarrival_gaps_s(kind, rate_per_s, burstiness, rng):
        yield t
        t += gap
