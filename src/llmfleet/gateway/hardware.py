"""What a replica runs on (GPU, count, capacity type), for the gateway's cost metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmfleet.errors import CatalogError, InvalidRequestError
from llmfleet.perfmodel import Catalog

CAPACITY_TYPES = ("on-demand", "spot", "reserved")
"""Capacity types a replica may be registered with (which catalog price applies)."""


@dataclass(frozen=True)
class Hardware:
    """What a replica runs on, for the gateway's cost metrics (given at registration; unknown by default)."""

    gpu: str | None = None
    """GPU catalog name (``H100``...); None: unknown, the replica is not billed."""
    gpus: int = 1
    """GPUs per replica (tensor parallel size)."""
    capacity_type: str = "on-demand"
    """``on-demand``, ``spot`` or ``reserved``: which catalog price applies."""

    @classmethod
    def from_admin_body(cls, body: dict[str, Any], catalog: Catalog) -> Hardware | None:
        """The optional ``gpu``, ``gpus`` and ``capacity_type`` of a ``POST /admin/replicas`` body (None when none
        is given); a bad one is an :class:`InvalidRequestError` naming the field."""
        if not {"gpu", "gpus", "capacity_type"} & body.keys():
            return None
        gpu, gpus, capacity = body.get("gpu"), body.get("gpus", 1), body.get("capacity_type", "on-demand")
        if gpu is not None:
            if not isinstance(gpu, str):
                raise InvalidRequestError("`gpu` must be a GPU name from the catalog (a string)", param="gpu")
            try:
                gpu = catalog.gpu(gpu).name
            except CatalogError as exc:
                raise InvalidRequestError(f"`gpu`: {exc}", param="gpu") from None
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= 1024:
            raise InvalidRequestError("`gpus` must be an integer from 1 to 1024 (GPUs per replica)", param="gpus")
        if capacity not in CAPACITY_TYPES:
            kinds = ", ".join(CAPACITY_TYPES)
            raise InvalidRequestError(f"`capacity_type` must be one of {kinds}", param="capacity_type")
        return cls(gpu, gpus, capacity)
