"""The autoscaler of `llmfleet up`: one controller per model over the local provider, fed by the gateway's signals.

In a multi-model fleet each model's controller reads that model's series only (the gateway's ``model`` label, the
engine load of the replicas serving it), its metrics are served with a ``model`` label (:class:`ModelLabelled`),
and the gateway is shown the last decision of every model (:class:`DecisionBoard`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.pipeline import Decision
from llmfleet.autoscaling.policies import PolicyFn, model_based
from llmfleet.autoscaling.sources import GatewaySignalSource
from llmfleet.clock import ScaledClock
from llmfleet.config import ModelSettings
from llmfleet.fleet.local_provider import LocalProvider, PortAllocator
from llmfleet.fleet.options import UpOptions
from llmfleet.fleet.supervisor import Supervisor
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.perfmodel import PerfModel, load_catalog

Publish = Callable[[Decision], Awaitable[None]]


def build_autoscaler(
    opts: UpOptions,
    model: ModelSettings,
    sup: Supervisor,
    admin: GatewayAdminClient,
    session: aiohttp.ClientSession,
    gateway_url: str,
    registry: CollectorRegistry,
    publish: Publish,
) -> tuple[Controller, LocalProvider] | None:
    """``model``'s controller (on a clock ``time_scale`` times faster than wall time) and its provider over ``sup``;
    None if its autoscaler is disabled.

    In a multi-model fleet (:attr:`UpOptions.multi_model`) the controller samples ``model``'s signals only.
    Decisions go to ``publish``; metrics to ``registry`` (served by the control API).
    """
    cfg = model.autoscaler
    if not cfg.enabled:
        return None
    provider = LocalProvider(sup, admin, ScaledClock(opts.time_scale), PortAllocator(opts.host), cfg.drain_timeout_s)
    only = model.name if opts.multi_model else None
    source = GatewaySignalSource(admin, session, gateway_url, opts.time_scale, model=only)
    extra: dict[str, PolicyFn] = {}
    if opts.engine == "sim":  # the performance model knows the simulated GPU; real GPUs need a plan
        catalog = load_catalog()
        sim = model.engine
        perf = PerfModel(
            catalog.gpu(sim.gpu),
            catalog.model(sim.model),
            precision=sim.precision,  # type: ignore[arg-type]
            tp=sim.tensor_parallel_size,
        )
        extra["model"] = model_based(perf, cfg.model_input_tokens, cfg.model_output_tokens)
    controller = Controller(
        source,
        provider,
        cfg,
        ScaledClock(opts.time_scale),
        extra_policies=extra,
        publish=publish,
        registry=registry,
        name=only or "",
    )
    return controller, provider


class DecisionBoard:
    """Publishes the controllers' decisions to the gateway (``POST /admin/autoscaler``) for `llmfleet status`.

    With one model a decision is published as it is. With several, each publication is the deciding model's
    decision (its ``reason`` prefixed with the model's name, ``model`` added) plus ``models``: the last decision of
    every model, so the status shows all of them.
    """

    def __init__(self, admin: GatewayAdminClient, multi_model: bool) -> None:
        self.admin = admin
        self.multi_model = multi_model
        self._last: dict[str, dict[str, Any]] = {}

    def publisher(self, model: str) -> Publish:
        """The ``publish`` callback of ``model``'s controller."""

        async def publish(decision: Decision) -> None:
            doc = decision.to_json()
            if self.multi_model:
                self._last[model] = doc
                doc = {**doc, "model": model, "reason": f"{model}: {doc['reason']}", "models": dict(self._last)}
            await self.admin.publish_autoscaler(doc)

        return publish


class ModelLabelled(Collector):
    """Several models' controller registries served as one, every sample labelled with its ``model``.

    Each controller registers the same metric names; Prometheus text allows a family once, so the families are
    merged here rather than registered twice.
    """

    def __init__(self) -> None:
        self._registries: dict[str, CollectorRegistry] = {}

    def registry_for(self, model: str) -> CollectorRegistry:
        """A fresh registry whose metrics are served with ``model="<model>"``."""
        registry = self._registries[model] = CollectorRegistry()
        return registry

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for model, registry in self._registries.items():
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                merged.samples.extend(s._replace(labels={**s.labels, "model": model}) for s in family.samples)
        return list(families.values())
