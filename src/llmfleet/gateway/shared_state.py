"""The Redis connection several gateways share (limits, response cache, prefix affinity), and what happens without it.

Every Redis operation goes through :meth:`SharedState.run`. When Redis fails (refused, timed out, reset) the call
raises :class:`SharedStateUnavailable` at once and the caller falls back to its local state; the gateway never fails
a request because Redis is down. After a failure Redis is left alone for ``retry_interval_s`` (injected clock), so a
dead Redis costs one timeout per interval, not one per request; then a single probing call tries it again. The
availability is the gauge ``llmfleet_gateway_shared_state_up``; each transition is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from llmfleet.clock import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")


class SharedStateUnavailable(Exception):
    """Redis cannot be used right now; use local state."""


class SharedStateMetrics:
    """Availability and fallbacks of the shared state, on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "llmfleet_gateway_shared_state_up",
            "1 while the shared state (Redis) answers; 0 while the gateway runs on local state.",
            registry=registry,
        )
        self.errors = Counter(
            "llmfleet_gateway_shared_state_errors",
            "Redis operations that failed, by operation.",
            ["op"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "llmfleet_gateway_shared_state_fallbacks",
            "Operations served from local state because Redis was unavailable, by operation.",
            ["op"],
            registry=registry,
        )


class SharedState:
    """One Redis client for the gateway's shared state, with the fallback rule described in the module docstring."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        registry: CollectorRegistry,
        *,
        timeout_s: float = 0.25,
        retry_interval_s: float = 2.0,
        key_prefix: str = "llmfleet:",
    ) -> None:
        self.url = url
        self.clock = clock
        self.retry_interval_s = retry_interval_s
        self.prefix = key_prefix
        self.metrics = SharedStateMetrics(registry)
        # No client-side retries: a failed call falls back at once and the circuit below decides when to try again.
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._up = True
        self._down_until = float("-inf")
        self._probing = False
        self.metrics.up.set(1)

    @property
    def up(self) -> bool:
        """Whether the last Redis call succeeded."""
        return self._up

    def key(self, *parts: str) -> str:
        """A Redis key under this fleet's prefix."""
        return self.prefix + ":".join(parts)

    async def run(self, op: str, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``call(client)``, or :class:`SharedStateUnavailable` (counted as a fallback of ``op``) when Redis is down
        or the call fails."""
        if not self._up:
            if self._probing or self.clock.now() < self._down_until:
                self.metrics.fallbacks.labels(op).inc()
                raise SharedStateUnavailable(op)
            self._probing = True
        try:
            result = await call(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self._mark_down(op, exc)
            raise SharedStateUnavailable(op) from None
        finally:
            self._probing = False
        if not self._up:
            self._up = True
            self.metrics.up.set(1)
            log.warning("shared state: Redis at %s is back; limits, cache and affinity are shared again", self.url)
        return result

    def _mark_down(self, op: str, exc: BaseException) -> None:
        self.metrics.errors.labels(op).inc()
        self.metrics.fallbacks.labels(op).inc()
        self._down_until = self.clock.now() + self.retry_interval_s
        if self._up:
            self._up = False
            self.metrics.up.set(0)
            log.warning(
                "shared state: Redis at %s failed (%s: %s); serving with local state (limits per gateway, local "
                "cache) and retrying every %.1f s",
                self.url,
                type(exc).__name__,
                exc,
                self.retry_interval_s,
            )

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
