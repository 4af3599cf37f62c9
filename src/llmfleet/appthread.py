"""Run an aiohttp application on its own event loop in a background thread (tests, benchmarks, notebooks).

A thread, not the caller's loop, so that blocking clients (the sync ``openai`` SDK) can call it from anywhere.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class AppThread:
    """``with AppThread(make_app) as t: t.url`` — the app serves on 127.0.0.1 until the block ends."""

    def __init__(
        self,
        make_app: Callable[[], web.Application],
        host: str = "127.0.0.1",
        port: int | None = None,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self._make_app = make_app
        self.host = host
        self.port = port or free_port(host)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"app-{self.port}", daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8001``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()

        async def up() -> None:
            self.app = self._make_app()
            self._runner = web.AppRunner(
                self.app, handler_cancellation=True, access_log=None, shutdown_timeout=self.shutdown_timeout_s
            )
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(timeout=30)
        return self

    def run(self, coro_factory: Callable[[], object]) -> object:
        """Run a coroutine on the app's loop (app state is loop-confined) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(timeout=30)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=60)
            self._runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
