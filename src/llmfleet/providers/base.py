"""The provider interface the controller (and rollouts) drive: the actuator behind the autoscaler.

A provider knows how many replicas are wanted (``current_replicas``), changes that number (``scale_to``) and lists
the replicas that exist with their addresses (``list_replicas``). Implementations: :mod:`llmfleet.fleet.local_provider`
(processes ``llmfleet up`` supervises) and :mod:`llmfleet.providers.kubernetes` (a Deployment's scale subresource
and its Service's EndpointSlices). Failures to reach the backend are raised as :class:`ProviderError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from llmfleet.errors import LLMFleetError


class ProviderError(LLMFleetError):
    """The provider's backend refused or could not be reached; the message says which call and why."""


@dataclass(frozen=True)
class ReplicaInfo:
    """One replica as the provider sees it."""

    id: str
    """Stable identifier (the base URL unless the provider knows better)."""
    url: str
    """Base URL, e.g. ``http://10.0.0.7:8000``."""
    ready: bool
    """Whether the backend considers it ready for traffic (the gateway still runs its own health checks)."""
    pool: str = "default"
    capacity_type: str = "on-demand"
    """on-demand, spot or reserved."""


class Provider(Protocol):
    """Current replicas, scale to N, list replicas with their addresses."""

    async def current_replicas(self) -> int:
        """The replica count the backend is asked to run (desired, not necessarily ready)."""
        ...

    async def scale_to(self, replicas: int, reason: str) -> None:
        """Ask for ``replicas`` replicas; ``reason`` is the autoscaler's explanation, for logs and audit."""
        ...

    async def list_replicas(self) -> list[ReplicaInfo]:
        """The replicas that exist now, ready or not."""
        ...
