"""The prefix-affinity table shared by gateways through Redis, around the (synchronous, pure) routing policy.

Routing policies do no I/O (the simulator calls them on its own clock), so sharing happens around ``choose``:

* before routing, :meth:`SharedPrefixes.prefetch` reads from Redis (one ``MGET``) the block keys of the prompt
  that this gateway's own table does not remember, finds the deepest one another gateway recorded, and teaches the
  policy that this prefix lives on that replica (:meth:`PrefixSharing.learn`);
* after an answer the fleet generated, :meth:`SharedPrefixes.publish` writes, in the background (one pipelined
  round trip), every block key of the prompt -> the replica the policy placed it on, with a TTL.

Replicas are named by their id, which is their normalized URL: the same replica has the same id in every gateway
that was given the same URL (a replica this gateway does not route to is ignored). The generation numbers that make
a policy forget a replica's previous life stay local. Redis down: the policy works on its local table alone, and
nothing fails (:class:`~llmfleet.gateway.shared_state.SharedState`'s fallback rule). The table in Redis is bounded by
the TTL; the block keys are CRC-32 chains seeded with the model name, so entries never mix models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

from llmfleet.gateway.shared_state import SharedState, SharedStateUnavailable
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.views import ReplicaView

log = logging.getLogger(__name__)

ENTRY_TTL_S = 600.0
"""How long a published prefix placement lives in Redis (engines keep a prefix's KV blocks for minutes at most)."""


@runtime_checkable
class PrefixSharing(Protocol):
    """What a routing policy offers for its prefix table to be shared
    (:class:`~llmfleet.routing.prefix_affinity.PrefixAffinityPolicy`)."""

    def block_keys(self, request: RouteRequest) -> list[int]: ...

    def known_depth(self, keys: Sequence[int]) -> int: ...

    def learn(self, model: str, keys: Sequence[int], replica_id: str, replicas: Sequence[ReplicaView]) -> bool: ...

    def holder(self, keys: Sequence[int]) -> str | None: ...


class SharedPrefixes:
    """Prefetch and publish of prefix placements through Redis; see the module docstring."""

    def __init__(
        self,
        shared: SharedState,
        policy: PrefixSharing,
        views: Callable[[str], Sequence[ReplicaView]],
        ttl_s: float = ENTRY_TTL_S,
    ) -> None:
        self.shared = shared
        self.policy = policy
        self.views = views
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, block: int) -> str:
        return self.shared.key("prefix", format(block, "x"))

    async def prefetch(self, request: RouteRequest) -> list[int]:
        """Teach the policy where other gateways sent the deepest part of this prompt it does not know; returns the
        prompt's block keys (for :meth:`publish`)."""
        keys = self.policy.block_keys(request)
        local = self.policy.known_depth(keys)
        if local >= len(keys):
            return keys
        wanted = [self._key(k) for k in keys[local:]]

        async def call(r: aioredis.Redis) -> list[bytes | str | None]:
            return list(await r.mget(wanted))

        try:
            found = await self.shared.run("prefix_get", call)
        except SharedStateUnavailable:
            return keys
        for i in range(len(found) - 1, -1, -1):
            value = found[i]
            if value is not None:
                replica = value.decode() if isinstance(value, bytes) else value
                depth = local + i + 1
                if self.policy.learn(request.model, keys[:depth], replica, self.views(request.model)):
                    log.debug("shared prefix: %d/%d blocks on %s", depth, len(keys), replica)
                break
        return keys

    def publish(self, keys: list[int]) -> None:
        """Write where the policy placed the prefix ``keys``, in the background (the answer does not wait)."""
        replica = self.policy.holder(keys)
        if replica is None:
            return
        task = asyncio.get_running_loop().create_task(self._publish(keys, replica))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, keys: list[int], replica: str) -> None:
        async def call(r: aioredis.Redis) -> object:
            pipe = r.pipeline(transaction=False)
            for k in keys:
                pipe.set(self._key(k), replica, px=self.ttl_ms)
            return await pipe.execute()

        with contextlib.suppress(SharedStateUnavailable):
            await self.shared.run("prefix_put", call)

    async def close(self) -> None:
        """Finish the publishes still under way."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
