"""Token-length distributions for ``--input-tokens`` / ``--output-tokens``: a fixed count or a seeded distribution.

Spellings (all counts in tokens; every draw is rounded and clamped to at least 1):

* ``200`` — always 200;
* ``uniform:LOW:HIGH`` — integers from LOW to HIGH inclusive;
* ``normal:MEAN:STD`` — Gaussian;
* ``lognormal:MEDIAN:SIGMA`` — log-normal with that median and shape ``sigma`` (the long tail of real chat traffic);
* ``exponential:MEAN``.

Bad spellings raise :class:`~llmfleet.errors.ConfigError` naming the option, e.g.
``--input-tokens: 'uniform:300:100': LOW must be <= HIGH``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from llmfleet.errors import ConfigError

_ARITY = {"uniform": 2, "normal": 2, "lognormal": 2, "exponential": 1}
_FORMS = "N, uniform:LOW:HIGH, normal:MEAN:STD, lognormal:MEDIAN:SIGMA or exponential:MEAN"


@dataclass(frozen=True)
class LengthDistribution:
    """A distribution of token counts; :meth:`sample` draws from the caller's ``random.Random``."""

    kind: str
    """``fixed``, ``uniform``, ``normal``, ``lognormal`` or ``exponential``."""
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> int:
        """One token count (>= 1)."""
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        elif self.kind == "normal":
            value = rng.gauss(self.a, self.b)
        elif self.kind == "lognormal":
            value = rng.lognormvariate(math.log(self.a), self.b)
        else:
            value = rng.expovariate(1.0 / self.a)
        return max(1, round(value))

    @property
    def mean(self) -> float:
        """Expected value before rounding and clamping (for sizing prompts and reports)."""
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b**2 / 2)
        return self.a

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        if self.kind == "exponential":
            return f"exponential:{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


def parse_length(spec: str, option: str) -> LengthDistribution:
    """Parse one spelling (see the module docstring); errors name ``option``."""
    text = spec.strip()
    bad = f"{option}: {spec!r}"
    if ":" not in text:
        try:
            n = int(text)
        except ValueError:
            raise ConfigError(f"{bad}: expected {_FORMS}") from None
        if n < 1:
            raise ConfigError(f"{bad}: a token count must be >= 1")
        return LengthDistribution("fixed", float(n))
    kind, *raw = text.split(":")
    kind = kind.lower()
    if kind not in _ARITY:
        raise ConfigError(f"{bad}: unknown distribution {kind!r}; expected {_FORMS}")
    if len(raw) != _ARITY[kind]:
        raise ConfigError(f"{bad}: {kind} takes {_ARITY[kind]} number(s); expected {_FORMS}")
    try:
        nums = [float(x) for x in raw]
    except ValueError:
        raise ConfigError(f"{bad}: parameters must be numbers") from None
    if any(not math.isfinite(x) for x in nums):
        raise ConfigError(f"{bad}: parameters must be finite")
    if kind == "uniform":
        low, high = nums
        if low < 1 or low != int(low) or high != int(high):
            raise ConfigError(f"{bad}: LOW and HIGH must be whole numbers >= 1")
        if low > high:
            raise ConfigError(f"{bad}: LOW must be <= HIGH")
        return LengthDistribution(kind, low, high)
    if kind == "exponential":
        if nums[0] <= 0:
            raise ConfigError(f"{bad}: MEAN must be > 0")
        return LengthDistribution(kind, nums[0])
    first, second = nums
    names = ("MEAN", "STD") if kind == "normal" else ("MEDIAN", "SIGMA")
    if first <= 0:
        raise ConfigError(f"{bad}: {names[0]} must be > 0")
    if second < 0:
        raise ConfigError(f"{bad}: {names[1]} must be >= 0")
    return LengthDistribution(kind, first, second)
