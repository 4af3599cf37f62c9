"""`up` keeps its gateway alive like any replica: a crashed gateway is restarted with backoff, replicas untouched.

When the gateway process exits on its own (``kill -9``, a crash), :class:`GatewaySupervisor` says so, waits a
jittered backoff, starts it again on the same port with the same config file and, once it answers ``/health``,
has every ready replica registered again (the fresh gateway knows none). The replicas, the autoscaler and the
control API live in `up` and keep running meanwhile.

A gateway that cannot start (its port taken by something else, a broken environment) is tried a bounded number of
times: after ``max_tries`` consecutive starts that failed, or crashed within ``stable_s`` of their start,
:class:`GatewayGaveUp` ends the run with the gateway log's last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aiohttp

from llmfleet.clock import Clock
from llmfleet.engines.launch import tail
from llmfleet.fleet.supervisor import StartupError
from llmfleet.gateway.admin_client import AdminError


class GatewayGaveUp(StartupError):
    """The gateway could not be brought back; the message says how often it was tried and quotes its log."""


class SupervisedGateway(Protocol):
    """What the supervisor needs of the gateway process (:class:`~llmfleet.fleet.gateway_process.GatewayProcess`)."""

    url: str
    log_path: Path

    @property
    def returncode(self) -> int | None: ...

    def start(self) -> None: ...

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> None: ...

    async def stop(self, grace_s: float = 15.0) -> None: ...


class GatewaySupervisor:
    """Watches the gateway process and restarts it; ``on_down`` runs when it exits (`up` pauses the autoscaler, which
    is blind without the gateway's signals) and ``on_restarted`` (re-registration, autoscaler resumed) once it is back.

    ``on_restarted`` returns how many replicas it registered (for the message); if it raises
    :class:`~llmfleet.gateway.admin_client.AdminError` the restart counts as failed.
    """

    def __init__(
        self,
        gateway: SupervisedGateway,
        session: aiohttp.ClientSession,
        clock: Clock,
        rng: random.Random,
        on_restarted: Callable[[], Awaitable[int]],
        notify: Callable[[str], None],
        *,
        on_down: Callable[[], Awaitable[None]] | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        max_tries: int = 5,
        stable_s: float = 30.0,
        ready_timeout_s: float = 30.0,
        poll_s: float = 0.2,
    ) -> None:
        self.gateway = gateway
        self.session = session
        self.clock = clock
        self.rng = rng
        self.on_restarted = on_restarted
        self.notify = notify
        self.on_down = on_down
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_tries = max_tries
        self.stable_s = stable_s
        self.ready_timeout_s = ready_timeout_s
        self.poll_s = poll_s
        self.restarts = 0
        """Successful restarts so far."""

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set (the gateway is left running); :class:`GatewayGaveUp` if it cannot be kept up.

        The gateway must have been started (and found ready) before.
        """
        tries = 0  # consecutive restarts that failed or did not last stable_s
        backoff = self.backoff_initial_s
        up_since = self.clock.now()
        while not stop.is_set():
            code = self.gateway.returncode
            if code is None:
                await self._wait(stop, self.poll_s)
                continue
            down_at = self.clock.now()
            if down_at - up_since >= self.stable_s:
                tries, backoff = 0, self.backoff_initial_s
            self.notify(
                f"gateway exited (code {code}); restarting it on {self.gateway.url}, replicas keep running "
                f"(log: {self.gateway.log_path})"
            )
            if self.on_down is not None:
                await self.on_down()
            while True:
                if tries >= self.max_tries:
                    raise GatewayGaveUp(self._gave_up_message(tries))
                tries += 1
                if await self._wait(stop, backoff * (0.5 + self.rng.random())):
                    return
                backoff = min(self.backoff_max_s, backoff * 2)
                if await self._restart(tries):
                    break
            up_since = self.clock.now()
            self.restarts += 1

    async def _restart(self, attempt: int) -> bool:
        self.gateway.start()
        try:
            await self.gateway.wait_ready(self.session, self.ready_timeout_s)
            registered = await self.on_restarted()
        except (StartupError, AdminError, TimeoutError) as exc:
            self.notify(f"gateway restart {attempt}/{self.max_tries} failed: {_summary(exc)}")
            await self.gateway.stop(grace_s=2.0)
            return False
        n = self.restarts + 1
        self.notify(f"gateway back on {self.gateway.url} (restart {n}); {registered} replicas registered again")
        return True

    def _gave_up_message(self, tries: int) -> str:
        return (
            f"the gateway on {self.gateway.url} could not be kept running ({tries} restarts failed or crashed "
            f"within {self.stable_s:.0f} s); stopping the fleet. Last log lines:\n{tail(self.gateway.log_path)}"
        )

    async def _wait(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep ``seconds`` on the injected clock, or less if ``stop`` is set; True if it was."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return stop.is_set()


def _summary(exc: Exception) -> str:
    """One line: the error's first line and, when it quotes a log, the log's last line (the actual cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    head = lines[0].removesuffix("; last log lines:")
    return f"{head}: {lines[-1]}" if len(lines) > 1 else head
