"""One simulation run from typed options: build the engine model, the fleet, the control plane and the workload on
one event loop, run it to the end, and return the results JSON. :func:`compare` runs several variants (routing or
autoscaling policies) over the same seeded workload."""

from __future__ import annotations

import itertools
import math
import operator
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from llmfleet.autoscaling.policies import PolicyFn, model_based
from llmfleet.config import FleetConfig, RoutingPolicyName
from llmfleet.errors import ConfigError
from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import PerfModel
from llmfleet.perfmodel.profile import load_profile
from llmfleet.simulator.control import Autoscaling, Prober, Scraper, SimProvider
from llmfleet.simulator.core import EventLoop, SimClock
from llmfleet.simulator.events import Disruption, Disruptor
from llmfleet.simulator.fleet import Fleet, ReplicaKind
from llmfleet.simulator.replica import EngineSpec
from llmfleet.simulator.results import Recorder, Slo
from llmfleet.simulator.stepcost import StepCost
from llmfleet.simulator.workload import SimRequest, TraceWorkload, Workload, WorkloadSpec, spec_summary

ROUTING_POLICIES: tuple[str, ...] = get_args(RoutingPolicyName)
"""Every policy ``--compare`` accepts: the ones the factory builds (defined once, in the config schema)."""
AUTOSCALING_POLICIES = ("threshold", "target_ratio", "queue", "model")
ENGINE_LOAD_POLICIES = frozenset({"load_aware", "cost_aware"})
Progress = Callable[[float, int], None]
"""Called now and then with (simulated seconds done, requests arrived)."""


@dataclass(frozen=True)
class SimOptions:
    """Everything one run needs; the CLI fills it from options and fleet.yaml."""

    config: FleetConfig
    replicas: int
    duration_s: float
    workload: WorkloadSpec | None = None
    trace: Path | None = None
    max_requests: int | None = None
    seed: int = 0
    cell_size: int | None = None
    autoscale: bool = False
    startup_s: float = 180.0
    regions: int = 1
    spot_fraction: float = 0.0
    spot_interruptions_per_hour: float = 0.0
    events: tuple[Disruption, ...] = ()
    slo: Slo = field(default_factory=Slo)
    label: str = ""
    probes: bool = True
    pools: tuple[PoolSpec, ...] = ()
    """Fixed pools of different GPUs (e.g. A100 for short outputs, H100 for long ones); empty: one pool of
    ``replicas`` on ``engine.gpu``. Route between them with the ``tiered`` policy (rules on ``max_tokens``)."""
    profile: Path | None = None
    """A calibrated performance profile (``llmfleet calibrate``): its model, efficiency and engine settings."""


@dataclass(frozen=True)
class PoolSpec:
    """One pool of a mixed fleet: ``replicas`` replicas named ``name`` on ``gpu`` (the engine section otherwise)."""

    name: str
    gpu: str
    replicas: int


def parse_pools(text: str, option: str = "--pools") -> tuple[PoolSpec, ...]:
    """``NAME=GPU:N,...`` (e.g. ``short=A100:6,long=H100:4``); errors name ``option`` and the item."""
    out: list[PoolSpec] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, eq, rest = item.partition("=")
        gpu, colon, n = rest.partition(":")
        if not eq or not colon or not name or not gpu:
            raise ConfigError(f"{option}: {item!r}: expected NAME=GPU:REPLICAS, e.g. short=A100:6")
        try:
            count = int(n)
        except ValueError:
            raise ConfigError(f"{option}: {item!r}: REPLICAS {n!r} must be a whole number") from None
        if count < 1:
            raise ConfigError(f"{option}: {item!r}: REPLICAS must be >= 1")
        out.append(PoolSpec(name, gpu, count))
    if len({p.name for p in out}) != len(out):
        raise ConfigError(f"{option}: pool names must be unique")
    return tuple(out)


def build_engine(
    config: FleetConfig, gpu: str | None = None, profile: Path | None = None
) -> tuple[PerfModel, EngineSpec]:
    """The performance model and engine settings from ``engine`` (catalog names are checked here), on ``gpu``
    when given, or from a calibrated ``profile`` (its GPU, model, efficiency and engine settings win)."""
    e = config.engine
    if profile is not None:
        prof = load_profile(profile)
        perf = prof.perf_model()
        pe = prof.engine
        kv = pe.kv_capacity_tokens or perf.kv_capacity_blocks(pe.gpu_memory_utilization, pe.block_size) * pe.block_size
        if kv < pe.block_size:
            raise ConfigError(f"--profile: {profile}: the profiled engine has no KV cache left")
        return perf, EngineSpec(kv, pe.max_num_seqs, pe.max_num_batched_tokens, pe.block_size,
                                pe.enable_prefix_caching or e.enable_prefix_caching)  # fmt: skip
    catalog = load_catalog()
    perf = PerfModel(
        catalog.gpu(gpu or e.gpu),
        catalog.model(e.model),
        precision=e.precision,  # type: ignore[arg-type]  # checked by the catalog when used, as the sim engine does
        tp=e.tensor_parallel_size,
    )
    blocks = e.num_gpu_blocks_override or perf.kv_capacity_blocks(e.gpu_memory_utilization, e.block_size)
    if blocks < 1:
        raise ConfigError(f"engine: {perf.model.name} does not fit on {perf.tp} x {perf.gpu.name}: no KV cache left")
    spec = EngineSpec(blocks * e.block_size, e.max_num_seqs, e.max_num_batched_tokens, e.block_size,
                      e.enable_prefix_caching)  # fmt: skip
    return perf, spec


_ARRIVAL_S = operator.attrgetter("arrival_s")


def _batched(items: Iterator[SimRequest], size: int) -> Iterator[SimRequest]:
    """``items``, drawn ``size`` at a time (the next batch is drawn when the last of the previous one is taken)."""
    while True:
        batch = list(itertools.islice(items, size))
        if not batch:
            return
        yield from batch


def run(opts: SimOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run one simulation and return its results (see :meth:`Recorder.to_json`)."""
    wall0 = time.perf_counter()
    cfg = opts.config
    perf, spec = build_engine(cfg, profile=opts.profile)
    cost = StepCost(perf)
    price = perf.gpu.price
    on_demand = ReplicaKind(spec, cost, perf.tp, price.on_demand_usd_per_hour)
    spot = replace(
        on_demand, spot=True, pool="spot", usd_per_gpu_hour=price.spot_usd_per_hour or price.on_demand_usd_per_hour
    )
    layout: list[ReplicaKind] = []
    """Mixed pools: the kind of the i-th replica is layout[i % len(layout)] (replacements keep the pool mix)."""
    for pool in opts.pools:
        p_perf, p_spec = build_engine(cfg, gpu=pool.gpu)
        layout += [ReplicaKind(p_spec, StepCost(p_perf), p_perf.tp, p_perf.gpu.price.on_demand_usd_per_hour,
                               pool=pool.name)] * pool.replicas  # fmt: skip
    rng = random.Random(opts.seed)
    clock = SimClock()
    loop = EventLoop(clock)
    workload: Workload | TraceWorkload
    if opts.trace is not None:
        workload = TraceWorkload(opts.trace, opts.duration_s if opts.duration_s != float("inf") else None,
                                 opts.max_requests)  # fmt: skip
        duration_s = min(opts.duration_s, workload.duration_s + 1e-6)
    else:
        duration_s = opts.duration_s
        workload = Workload(opts.workload or WorkloadSpec(), random.Random(rng.random()), duration_s,
                            opts.max_requests)  # fmt: skip
    timeline_step_s = max(1.0, duration_s / 400)
    rec = Recorder(opts.slo, timeline_step_s)
    fleet = Fleet(loop, cfg.routing, cfg.gateway, rec, random.Random(rng.random()), opts.cell_size, workload.follow_up)
    lost_regions: set[int] = set()

    def kind_for(i: int) -> tuple[ReplicaKind, int]:
        regions = [g for g in range(opts.regions) if g not in lost_regions] or [0]
        if layout:
            return layout[i % len(layout)], regions[i % len(regions)]
        is_spot = math.floor((i + 1) * opts.spot_fraction) > math.floor(i * opts.spot_fraction)  # spread evenly
        return (spot if is_spot else on_demand), regions[i % len(regions)]

    provider = SimProvider(fleet, kind_for, opts.startup_s, cfg.autoscaler.drain_timeout_s)
    initial = len(layout) if layout else opts.replicas
    if opts.autoscale:
        a = cfg.autoscaler
        initial = min(max(initial, a.min_replicas), a.max_replicas)
    provider.desired = initial
    provider.add(initial, startup_s=0.0)
    if opts.probes:
        Prober(fleet, cfg.gateway.health).start(loop)
    if cfg.routing.policy in ENGINE_LOAD_POLICIES:
        Scraper(fleet, cfg.gateway.health.scrape_interval_s).start(loop)
    if opts.autoscale:
        extra: dict[str, PolicyFn] = {}
        if "model" in cfg.autoscaler.policies:
            a = cfg.autoscaler
            extra["model"] = model_based(perf, a.model_input_tokens, a.model_output_tokens,
                                         cfg.engine.gpu_memory_utilization, cfg.engine.max_num_seqs)  # fmt: skip
        Autoscaling(fleet, provider, cfg.autoscaler, rec, extra).start(loop)
    Disruptor(fleet, random.Random(rng.random()), provider.reconcile, lost_regions,
              opts.spot_interruptions_per_hour).start(loop, list(opts.events))  # fmt: skip

    # Arrivals stream into the loop (no heap push and pop each), drawn from the workload 256 at a time: the
    # workload's rng also draws follow-up turns, so the batch size is part of what a seed reproduces.
    loop.merge(_batched(workload.arrivals(), 256), _ARRIVAL_S, fleet.arrive)

    def sample() -> None:
        rec.sample_fleet(clock.now())
        if progress is not None:
            progress(clock.now(), rec.arrivals)
        if clock.now() + timeline_step_s <= duration_s:
            loop.after(timeline_step_s, sample)

    loop.at(0.0, sample)
    loop.run(until=duration_s)
    # Drain: no new arrivals, but let requests in flight finish (bounded, so an overloaded fleet still ends).
    drain_until = duration_s + max(600.0, duration_s * 0.1)
    while fleet.in_flight > 0 and clock.now() < drain_until:
        loop.run(until=min(drain_until, clock.now() + 10.0))
    end = clock.now()
    rec.finish(end)
    extra_json = {
        "engine": {
            "gpu": perf.gpu.name,
            "model": perf.model.name,
            "tensor_parallel_size": perf.tp,
            "kv_capacity_tokens": spec.kv_capacity_tokens,
            "max_num_seqs": spec.max_num_seqs,
            "max_num_batched_tokens": spec.max_num_batched_tokens,
            "enable_prefix_caching": spec.enable_prefix_caching,
        },
        "routing_policy": cfg.routing.policy,
        "pools": [{"name": p.name, "gpu": p.gpu, "replicas": p.replicas} for p in opts.pools] or None,
        "profile": str(opts.profile) if opts.profile else None,
        "autoscaling": list(cfg.autoscaler.policies) if opts.autoscale else None,
        "initial_replicas": initial,
        "cell_size": opts.cell_size,
        "seed": opts.seed,
        "workload": {"trace": str(opts.trace)} if opts.trace else spec_summary(opts.workload or WorkloadSpec()),
        "events_processed": loop.processed,
    }
    return rec.to_json(opts.label or cfg.routing.policy, duration_s, time.perf_counter() - wall0, extra_json)


def variants(opts: SimOptions, names: list[str]) -> list[SimOptions]:
    """One :class:`SimOptions` per ``--compare`` name: a routing policy, or an autoscaling policy (which turns
    autoscaling on with that policy alone)."""
    out = []
    for name in names:
        if name in ROUTING_POLICIES:
            routing = opts.config.routing.model_copy(update={"policy": name})
            out.append(replace(opts, config=opts.config.model_copy(update={"routing": routing}), label=name))
        elif name in AUTOSCALING_POLICIES:
            auto = opts.config.autoscaler.model_copy(update={"policies": [name]})
            out.append(
                replace(opts, config=opts.config.model_copy(update={"autoscaler": auto}), autoscale=True, label=name)
            )
        else:
            raise ConfigError(
                f"--compare: {name!r} is neither a routing policy ({', '.join(ROUTING_POLICIES)}) nor an autoscaling "
                f"policy ({', '.join(AUTOSCALING_POLICIES)})"
            )
    return out


def compare(opts: SimOptions, names: list[str], progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run every variant of :func:`variants` with the same seed and workload."""
    return [run(v, progress) for v in variants(opts, names)]
