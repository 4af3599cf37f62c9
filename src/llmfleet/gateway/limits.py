"""Per-key rate limits: requests per minute and tokens per minute, as token buckets.

Each limited key has up to two buckets that hold one minute's allowance and refill continuously (``limit / 60`` per
second): ``rpm`` costs 1 per request, ``tpm`` costs the request's prompt tokens plus its ``max_tokens`` when it is
admitted (a reservation), and the difference to the real usage is settled when the response ends
(:meth:`Limiter.settle`: refunds what was not used, charges what was used beyond). A request is admitted only when
both buckets can pay; otherwise it gets the time after which they could (``Retry-After``).

Two stores hold the buckets. :class:`LocalLimitStore` lives in the process, on the injected clock.
:class:`RedisLimitStore` keeps them in Redis and does check-and-take for both buckets in one Lua script (atomic on
the server, timed by the server's clock), so several gateways sharing a Redis admit exactly one allowance in total.
:class:`Limiter` uses Redis when configured and up and the local store otherwise (each gateway then enforces the
full limit on its own, which over-admits by the number of gateways while Redis is down: availability first).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from llmfleet.clock import Clock
from llmfleet.gateway.shared_state import SharedState, SharedStateUnavailable

WINDOW_S = 60.0
"""A bucket holds this many seconds of allowance (the limits are per minute)."""

LimitName = Literal["rpm", "tpm"]


@dataclass(frozen=True)
class KeyLimits:
    """One key's limits (None: unlimited)."""

    rpm: int | None = None
    tpm: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go now; if not, which limit refused it and when to retry."""

    allowed: bool
    retry_after_s: float = 0.0
    limit: LimitName | None = None
    too_large: bool = False
    """The request alone costs more than the limit's whole allowance: retrying will never help."""


_ALLOWED = Verdict(True)
"""The verdict of every unlimited key (frozen: shared, not built per request)."""


def refill(level: float, updated: float, now: float, capacity: int) -> float:
    """A bucket's level at ``now`` after refilling at ``capacity / WINDOW_S`` per second since ``updated``."""
    return min(float(capacity), level + max(0.0, now - updated) * capacity / WINDOW_S)


def decide(levels: dict[LimitName, float], caps: dict[LimitName, int], costs: dict[LimitName, int]) -> Verdict:
    """The admission rule, pure: every bucket must hold its cost; otherwise the longest wait wins."""
    worst: LimitName | None = None
    wait = 0.0
    for name, cap in caps.items():
        cost = costs[name]
        if cost > cap:
            return Verdict(False, WINDOW_S, name, too_large=True)
        if cost > levels[name]:
            w = (cost - levels[name]) * WINDOW_S / cap
            if w > wait:
                worst, wait = name, w
    if worst is not None:
        return Verdict(False, wait, worst)
    return Verdict(True)


def _caps(limits: KeyLimits) -> dict[LimitName, int]:
    caps: dict[LimitName, int] = {}
    if limits.rpm is not None:
        caps["rpm"] = limits.rpm
    if limits.tpm is not None:
        caps["tpm"] = limits.tpm
    return caps


class LocalLimitStore:
    """Buckets in this process, on the injected clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, LimitName], tuple[float, float]] = {}

    def _level(self, key: str, name: LimitName, cap: int, now: float) -> float:
        b = self._buckets.get((key, name))
        return float(cap) if b is None else refill(b[0], b[1], now, cap)

    def acquire(self, key: str, limits: KeyLimits, tokens: int) -> Verdict:
        """Take one request and ``tokens`` from ``key``'s buckets if both can pay."""
        now = self.clock.now()
        caps = _caps(limits)
        levels = {n: self._level(key, n, c, now) for n, c in caps.items()}
        verdict = decide(levels, caps, {"rpm": 1, "tpm": tokens})
        if verdict.allowed:
            cost = {"rpm": 1, "tpm": tokens}
            for n in caps:
                self._buckets[(key, n)] = (levels[n] - cost[n], now)
        return verdict

    def adjust_tokens(self, key: str, limits: KeyLimits, delta: int) -> None:
        """Give back ``delta`` tokens (negative: charge more) to ``key``'s tpm bucket."""
        if limits.tpm is None or delta == 0:
            return
        now = self.clock.now()
        level = self._level(key, "tpm", limits.tpm, now)
        self._buckets[(key, "tpm")] = (min(float(limits.tpm), level + delta), now)


# KEYS: rpm bucket, tpm bucket. ARGV: rpm cap, tpm cap (0: unlimited), tokens, window seconds.
# Returns {allowed (1/0/-1 too large), wait in ms, which bucket (1 rpm, 2 tpm, 0 none)}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[4])
local caps = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local costs = {1, tonumber(ARGV[3])}
local levels = {}
local wait, which = 0, 0
for i = 1, 2 do
  local cap = caps[i]
  if cap > 0 then
    if costs[i] > cap then return {-1, math.ceil(window * 1000), i} end
    local v = redis.call('HMGET', KEYS[i], 'level', 'ts')
    local level = tonumber(v[1])
    if level == nil then
      level = cap
    else
      level = math.min(cap, level + math.max(0, now - tonumber(v[2])) * cap / window)
    end
    levels[i] = level
    if costs[i] > level then
      local w = (costs[i] - level) * window / cap
      if w > wait then wait, which = w, i end
    end
  end
end
if which > 0 then return {0, math.ceil(wait * 1000), which} end
for i = 1, 2 do
  if caps[i] > 0 then
    redis.call('HSET', KEYS[i], 'level', string.format('%.6f', levels[i] - costs[i]), 'ts', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil(window * 1000) + 1000)
  end
end
return {1, 0, 0}
"""

# KEYS: tpm bucket. ARGV: cap, delta, window seconds.
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, delta, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(v[1])
if level == nil then
  level = cap
else
  level = math.min(cap, level + math.max(0, now - tonumber(v[2])) * cap / window)
end
level = math.min(cap, level + delta)
redis.call('HSET', KEYS[1], 'level', string.format('%.6f', level), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return 1
"""

_WHICH: dict[int, LimitName] = {1: "rpm", 2: "tpm"}


class RedisLimitStore:
    """Buckets in Redis: one atomic Lua script per admission, so gateways sharing the Redis share the limits."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        self._acquire = shared.client.register_script(_ACQUIRE)
        self._adjust = shared.client.register_script(_ADJUST)

    def _keys(self, key: str) -> list[str]:
        return [self.shared.key("limit", "rpm", key), self.shared.key("limit", "tpm", key)]

    async def acquire(self, key: str, limits: KeyLimits, tokens: int) -> Verdict:
        """As :meth:`LocalLimitStore.acquire`; raises :class:`SharedStateUnavailable` when Redis is down."""
        args = [limits.rpm or 0, limits.tpm or 0, tokens, WINDOW_S]

        async def call(_: aioredis.Redis) -> list[int]:
            return list(await self._acquire(keys=self._keys(key), args=args))

        code, wait_ms, which = (int(x) for x in await self.shared.run("limit_acquire", call))
        if code == 1:
            return Verdict(True)
        return Verdict(False, wait_ms / 1000.0, _WHICH.get(which), too_large=code == -1)

    async def adjust_tokens(self, key: str, limits: KeyLimits, delta: int) -> None:
        """As :meth:`LocalLimitStore.adjust_tokens`; raises :class:`SharedStateUnavailable` when Redis is down."""
        if limits.tpm is None or delta == 0:
            return
        args = [limits.tpm, delta, WINDOW_S]

        async def call(_: aioredis.Redis) -> object:
            return await self._adjust(keys=self._keys(key)[1:], args=args)

        await self.shared.run("limit_adjust", call)


@dataclass
class Reservation:
    """What an admitted request took from its key's buckets, to settle when it ends."""

    key: str
    limits: KeyLimits
    reserved_tokens: int
    store: Literal["local", "redis", "none"]
    settled: bool = False


class Limiter:
    """Admission by per-key limits over Redis when available, else over local buckets."""

    def __init__(self, local: LocalLimitStore, shared: RedisLimitStore | None = None) -> None:
        self.local = local
        self.shared = shared

    async def acquire(self, key: str, limits: KeyLimits, tokens: int) -> tuple[Verdict, Reservation]:
        """Admit one request of ``key`` reserving ``tokens``; the reservation is settled by :meth:`settle`."""
        if limits.unlimited:
            return _ALLOWED, Reservation(key, limits, tokens, "none")
        if self.shared is not None:
            try:
                verdict = await self.shared.acquire(key, limits, tokens)
                return verdict, Reservation(key, limits, tokens, "redis")
            except SharedStateUnavailable:
                pass
        return self.local.acquire(key, limits, tokens), Reservation(key, limits, tokens, "local")

    async def settle(self, reservation: Reservation, used_tokens: int | None) -> None:
        """Settle ``reservation`` with the tokens really used (None: unknown, keep the reservation)."""
        if reservation.settled or used_tokens is None:
            return
        reservation.settled = True
        delta = reservation.reserved_tokens - used_tokens
        if reservation.store == "local":
            self.local.adjust_tokens(reservation.key, reservation.limits, delta)
        elif reservation.store == "redis" and self.shared is not None:
            # Redis down: the reservation stands (conservative; the bucket refills within a minute).
            with contextlib.suppress(SharedStateUnavailable):
                await self.shared.adjust_tokens(reservation.key, reservation.limits, delta)
