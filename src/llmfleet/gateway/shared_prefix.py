"""The prefix-affinity table shared by gateways through Redis, around the (synchronous, pure) routing policy.

Routing policies do no I/O (the simulator calls them on its own clock), so sharing happens around ``choose``:

* before routing, :meth:`SharedPrefixes.prefetch` reads from Redis (one ``MGET``) the block keys of the prompt
  that this gateway's own table does not remember, finds the deepest one another gateway recorded, and teaches the
  policy that this prefix lives on that replica (:meth:`PrefixSharing.learn`);
* as soon as the policy has chosen, every block key of the prompt -> the replica it was placed on is written in the
  background (one pipelined round trip, with a TTL): :meth:`SharedPrefixes.prefetch` schedules the write, and the
  task runs once the caller first waits, which is after the proxy chose (it routes before its first ``await``). So
  the placement is in Redis while the answer is generated: an agent loop or a client sends a conversation's next
  turn the moment the answer ends, on a new connection that may reach another gateway worker, and a write made only
  after the answer lost that race (measured: ``benchmarks/results/workers_routing.md``);
* after the answer, :meth:`SharedPrefixes.publish` writes the placement again only when it changed meanwhile (a
  retry on another replica) or was not known yet.

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
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis

from llmfleet.gateway.shared_state import SharedState, SharedStateUnavailable
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.views import ReplicaView

log = logging.getLogger(__name__)

ENTRY_TTL_S = 600.0
"""How long a published prefix placement lives in Redis (engines keep a prefix's KV blocks for minutes at most)."""

_EARLY_MEMORY = 4096
"""Placements written at routing time remembered until the answer's :meth:`SharedPrefixes.publish` (bounded: a
request that failed never calls it)."""


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
        self._early: OrderedDict[int, str] = OrderedDict()
        """Last block key of a prompt -> the replica written for it at routing time."""

    def _key(self, block: int) -> str:
        return self.shared.key("prefix", format(block, "x"))

    async def prefetch(self, request: RouteRequest) -> list[int]:
        """Teach the policy where other gateways sent the deepest part of this prompt it does not know, and schedule
        the write of where it is about to be routed (see the module docstring); returns the prompt's block keys
        (for :meth:`publish`)."""
        keys = self.policy.block_keys(request)
        await self._learn(request, keys)
        if keys:
            self._spawn(self._publish_routed(keys))
        return keys

    async def _learn(self, request: RouteRequest, keys: list[int]) -> None:
        local = self.policy.known_depth(keys)
        if local >= len(keys):
            return
        wanted = [self._key(k) for k in keys[local:]]

        async def call(r: aioredis.Redis) -> list[bytes | str | None]:
            return list(await r.mget(wanted))

        try:
            found = await self.shared.run("prefix_get", call)
        except SharedStateUnavailable:
            return
        for i in range(len(found) - 1, -1, -1):
            value = found[i]
            if value is not None:
                replica = value.decode() if isinstance(value, bytes) else value
                depth = local + i + 1
                if self.policy.learn(request.model, keys[:depth], replica, self.views(request.model)):
                    log.debug("shared prefix: %d/%d blocks on %s", depth, len(keys), replica)
                break

    async def _publish_routed(self, keys: list[int]) -> None:
        """The write scheduled by :meth:`prefetch`: runs after the policy chose (nothing when it has not yet)."""
        replica = self.policy.holder(keys)
        if replica is None:
            return
        self._early[keys[-1]] = replica
        self._early.move_to_end(keys[-1])
        while len(self._early) > _EARLY_MEMORY:
            self._early.popitem(last=False)
        await self._publish(keys, replica)

    def publish(self, keys: list[int]) -> None:
        """After the answer: write where the policy placed the prefix ``keys``, in the background (the answer does
        not wait), unless that placement was written when it was routed."""
        replica = self.policy.holder(keys)
        if replica is None or (keys and self._early.pop(keys[-1], None) == replica):
            return
        self._spawn(self._publish(keys, replica))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
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
