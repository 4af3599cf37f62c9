"""Durations on the command line: ``90``, ``90s``, ``15m``, ``2h``, ``1d`` (seconds when no unit is given)."""

from __future__ import annotations

import math

from llmfleet.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str, option: str, allow_zero: bool = False) -> float:
    """Seconds in ``text``; errors name ``option``."""
    s = text.strip().lower()
    scale = 1.0
    if s and s[-1] in _UNITS:
        scale = _UNITS[s[-1]]
        s = s[:-1]
    try:
        value = float(s) * scale
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a duration (e.g. 90s, 15m, 2h, 1d)") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{option}: {text!r} must be a duration > 0")
    return value
