"""Replicas join the gateway when they are ready and leave it when they go: the supervisor's listener in `up`."""

from __future__ import annotations

import contextlib

from llmfleet.fleet.supervisor import ManagedReplica
from llmfleet.gateway.admin_client import AdminError, GatewayAdminClient


class GatewayRegistrar:
    """Supervisor listener that adds ready replicas to the gateway (with their pool) and removes gone ones."""

    def __init__(self, admin: GatewayAdminClient) -> None:
        self.admin = admin

    async def replica_ready(self, replica: ManagedReplica) -> None:
        await self.admin.add_replica(replica.url, replica.pool)

    async def replica_gone(self, replica: ManagedReplica) -> None:
        with contextlib.suppress(AdminError):
            await self.admin.remove_replica(replica.url)
