"""Simulated traffic: seeded request streams (diurnal cycle, bursts, heavy-tailed lengths, shared prefixes,
multi-turn sessions) and trace replay, all as :class:`SimRequest` in arrival order.

A workload SPEC is a comma-separated list of preset names and ``key=value`` settings, applied left to right::

    day,rate=200                   # a diurnal cycle with bursts, 200 requests/s on average
    rate=50,input=lognormal:800:1,output=lognormal:150:1,prefixes=16,prefix_tokens=1000
    rate=5,turns=6,think=20s       # multi-turn chats: each turn is sent `think` after the previous one finished

Keys: ``rate`` (mean requests/s; for multi-turn, new sessions/s), ``arrivals`` (poisson, gamma, constant) and
``burstiness`` (gamma shape), ``input``/``output`` (token lengths: N, uniform:LO:HI, normal:MEAN:STD,
lognormal:MEDIAN:SIGMA, exponential:MEAN, as ``llmfleet bench``), ``diurnal`` (amplitude 0..1 of a daily cosine),
``period`` and ``peak`` (durations, default 24h and 14h), ``burst`` (``EVERY:LENGTH:FACTOR``, e.g. ``2h:5m:3``:
every 2 h, 5 min at 3x the rate), ``prefixes`` and ``prefix_tokens`` (requests open with one of N shared prefixes
of that many tokens), ``turns`` and ``think`` (multi-turn sessions). Presets: ``steady``, ``diurnal``, ``bursty``,
``day`` (diurnal + bursts), ``chat`` (heavy-tailed lengths), ``shared-prefix``, ``multiturn``.
Every error names ``--workload`` and the key.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

from llmfleet.bench.arrivals import ARRIVALS
from llmfleet.bench.distributions import LengthDistribution, parse_length
from llmfleet.bench.traces import load_trace
from llmfleet.errors import ConfigError
from llmfleet.simulator.units import parse_duration_s


@dataclass(slots=True)
class SimRequest:
    """One request of the simulated traffic."""

    index: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    prefix_id: str | None = None
    prefix_tokens: int = 0
    session_id: str | None = None
    turn: int = 0
    turns_left: int = 0
    """Further turns of this session after this one (multi-turn workloads)."""


_FIXED_512 = LengthDistribution("fixed", 512)
_FIXED_128 = LengthDistribution("fixed", 128)


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed SPEC (see the module docstring)."""

    rate: float = 10.0
    arrivals: str = "poisson"
    burstiness: float = 1.0
    input: LengthDistribution = _FIXED_512
    output: LengthDistribution = _FIXED_128
    diurnal: float = 0.0
    period_s: float = 86400.0
    peak_s: float = 14 * 3600.0
    burst_every_s: float = 0.0
    burst_length_s: float = 0.0
    burst_factor: float = 1.0
    prefixes: int = 0
    prefix_tokens: int = 0
    turns: int = 1
    think_s: float = 10.0

    def rate_at(self, t: float) -> float:
        """Arrival rate (requests/s) at time ``t``."""
        r = self.rate
        if self.diurnal:
            r *= 1.0 + self.diurnal * math.cos(2 * math.pi * (t - self.peak_s) / self.period_s)
        if self.burst_every_s and (t % self.burst_every_s) >= self.burst_every_s - self.burst_length_s:
            r *= self.burst_factor
        return r


PRESETS: dict[str, dict[str, str]] = {
    "steady": {},
    "diurnal": {"diurnal": "0.6"},
    "bursty": {"burst": "30m:3m:3", "arrivals": "gamma", "burstiness": "0.5"},
    "day": {"diurnal": "0.6", "burst": "2h:5m:3"},
    "chat": {"input": "lognormal:600:1.0", "output": "lognormal:150:0.9"},
    "shared-prefix": {"prefixes": "8", "prefix_tokens": "1024"},
    "multiturn": {"turns": "6", "think": "15s", "input": "lognormal:150:0.8", "output": "lognormal:150:0.8"},
}


def parse_workload(spec: str, option: str = "--workload") -> WorkloadSpec:
    """Parse a SPEC; errors name ``option`` and the key."""
    values: dict[str, str] = {}
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        if "=" not in part:
            preset = PRESETS.get(part)
            if preset is None:
                raise ConfigError(f"{option}: unknown preset {part!r} (presets: {', '.join(PRESETS)}; or key=value)")
            values.update(preset)
            continue
        key, value = (x.strip() for x in part.split("=", 1))
        values[key] = value
    out = WorkloadSpec()
    known = {"rate", "arrivals", "burstiness", "input", "output", "diurnal", "period", "peak", "burst"}
    known |= {"prefixes", "prefix_tokens", "turns", "think"}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{option}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        out = _apply(out, key, value, f"{option}: {key}")
    return out


def _number(value: str, where: str, minimum: float, maximum: float = math.inf) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not (minimum <= x <= maximum) or not math.isfinite(x):
        raise ConfigError(f"{where}: {value!r} must be between {minimum:g} and {maximum:g}")
    return x


def _apply(out: WorkloadSpec, key: str, value: str, where: str) -> WorkloadSpec:
    if key == "rate":
        rate = _number(value, where, 0.0)
        if rate <= 0:
            raise ConfigError(f"{where}: {value!r} must be > 0 requests/s")
        return replace(out, rate=rate)
    if key == "arrivals":
        if value not in ARRIVALS:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(ARRIVALS)}")
        return replace(out, arrivals=value)
    if key == "burstiness":
        b = _number(value, where, 1e-3)
        return replace(out, burstiness=b)
    if key == "input":
        return replace(out, input=parse_length(value, where))
    if key == "output":
        return replace(out, output=parse_length(value, where))
    if key == "diurnal":
        return replace(out, diurnal=_number(value, where, 0.0, 1.0))
    if key == "period":
        return replace(out, period_s=parse_duration_s(value, where))
    if key == "peak":
        return replace(out, peak_s=parse_duration_s(value, where, allow_zero=True))
    if key == "burst":
        bits = value.split(":")
        if len(bits) != 3:
            raise ConfigError(f"{where}: {value!r} must be EVERY:LENGTH:FACTOR, e.g. 2h:5m:3")
        every, length = parse_duration_s(bits[0], where), parse_duration_s(bits[1], where)
        if length > every:
            raise ConfigError(f"{where}: LENGTH {bits[1]!r} must not exceed EVERY {bits[0]!r}")
        return replace(out, burst_every_s=every, burst_length_s=length, burst_factor=_number(bits[2], where, 1.0))
    if key == "prefixes":
        return replace(out, prefixes=int(_number(value, where, 0, 1e9)))
    if key == "prefix_tokens":
        return replace(out, prefix_tokens=int(_number(value, where, 0, 1e9)))
    if key == "turns":
        return replace(out, turns=max(1, int(_number(value, where, 1, 1e6))))
    return replace(out, think_s=parse_duration_s(value, where, allow_zero=True))


class Workload:
    """Requests of a :class:`WorkloadSpec` until ``duration_s`` (or ``max_requests``), drawn from ``rng``."""

    def __init__(
        self, spec: WorkloadSpec, rng: random.Random, duration_s: float, max_requests: int | None = None
    ) -> None:
        self.spec = spec
        self.rng = rng
        self.duration_s = duration_s
        self.max_requests = max_requests
        self._next_index = 0

    def _new_index(self) -> int:
        i = self._next_index
        self._next_index += 1
        return i

    def _gaps(self) -> Iterator[float]:
        """Unit-rate gaps (mean 1) of the arrival process; divided by the rate at the current time."""
        spec, rng = self.spec, self.rng
        if spec.arrivals == "constant":
            while True:
                yield 1.0
        elif spec.arrivals == "poisson":
            while True:
                yield rng.expovariate(1.0)
        else:
            scale = 1.0 / spec.burstiness
            while True:
                yield rng.gammavariate(spec.burstiness, scale)

    def arrivals(self) -> Iterator[SimRequest]:
        """First requests (and first turns of sessions), in arrival order."""
        spec, rng = self.spec, self.rng
        # Hoisted out of the loop (a million-request run draws here a million times); same draws, same order.
        sample_in, sample_out = spec.input.sample, spec.output.sample
        prefixes = spec.prefixes if spec.prefix_tokens else 0
        turns = spec.turns
        fixed_rate = None if spec.diurnal or spec.burst_every_s else max(spec.rate, 1e-9)
        duration_s = self.duration_s
        limit = self.max_requests if self.max_requests is not None else math.inf
        t = 0.0
        for n, gap in enumerate(self._gaps()):
            if t >= duration_s or n >= limit:
                return
            n_in, n_out = sample_in(rng), sample_out(rng)
            pid, ptok = None, 0
            if prefixes:
                pid, ptok = f"p{rng.randrange(prefixes)}", spec.prefix_tokens
            index = self._next_index
            self._next_index = index + 1
            sid = f"s{index}" if turns > 1 else None
            yield SimRequest(index, t, ptok + n_in, n_out, pid, ptok, sid, 0, turns - 1)
            t += gap / (fixed_rate if fixed_rate is not None else max(spec.rate_at(t), 1e-9))

    def follow_up(self, previous: SimRequest, finished_s: float) -> SimRequest | None:
        """The next turn of ``previous``'s session, sent a think time after it finished; None when it was the last
        (or the run is over). Its prompt holds the whole conversation so far plus a new user message."""
        if previous.turns_left <= 0 or (self.max_requests is not None and self._next_index >= self.max_requests):
            return None
        at = finished_s + self.rng.expovariate(1.0 / self.spec.think_s) if self.spec.think_s else finished_s
        if at >= self.duration_s:
            return None
        n_in = previous.input_tokens + previous.output_tokens + self.spec.input.sample(self.rng)
        return SimRequest(
            self._new_index(),
            at,
            n_in,
            self.spec.output.sample(self.rng),
            previous.prefix_id,
            previous.prefix_tokens,
            previous.session_id,
            previous.turn + 1,
            previous.turns_left - 1,
        )


class TraceWorkload:
    """Replay of a trace file (``llmfleet bench``'s JSON Lines format) at its timestamps; sessions' turns are sent
    at their own timestamps (open loop)."""

    def __init__(self, path: Path, duration_s: float | None = None, max_requests: int | None = None) -> None:
        rows = load_trace(path)
        self.requests = [
            SimRequest(
                r.index, r.at_s or 0.0, r.input_tokens, r.output_tokens, r.prefix_id, r.prefix_tokens, r.session_id
            )
            for r in rows
            if duration_s is None or (r.at_s or 0.0) < duration_s
        ][:max_requests]
        self.duration_s = duration_s if duration_s is not None else max((r.arrival_s for r in self.requests), default=0)

    def arrivals(self) -> Iterator[SimRequest]:
        return iter(self.requests)

    def follow_up(self, previous: SimRequest, finished_s: float) -> SimRequest | None:
        return None


def spec_summary(spec: WorkloadSpec) -> dict[str, object]:
    """The spec as JSON (for results)."""
    return {f.name: str(getattr(spec, f.name)) for f in fields(spec)}
