"""A simulated engine served from a background thread (tests, benchmarks, notebooks)."""

from __future__ import annotations

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.engine import SimEngine
from llmfleet.engines.sim.server import ENGINE_KEY, create_app

__all__ = ["SimServerThread", "free_port"]


class SimServerThread(AppThread):
    """``with SimServerThread(config) as sim: sim.url`` — a live engine on 127.0.0.1 until the block ends.

    ``crash_after_requests`` does not kill the test process here: the in-thread engine ignores it.
    """

    def __init__(self, config: SimEngineConfig, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__(lambda: create_app(config, on_crash=lambda: None), host, port)
        self.config = config

    @property
    def engine(self) -> SimEngine:
        assert self.app is not None
        return self.app[ENGINE_KEY]
