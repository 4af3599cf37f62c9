"""What the gateway knows of LoRA adapters: which base model each one adapts, and where it is resident.

A replica lists its adapters in ``/v1/models``; vLLM gives each adapter's base model as ``parent`` (the gateway's
own ``/v1/models`` repeats it). Which adapters are *in use* comes from vLLM's ``vllm:lora_requests_info`` gauge:
one series per combination of ``running_lora_adapters`` / ``waiting_lora_adapters`` (comma-separated names) and
``max_lora`` (adapter slots) ever seen, each set to the time it was last current, so the series with the largest
value is the engine's state now (an idle engine's is the empty one).

:func:`prefer_resident` turns that into a routing preference without touching the policies: among the replicas
that list the requested adapter, the ones running it already (its weights are in a slot; no swap, no wait for a
slot to free) stay healthy and the others are offered as degraded — the policies' last resort, as for panic
routing — as long as a resident replica is no busier than the others. Fleet admission counts degraded replicas
as capacity, so the preference never turns a request away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from llmfleet.promtext import Scrape
from llmfleet.routing.views import ReplicaState, ReplicaView

LORA_REQUESTS_INFO = "vllm:lora_requests_info"
"""vLLM's gauge of the adapters of running and waiting requests (labels ``running_lora_adapters``,
``waiting_lora_adapters``, ``max_lora``; value: when that label set was last current, in seconds)."""


@dataclass(frozen=True)
class LoraActivity:
    """The adapters one replica is working with, from its latest ``vllm:lora_requests_info`` series."""

    running: frozenset[str] = frozenset()
    """Adapters of requests in the running batch: resident in one of the engine's adapter slots."""
    waiting: frozenset[str] = frozenset()
    """Adapters of queued requests."""
    max_loras: int | None = None
    """Adapter slots (``--max-loras``); None when the page does not say."""

    @property
    def slots_full(self) -> bool:
        """Every slot holds a running adapter: a request for another one waits for a slot to free."""
        return self.max_loras is not None and len(self.running) >= self.max_loras


def _names(value: str | None) -> frozenset[str]:
    return frozenset(n for n in (value or "").split(",") if n)


def read_lora_activity(page: Scrape) -> LoraActivity | None:
    """The replica's current adapter activity (None when the page has no ``vllm:lora_requests_info``: LoRA is
    off, or the engine does not export it)."""
    samples = [s for s in page.samples if s.name == LORA_REQUESTS_INFO]
    if not samples:
        return None
    latest = max(samples, key=lambda s: s.value)
    slots = latest.labels.get("max_lora", "")
    return LoraActivity(
        running=_names(latest.labels.get("running_lora_adapters")),
        waiting=_names(latest.labels.get("waiting_lora_adapters")),
        max_loras=int(slots) if slots.isdigit() else None,
    )


def prefer_resident(
    model: str, views: Sequence[ReplicaView], activity: Mapping[str, LoraActivity | None]
) -> list[ReplicaView]:
    """``views`` (the replicas listing ``model``) with the healthy ones that would have to swap the adapter in
    offered as degraded, when a better healthy replica exists that is not queueing.

    Better means running ``model`` already; when none is, having a free adapter slot beats having every slot
    taken by other adapters. Nothing changes for a base model (never in an adapter list), when the replicas are
    all alike, or when no better replica is both free of queued requests and at most as busy (the gateway's
    requests in flight) as the least busy other one: residency breaks ties, it does not build hot spots (the
    order of Kubernetes' inference gateway: low queue first, then adapter affinity).
    ``activity`` maps replica ids to their scraped :class:`LoraActivity`; a replica without one (None or absent:
    not scraped yet, or its engine does not export the gauge) is left as it is.
    """
    healthy = [v for v in views if v.state is ReplicaState.HEALTHY]
    known = {v.id: a for v in healthy if (a := activity.get(v.id)) is not None}
    better = {i for i, a in known.items() if model in a.running}
    if not better:
        full = {i for i, a in known.items() if a.slots_full}
        better = set(known) - full if full else set()
    worse = set(known) - better
    if not better or not worse:
        return list(views)
    least_busy_worse = min(v.in_flight for v in healthy if v.id in worse)
    if not any(v.in_flight <= least_busy_worse and not v.load.num_requests_waiting for v in healthy if v.id in better):
        return list(views)  # every better replica is busier, or queueing: spreading the load wins
    return [replace(v, state=ReplicaState.DEGRADED) if v.id in worse else v for v in views]
