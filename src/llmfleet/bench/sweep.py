"""Wiring: one :class:`BenchPlan` (endpoint, workload, loads, bounds) -> a run per load point, summarised.

The one place that builds the connection pool, the client, the prompt builder and the load generator. Every point of
a sweep replays the same seeded workload, so points differ only in the load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from llmfleet.bench.client import BenchClient, discover_model
from llmfleet.bench.distributions import LengthDistribution
from llmfleet.bench.loadgen import LoadGenerator, OnRecord
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.records import RunRecords
from llmfleet.bench.spec import BenchRequest, Bounds, Load, Slo, Target
from llmfleet.bench.summary import summarize
from llmfleet.bench.synthetic import conversations, synthetic
from llmfleet.clock import Clock
from llmfleet.errors import ConfigError

WORKLOADS = ("synthetic", "conversation", "trace")
_DEFAULT_INPUT = LengthDistribution("fixed", 256)
_DEFAULT_OUTPUT = LengthDistribution("fixed", 128)


@dataclass(frozen=True)
class WorkloadSpec:
    """Which requests to send: generated (``synthetic``, ``conversation``) or a parsed trace."""

    kind: str = "synthetic"
    input_tokens: LengthDistribution = _DEFAULT_INPUT
    output_tokens: LengthDistribution = _DEFAULT_OUTPUT
    prefix_tokens: int = 0
    prefixes: int = 1
    sessions: int = 8
    turns: int = 4
    trace: tuple[BenchRequest, ...] = ()

    def requests(self, rng: random.Random) -> Iterable[BenchRequest]:
        """The workload's requests (endless for generated kinds)."""
        if self.kind == "trace":
            return self.trace
        if self.kind == "conversation":
            return conversations(
                self.input_tokens, self.output_tokens, rng, self.sessions, self.turns, self.prefix_tokens
            )
        if self.kind == "synthetic":
            return synthetic(self.input_tokens, self.output_tokens, rng, self.prefix_tokens, self.prefixes)
        raise ConfigError(f"--workload: {self.kind!r} is not one of {', '.join(WORKLOADS)}")

    def describe(self) -> str:
        """One line for reports."""
        if self.kind == "trace":
            return f"trace ({len(self.trace)} requests)"
        lengths = f"input {self.input_tokens}, output {self.output_tokens} tokens"
        if self.kind == "conversation":
            return f"conversations ({self.sessions} sessions x {self.turns} turns), {lengths}"
        extra = f", {self.prefixes} shared prefix(es) of {self.prefix_tokens} tokens" if self.prefix_tokens else ""
        return f"synthetic, {lengths}{extra}"


@dataclass(frozen=True)
class BenchPlan:
    """Everything a ``llmfleet bench`` invocation asked for."""

    target: Target
    workload: WorkloadSpec
    loads: tuple[Load, ...]
    bounds: Bounds
    slo: Slo = field(default_factory=Slo)
    seed: int = 0
    ignore_eos: bool = True


@dataclass
class PointResult:
    """One point of a sweep: what was recorded and its summary."""

    run: RunRecords
    summary: dict[str, Any]


async def resolve_model(target: Target) -> Target:
    """``target`` with its model filled in from ``/v1/models`` when none was given."""
    if target.model:
        return target
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        model = await discover_model(session, target.url)
    return Target(target.url, model, target.api, target.timeout_s, target.api_key)


async def run_plan(
    plan: BenchPlan,
    clock: Clock,
    on_point_start: Callable[[int, Load], None] | None = None,
    on_record: OnRecord | None = None,
) -> list[PointResult]:
    """Run every load point of ``plan`` in turn, each with a fresh connection pool and the same seeded workload."""
    results = []
    for i, load in enumerate(plan.loads):
        if on_point_start is not None:
            on_point_start(i, load)
        rng = random.Random(plan.seed)
        workload_rng, arrival_rng = random.Random(rng.random()), random.Random(rng.random())
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=plan.target.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            client = BenchClient(plan.target, session, clock, ignore_eos=plan.ignore_eos)
            gen = LoadGenerator(client, PromptBuilder(plan.seed), clock, arrival_rng)
            run = await gen.run(plan.workload.requests(workload_rng), load, plan.bounds, on_record)
        results.append(PointResult(run, summarize(run, plan.slo)))
    return results
