"""The local provider: replicas are processes that `llmfleet up` supervises.

New replicas join the gateway when they answer ``/health`` (the supervisor's listener does that). Removing one
drains it in the gateway first and waits until it has no request in flight (or the drain timeout), so scale-down
drops nothing.
"""

from __future__ import annotations

import asyncio
import logging

from llmfleet.clock import Clock
from llmfleet.fleet.rollout import retire
from llmfleet.fleet.supervisor import ManagedReplica, ProcState, Supervisor
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.providers.base import ReplicaInfo

log = logging.getLogger(__name__)


class LocalProvider:
    def __init__(
        self,
        supervisor: Supervisor,
        admin: GatewayAdminClient,
        clock: Clock,
        allocate_port: PortAllocator,
        drain_timeout_s: float = 60.0,
    ) -> None:
        self.supervisor = supervisor
        self.admin = admin
        self.clock = clock
        self.allocate_port = allocate_port
        self.drain_timeout_s = drain_timeout_s
        self._removing: set[int] = set()

    def _active(self) -> list[ManagedReplica]:
        return [r for r in self.supervisor.replicas if r.index not in self._removing]

    async def current_replicas(self) -> int:
        return len(self._active())

    async def list_replicas(self) -> list[ReplicaInfo]:
        return [ReplicaInfo(r.id, r.url, r.state == ProcState.READY, r.pool, r.capacity_type) for r in self._active()]

    async def scale_to(self, replicas: int, reason: str) -> None:
        active = self._active()
        if replicas > len(active):
            for _ in range(replicas - len(active)):
                self.supervisor.add(self.allocate_port())
        elif replicas < len(active):
            # Newest first: they hold the least warm prefix cache.
            victims = sorted(active, key=lambda r: r.index, reverse=True)[: len(active) - replicas]
            for v in victims:
                self._removing.add(v.index)
            await asyncio.gather(*(self._drain_and_remove(v) for v in victims))

    async def _drain_and_remove(self, r: ManagedReplica) -> None:
        try:
            await retire(self.admin, self.supervisor, [r], self.clock, self.drain_timeout_s)
        except asyncio.CancelledError:
            # Interrupted (`up` stops the autoscaler while its gateway restarts): the replica stays, so a restarted
            # gateway gets it back serving rather than drained for good.
            r.draining = r not in self.supervisor.replicas
            raise
        finally:
            self._removing.discard(r.index)


class PortAllocator:
    """Callable returning a free local port (a class so it can be swapped in tests)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host

    def __call__(self) -> int:
        from llmfleet.appthread import free_port

        return free_port(self.host)
