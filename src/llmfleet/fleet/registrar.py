"""Replicas join the gateway when they are ready and leave it when they go: the supervisor's listener in `up`.

Each registration carries the replica's stable name (its metrics label in the gateway), weight, pool, capacity type,
and the GPU type and count the registrar was given (the gateway prices the fleet from them).

The registrar also remembers which replicas it registered, so a gateway that `up` restarted after a crash gets every
ready replica back (same pool and weight; draining ones draining) with :meth:`GatewayRegistrar.reregister`. While
the gateway is down a registration fails quietly: the re-registration after its restart brings the replica in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from llmfleet.fleet.supervisor import ManagedReplica
from llmfleet.gateway.admin_client import AdminError, GatewayAdminClient

log = logging.getLogger(__name__)


class GatewayRegistrar:
    """Supervisor listener that adds ready replicas to the gateway (with their pool) and removes gone ones."""

    def __init__(self, admin: GatewayAdminClient, gpu: str | None = None, gpus: int = 1) -> None:
        """``gpu`` (catalog name) and ``gpus`` (tensor parallel size) of every replica, for the gateway's cost
        metrics; without ``gpu`` the gateway cannot price the fleet."""
        self.admin = admin
        self.gpu = gpu
        self.gpus = gpus
        self._ready: dict[str, ManagedReplica] = {}
        # One registration change at a time: a re-registration sweep must not re-add a replica that is leaving.
        self._lock = asyncio.Lock()
        self._closed = False

    def close(self) -> None:
        """The fleet is stopping and its gateway with it: no more admin calls (replicas still leave the ledger)."""
        self._closed = True

    @property
    def registered(self) -> list[ManagedReplica]:
        """The replicas the gateway should have now (ready ones, in the order they became ready)."""
        return list(self._ready.values())

    async def replica_ready(self, replica: ManagedReplica) -> None:
        async with self._lock:
            self._ready[replica.url] = replica
            if self._closed:
                return
            try:
                await self._register(replica)
            except (AdminError, TimeoutError) as exc:
                log.warning("replica %s not registered yet (%s); added when the gateway answers", replica.url, exc)

    async def replica_gone(self, replica: ManagedReplica) -> None:
        async with self._lock:
            if self._ready.get(replica.url) is replica:
                del self._ready[replica.url]
            if self._closed:
                return
            with contextlib.suppress(AdminError, TimeoutError):  # gone from a gateway that is down: nothing to do
                await self.admin.remove_replica(replica.url)

    async def reregister(self) -> int:
        """Register every ready replica again (a fresh gateway knows none); returns how many it registered.

        :class:`AdminError` (or :class:`TimeoutError`) if the gateway refuses one or does not answer: the caller
        treats the gateway as not back yet.
        """
        async with self._lock:
            for replica in self._ready.values():
                await self._register(replica)
            return len(self._ready)

    async def _register(self, replica: ManagedReplica) -> None:
        await self.admin.add_replica(
            replica.url,
            replica.pool,
            replica.weight,
            name=replica.name or None,
            gpu=self.gpu,
            gpus=self.gpus if self.gpu else None,
            capacity_type=replica.capacity_type,
        )
        if replica.draining:
            await self.admin.drain_replica(replica.url)
