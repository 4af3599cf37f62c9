"""The control API's autoscaler pause over real HTTP, with a real controller under a load that scales it: the pause
holds the replica count, and when its TTL runs out (a manual clock) autoscaling resumes by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.pipeline import Decision, DecisionCode
from llmfleet.autoscaling.signals import FleetSample
from llmfleet.clock import ManualClock
from llmfleet.config import AutoscalerConfig
from tests.fleet.fakes import TOKEN, ControllersOnly, CountingProvider, control_api

CFG = AutoscalerConfig(
    policies=["queue"], target_queue_per_replica=8, scale_up_stabilization_s=0, interval_s=15, max_replicas=6
)


class _Busy:
    """40 requests outstanding: the queue policy (8 per replica) wants 5 replicas."""

    async def sample(self, now: float) -> FleetSample:
        return FleetSample(t=now, ready_replicas=1, waiting=32.0, running=8.0)


@dataclass
class _Setup:
    clock: ManualClock
    controller: Controller
    provider: CountingProvider
    session: aiohttp.ClientSession
    url: str

    async def post(self, path: str, body: Any = None, auth: bool = True) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
        async with self.session.post(self.url + path, json=body, headers=headers) as r:
            return r.status, await r.json()


@pytest.fixture
async def setup() -> AsyncIterator[_Setup]:
    clock = ManualClock(1000.0)
    provider = CountingProvider()
    controller = Controller(_Busy(), provider, CFG, clock)
    async with control_api(ControllersOnly(clock, [controller])) as url, aiohttp.ClientSession() as session:
        yield _Setup(clock, controller, provider, session, url)


async def _wait_until(predicate: Any, wall_s: float = 2.0) -> bool:
    for _ in range(int(wall_s / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


async def test_a_pause_holds_the_size_under_load_and_ends_by_itself_after_its_ttl(setup: _Setup) -> None:
    status, doc = await setup.post("/autoscaler/pause", {"reason": "validate: cost", "ttl_s": 60})
    assert status == 200, doc
    assert doc["paused"] is True and doc["expires_in_s"] == 60.0
    for _ in range(3):  # 45 s of load that wants 5 replicas
        decision = await setup.controller.step()
        assert decision.code is DecisionCode.PAUSED and "validate: cost" in decision.reason
        setup.clock.advance(15)
    assert setup.provider.scaled == [] and setup.provider.replicas == 1
    await asyncio.sleep(0.05)  # the watcher ran several times: not expired yet
    assert setup.controller.paused is not None
    setup.clock.advance(16)  # 61 s after the pause: nobody renewed or resumed it
    assert await _wait_until(lambda: setup.controller.paused is None), "the hold did not expire"
    decision = await _after_a_fresh_window(setup)
    assert decision.code is not DecisionCode.PAUSED and setup.provider.scaled == [decision.replicas]
    assert decision.replicas > 1


async def _after_a_fresh_window(setup: _Setup) -> Decision:
    """The first decisions after a pause wait for a window of signals sampled since (engine loads scraped during
    the pause are still reported until the gateway scrapes again); then the controller decides."""
    held = await setup.controller.step()
    assert held.code is DecisionCode.PAUSED and "fresh signals" in held.reason, held
    assert setup.provider.scaled == []
    setup.clock.advance(setup.controller.cfg.window_s)
    return await setup.controller.step()


async def test_renewing_extends_the_hold_and_resume_ends_it_at_once(setup: _Setup) -> None:
    await setup.post("/autoscaler/pause", {"reason": "validate", "ttl_s": 30})
    setup.clock.advance(20)
    _, doc = await setup.post("/autoscaler/pause", {"reason": "validate", "ttl_s": 30})
    assert doc["expires_in_s"] == 30.0
    setup.clock.advance(20)  # 40 s after the first pause, 20 s after the renewal
    await asyncio.sleep(0.05)
    assert setup.controller.paused is not None
    status, doc = await setup.post("/autoscaler/resume")
    assert status == 200 and doc["paused"] is False and doc["controllers"] == [None]
    assert (await _after_a_fresh_window(setup)).code is not DecisionCode.PAUSED


async def test_the_hold_leaves_a_rollouts_pause_alone_and_outlives_its_resume(setup: _Setup) -> None:
    setup.controller.pause("rollout in progress")
    await setup.post("/autoscaler/pause", {"reason": "validate", "ttl_s": 30})
    assert setup.controller.paused == "rollout in progress"
    setup.controller.resume()  # the rollout ends while the hold lasts: the hold's pause comes back
    assert await _wait_until(lambda: setup.controller.paused is not None)
    assert "validate" in str(setup.controller.paused)
    await setup.post("/autoscaler/resume")
    setup.controller.pause("rollout in progress")
    await setup.post("/autoscaler/pause", {"reason": "validate", "ttl_s": 5})
    setup.clock.advance(6)
    await asyncio.sleep(0.05)
    assert setup.controller.paused == "rollout in progress"  # expiry never clears someone else's pause


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"ttl_s": 10}, "reason"),
        ({"reason": "x"}, "ttl_s"),
        ({"reason": "x", "ttl_s": True}, "ttl_s"),
        ({"reason": "x", "ttl_s": "10"}, "ttl_s"),
        ({"reason": "x", "ttl_s": 0}, "ttl_s"),
        ({"reason": "x", "ttl_s": 1e9}, "ttl_s"),
    ],
)
async def test_bad_pause_requests_are_a_400_naming_the_field(setup: _Setup, body: Any, param: str) -> None:
    status, doc = await setup.post("/autoscaler/pause", body)
    assert status == 400 and doc["error"]["param"] == param, doc
    assert setup.controller.paused is None


async def test_the_pause_needs_the_admin_token(setup: _Setup) -> None:
    status, _ = await setup.post("/autoscaler/pause", {"reason": "x", "ttl_s": 10}, auth=False)
    assert status == 401 and setup.controller.paused is None
    async with setup.session.get(setup.url + "/autoscaler", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert (await r.json())["paused"] is False
