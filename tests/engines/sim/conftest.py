from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread

MODEL = "llama-3.1-8b"


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimServerThread]]:
    """Start simulated engines with config overrides; all are stopped at the end of the test."""
    started: list[SimServerThread] = []

    def start(**overrides: object) -> SimServerThread:
        sim = SimServerThread(SimEngineConfig.model_validate(overrides)).start()
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture
def sim(start_sim: Callable[..., SimServerThread]) -> SimServerThread:
    return start_sim(enable_prefix_caching=True)


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {sample name (no labels): value}, summed over label sets."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out
