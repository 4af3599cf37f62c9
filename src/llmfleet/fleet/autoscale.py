"""The autoscaler of `llmfleet up`: the controller over the local provider, fed by the gateway's signals."""

from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.pipeline import Decision
from llmfleet.autoscaling.policies import PolicyFn, model_based
from llmfleet.autoscaling.sources import GatewaySignalSource
from llmfleet.clock import ScaledClock
from llmfleet.fleet.local_provider import LocalProvider, PortAllocator
from llmfleet.fleet.options import UpOptions
from llmfleet.fleet.supervisor import Supervisor
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.perfmodel import PerfModel, load_catalog


def build_autoscaler(
    opts: UpOptions,
    sup: Supervisor,
    admin: GatewayAdminClient,
    session: aiohttp.ClientSession,
    gateway_url: str,
    registry: CollectorRegistry,
) -> tuple[Controller, LocalProvider] | None:
    """The controller (on a clock ``time_scale`` times faster than wall time) and its provider; None if disabled.

    Decisions are published to the gateway so `llmfleet status` shows them; metrics go to ``registry`` (served by
    the control API).
    """
    cfg = opts.autoscaler
    if not cfg.enabled:
        return None
    provider = LocalProvider(sup, admin, ScaledClock(opts.time_scale), PortAllocator(opts.host), cfg.drain_timeout_s)
    source = GatewaySignalSource(admin, session, gateway_url, opts.time_scale)

    async def publish(decision: Decision) -> None:
        await admin.publish_autoscaler(decision.to_json())

    extra: dict[str, PolicyFn] = {}
    if opts.engine == "sim":  # the performance model knows the simulated GPU; real GPUs need a plan
        catalog = load_catalog()
        sim = opts.sim
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
    )
    return controller, provider
