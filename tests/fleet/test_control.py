"""The control API of `llmfleet up` over real HTTP: a bad rollout setting is a 400 naming the key, not a 500."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from llmfleet.clock import WallClock
from llmfleet.config import SimEngineConfig
from llmfleet.errors import ConfigError
from llmfleet.fleet.actions import patched_engine
from llmfleet.fleet.cli import _parse_sets
from llmfleet.fleet.control import create_control_app
from llmfleet.fleet.model_fleet import ModelFleet
from llmfleet.fleet.rollout import Rollout
from tests.fleet.fakes import serve

TOKEN = "t0ken"


class _Fleet:
    """A FleetControl whose rollouts validate the patch as the real one does, then stop there."""

    clock = WallClock()
    models: tuple[ModelFleet, ...] = ()

    async def start_rollout(self, engine_patch: dict[str, Any], model: str | None = None) -> Rollout:
        patched_engine(SimEngineConfig(), engine_patch)
        raise AssertionError("a valid patch was not expected in this test")

    async def spot_interrupt(self, url: str) -> dict[str, Any]:
        raise ConfigError("fleet.spot_replicas: none")


async def test_a_config_error_in_an_action_is_a_400_naming_the_key() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(create_control_app(_Fleet(), TOKEN)) as url, aiohttp.ClientSession(headers=headers) as s:
        patch = _parse_sets(["engine.faults.error_rate=2.0"])
        async with s.post(f"{url}/rollout", json={"engine": patch}) as r:
            body = await r.json()
            assert r.status == 400, body
        err = body["error"]
        assert err["message"].startswith("engine.faults.error_rate: Input should be less than or equal to 1")
        assert err["param"] == "engine.faults.error_rate"
        async with s.post(f"{url}/rollout", json={"engine": {"gpu": "H1000"}}) as r:
            assert r.status == 400 and "engine.gpu: unknown GPU 'H1000'" in (await r.json())["error"]["message"]
        async with s.post(f"{url}/spot/interrupt", json={"url": "http://x"}) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "fleet.spot_replicas"


def test_set_options_nest_and_merge_into_the_running_engine() -> None:
    patch = _parse_sets(["engine.faults.error_rate=1.0", "engine.gpu=H200"])
    assert patch == {"faults": {"error_rate": 1.0}, "gpu": "H200"}
    current = SimEngineConfig(gpu="H100", faults={"extra_latency_ms": 7})  # type: ignore[arg-type]
    new = patched_engine(current, patch)
    assert (new.gpu, new.faults.error_rate, new.faults.extra_latency_ms) == ("H200", 1.0, 7)
    with pytest.raises(ConfigError, match=r"^engine.gpux: Extra inputs are not permitted"):
        patched_engine(current, {"gpux": "H200"})
