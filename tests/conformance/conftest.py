"""The conformance targets: the same API tests run against every OpenAI-compatible server llmfleet deals with.

Targets: ``sim`` (the simulated engine, always), ``gateway`` (the gateway in front of simulated engines) and
``vllm`` (a real vLLM replica, CPU build, demo model; only with ``--realvllm``). A target is a base URL plus
the model name it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmfleet.appthread import AppThread
from llmfleet.config import GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.app import create_app


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    model: str
    max_model_len: int


def _sim_target() -> Iterator[Target]:
    with SimServerThread(SimEngineConfig(max_model_len=2048, enable_prefix_caching=True)) as sim:
        yield Target("sim", sim.url, "llama-3.1-8b", 2048)


def _gateway_target() -> Iterator[Target]:
    sims = [SimServerThread(SimEngineConfig(max_model_len=2048)).start() for _ in range(2)]
    cfg = GatewayConfig.model_validate({"replicas": [{"url": s.url} for s in sims]})
    try:
        with AppThread(lambda: create_app(cfg, RoutingConfig())) as gw:
            yield Target("gateway", gw.url, "llama-3.1-8b", 2048)
    finally:
        for s in sims:
            s.stop()


def _vllm_target(tmp: Path) -> Iterator[Target]:
    from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup

    runtime, model_dir = demo_setup()
    with VLLMReplica(runtime, model_dir, tmp / "vllm.log") as v:
        yield Target("vllm", v.url, v.model, 2048)


TARGETS = ["sim", "gateway", pytest.param("vllm", marks=pytest.mark.realvllm)]


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if request.param == "sim":
        yield from _sim_target()
    elif request.param == "gateway":
        yield from _gateway_target()
    else:
        yield from _vllm_target(tmp_path_factory.mktemp("vllm"))
