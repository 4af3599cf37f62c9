"""The conformance targets: the same API tests run against every OpenAI-compatible server llmfleet deals with.

Targets: ``sim`` (the simulated engine, always), ``gateway`` (the gateway in front of simulated engines) and
``vllm`` (a real vLLM replica; only with ``--realvllm``). A target is a base URL plus the model name it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    model: str
    max_model_len: int


def _sim_target() -> Iterator[Target]:
    with SimServerThread(SimEngineConfig(max_model_len=2048, enable_prefix_caching=True)) as sim:
        yield Target("sim", sim.url, "llama-3.1-8b", 2048)


TARGET_FACTORIES = {"sim": _sim_target}


@pytest.fixture(scope="module", params=sorted(TARGET_FACTORIES))
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from TARGET_FACTORIES[request.param]()
