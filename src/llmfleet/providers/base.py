"""The provider interface the controller (and rollouts) drive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReplicaInfo:
    id: str
    url: str
    ready: bool
    pool: str = "default"
    capacity_type: str = "on-demand"
    """on-demand, spot or reserved."""


class Provider(Protocol):
    """Current replicas, scale to N, list replicas with their addresses."""

    async def current_replicas(self) -> int: ...

    async def scale_to(self, replicas: int, reason: str) -> None: ...

    async def list_replicas(self) -> list[ReplicaInfo]: ...
