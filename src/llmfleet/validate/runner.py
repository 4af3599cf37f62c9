"""Runs the chosen checks in order against one fleet, with a status monitor sampling in the background; the checks
that measure a fixed fleet run with the autoscaler paused (:mod:`~llmfleet.validate.hold`)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

import aiohttp

from llmfleet.clock import Clock
from llmfleet.config import ValidateConfig
from llmfleet.errors import LLMFleetError
from llmfleet.validate import cost, error_recovery, failover, latency, memory, scaling, throughput
from llmfleet.validate.context import CheckContext, FleetHandle, StatusMonitor
from llmfleet.validate.hold import FIXED_FLEET_CHECKS, HoldOutcome, autoscaler_held
from llmfleet.validate.timeline import Timeline
from llmfleet.validate.verdict import CheckResult, Status

CheckFn = Callable[[CheckContext, ValidateConfig], Awaitable[CheckResult]]

CHECKS: Mapping[str, CheckFn] = MappingProxyType(
    {
        "throughput": lambda ctx, v: throughput.run(ctx, v.throughput),
        "latency": lambda ctx, v: latency.run(ctx, v.latency),
        "failover": lambda ctx, v: failover.run(ctx, v.failover),
        "scaling": lambda ctx, v: scaling.run(ctx, v.scaling),
        "cost": lambda ctx, v: cost.run(ctx, v.cost),
        "memory": lambda ctx, v: memory.run(ctx, v.memory),
        "error_recovery": lambda ctx, v: error_recovery.run(ctx, v.error_recovery),
    }
)
"""Every check by its verdict.json name."""

OnResult = Callable[[CheckResult], None]


async def run_checks(
    fleet: FleetHandle,
    vcfg: ValidateConfig,
    clock: Clock,
    rng: random.Random,
    progress: Callable[[str], None] = lambda _m: None,
    on_result: OnResult = lambda _r: None,
) -> tuple[list[CheckResult], Timeline]:
    """Run ``vcfg.checks`` in order; a check that errors is a FAIL whose evidence is the error."""
    timeline = Timeline(origin_s=clock.now())
    results: list[CheckResult] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        ctx = CheckContext(fleet, clock, session, rng, timeline, progress)
        monitor = StatusMonitor(ctx)
        monitor.start()
        try:
            for name in vcfg.checks:
                progress(f"{name}: running")
                async with contextlib.AsyncExitStack() as stack:
                    hold = HoldOutcome()
                    if name in FIXED_FLEET_CHECKS:
                        hold = await stack.enter_async_context(autoscaler_held(ctx, name))
                    try:
                        result = await CHECKS[name](ctx, vcfg)
                    except LLMFleetError as exc:
                        result = CheckResult(name, Status.FAIL, "-", "-", f"the check could not complete: {exc}")
                result = hold.annotate(result)
                results.append(result)
                on_result(result)
        finally:
            await monitor.stop()
    return results, timeline
