"""Validate holds the autoscaler through `up`'s real control API (over 127.0.0.1): renewed while a check runs past
the TTL, resumed after it, and the verdict says so."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.signals import FleetSample
from llmfleet.clock import ScaledClock, WallClock
from llmfleet.config import AutoscalerConfig, FleetConfig
from llmfleet.validate.context import CheckContext, FleetHandle
from llmfleet.validate.hold import HoldOutcome, autoscaler_held
from llmfleet.validate.timeline import Timeline
from llmfleet.validate.verdict import CheckResult, Status, skipped
from tests.fleet.fakes import TOKEN, ControllersOnly, CountingProvider, control_api


class _Idle:
    async def sample(self, now: float) -> FleetSample:
        return FleetSample(t=now, ready_replicas=1)


@dataclass
class _Setup:
    controller: Controller
    ctx: CheckContext


@pytest.fixture
async def setup() -> AsyncIterator[_Setup]:
    controller = Controller(_Idle(), CountingProvider(), AutoscalerConfig(), WallClock())
    async with control_api(ControllersOnly(WallClock(), [controller])) as control_url, aiohttp.ClientSession() as s:
        fleet = FleetHandle(
            url="http://127.0.0.1:1",
            model="m",
            time_scale=4.0,
            admin_token=TOKEN,
            control_url=control_url,
            config=FleetConfig(),
            replica_pids=dict,
        )
        ctx = CheckContext(fleet, ScaledClock(4.0), s, random.Random(0), Timeline(0.0))
        yield _Setup(controller, ctx)


async def test_the_hold_is_renewed_past_its_ttl_and_released_after_the_check(setup: _Setup) -> None:
    # A TTL of 1 s: renewals come every third of it; at 0.3 s a loop starved for 0.3 s (load 28 on 2 cores) let
    # the hold lapse between two renewals.
    async with autoscaler_held(setup.ctx, "throughput", ttl_wall_s=1.0) as outcome:
        assert outcome.held and outcome.why_not is None
        assert "llmfleet validate: throughput" in str(setup.controller.paused)
        await asyncio.sleep(2.5)  # well past the TTL: renewals keep it
        assert setup.controller.paused is not None
    assert setup.controller.paused is None  # resumed at once, not by expiry


async def test_a_validate_that_stops_renewing_leaves_the_autoscaler_on_after_the_ttl(setup: _Setup) -> None:
    held = autoscaler_held(setup.ctx, "cost", ttl_wall_s=0.3)
    outcome = await held.__aenter__()  # never exited, as when validate is killed mid-check ...
    assert outcome.held
    for task in asyncio.all_tasks():
        if task.get_name() == "validate-hold-cost":
            task.cancel()  # ... and its renewals stop
    await asyncio.sleep(0.6)
    assert setup.controller.paused is None
    await held.__aexit__(None, None, None)


async def test_without_a_control_api_the_verdict_says_the_autoscaler_was_not_paused(setup: _Setup) -> None:
    setup.ctx.fleet.control_url = None
    setup.ctx.fleet.config = None
    async with autoscaler_held(setup.ctx, "latency") as outcome:
        assert not outcome.held and setup.controller.paused is None
    result = outcome.annotate(CheckResult("latency", Status.PASS, "1", "2", "measured"))
    assert result.evidence == "measured; autoscaler NOT paused (--url: validate has no control API to pause it)"
    assert result.details["autoscaler"].startswith("not paused")


def test_annotations() -> None:
    held = HoldOutcome(held=True).annotate(CheckResult("memory", Status.FAIL, "1", "2", "grew"))
    assert held.evidence == "grew; autoscaler paused during this check" and held.details == {"autoscaler": "paused"}
    assert HoldOutcome().annotate(CheckResult("x", Status.PASS, "1", "2", "e")).evidence == "e"  # no autoscaler
    skip = skipped("failover", "t", "needs control")
    assert HoldOutcome(held=True).annotate(skip).evidence == "needs control"
