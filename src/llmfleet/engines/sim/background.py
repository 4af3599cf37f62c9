"""Run a simulated engine on its own event loop in a background thread (for tests, benchmarks and notebooks).

A thread, not the caller's loop, so that blocking clients (the sync ``openai`` SDK) can call it from anywhere.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

from aiohttp import web

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.engine import SimEngine
from llmfleet.engines.sim.server import ENGINE_KEY, create_app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SimServerThread:
    """``with SimServerThread(config) as sim: sim.url`` — a live engine on 127.0.0.1 until the block ends."""

    def __init__(self, config: SimEngineConfig, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.config = config
        self.host = host
        self.port = port or free_port(host)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sim-{self.port}", daemon=True)
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8001``."""
        return f"http://{self.host}:{self.port}"

    @property
    def engine(self) -> SimEngine:
        assert self._app is not None
        return self._app[ENGINE_KEY]

    def start(self) -> SimServerThread:
        self._thread.start()

        async def up() -> None:
            self._app = create_app(self.config, on_crash=lambda: None)
            self._runner = web.AppRunner(self._app, handler_cancellation=True, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SimServerThread:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
