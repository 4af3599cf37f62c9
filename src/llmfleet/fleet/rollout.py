"""Zero-downtime rollouts: replace every replica with a new engine setting (blue/green with verification).

1. **surge**: start a full new generation next to the old one; each joins the gateway when it answers ``/health``;
2. **verify**: for ``verify_s`` the new replicas must stay healthy in the gateway and answer canary requests;
3. **shift**: drain the old replicas in the gateway (no new requests), wait until their in-flight requests finish,
   remove them and stop their processes;
4. **roll back** by itself if step 1 or 2 fails: drain and stop the new generation; the old one never stopped serving.

Blue/green needs room for two generations for a moment; that is the price of a rollback that never drops traffic.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from llmfleet.clock import Clock
from llmfleet.fleet.supervisor import ManagedReplica, StartupError, Supervisor
from llmfleet.gateway.admin_client import AdminError, GatewayAdminClient

log = logging.getLogger(__name__)


class RolloutState(enum.StrEnum):
    PENDING = "pending"
    SURGING = "surging"
    VERIFYING = "verifying"
    SHIFTING = "shifting"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


@dataclass
class RolloutStatus:
    state: RolloutState = RolloutState.PENDING
    events: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"state": self.state.value, "events": self.events, "error": self.error}


class Rollout:
    """Moves the fleet from ``old`` to a new supervisor made by ``make_new``."""

    def __init__(
        self,
        old: Supervisor,
        make_new: Callable[[], Awaitable[Supervisor]],
        admin: GatewayAdminClient,
        session: aiohttp.ClientSession,
        model: str,
        clock: Clock,
        verify_s: float = 5.0,
        ready_timeout_s: float = 120.0,
        drain_timeout_s: float = 60.0,
    ) -> None:
        self.old = old
        self.make_new = make_new
        self.admin = admin
        self.session = session
        self.model = model
        self.clock = clock
        self.verify_s = verify_s
        self.ready_timeout_s = ready_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.status = RolloutStatus()

    def _event(self, msg: str) -> None:
        log.warning("rollout: %s", msg)
        self.status.events.append(msg)

    async def run(self) -> Supervisor:
        """Returns the supervisor that owns the fleet afterwards (the new one, or the old one after a rollback)."""
        n = len(self.old.replicas)
        self.status.state = RolloutState.SURGING
        new = await self.make_new()
        # Each new replica takes the place of an old one: same pool and capacity type (spot stays spot).
        fresh = [new.add(_port(), r.pool, r.capacity_type) for r in self.old.replicas]
        self._event(f"surge: starting {n} new replicas")
        try:
            await new.wait_ready(fresh, self.ready_timeout_s)
            self.status.state = RolloutState.VERIFYING
            self._event(f"verify: {n} new replicas ready; watching them for {self.verify_s:.0f} s")
            await self._verify(fresh)
        except (StartupError, _VerifyFailed) as exc:
            self.status.error = str(exc).splitlines()[0]
            self.status.state = RolloutState.ROLLING_BACK
            self._event(f"roll back: {self.status.error}")
            await self._retire(new, list(new.replicas))
            self.status.state = RolloutState.ROLLED_BACK
            return self.old
        self.status.state = RolloutState.SHIFTING
        self._event(f"shift: draining {len(self.old.replicas)} old replicas")
        await self._retire(self.old, list(self.old.replicas))
        self.status.state = RolloutState.DONE
        self._event("done")
        return new

    async def _verify(self, fresh: list[ManagedReplica]) -> None:
        urls = {r.url for r in fresh}
        deadline = self.clock.now() + self.verify_s
        while True:
            states = {x["url"]: x["state"] for x in await self.admin.replicas() if x["url"] in urls}
            bad = {u: s for u, s in states.items() if s != "healthy"}
            if len(states) < len(urls):
                bad |= {u: "not registered" for u in urls - set(states)}
            if bad:
                raise _VerifyFailed(f"new replicas unhealthy: {bad}")
            for r in fresh:
                await self._canary(r)
            if self.clock.now() >= deadline:
                return
            await self.clock.sleep(min(1.0, self.verify_s / 4))

    async def _canary(self, r: ManagedReplica) -> None:
        body = {"model": self.model, "prompt": "canary", "max_tokens": 1}
        try:
            async with self.session.post(f"{r.url}/v1/completions", json=body) as resp:
                if resp.status != 200:
                    raise _VerifyFailed(f"canary on {r.url}: HTTP {resp.status}")
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _VerifyFailed(f"canary on {r.url}: {exc or type(exc).__name__}") from None

    async def _retire(self, sup: Supervisor, replicas: list[ManagedReplica]) -> None:
        await retire(self.admin, sup, replicas, self.clock, self.drain_timeout_s)


async def retire(
    admin: GatewayAdminClient, sup: Supervisor, replicas: list[ManagedReplica], clock: Clock, drain_timeout_s: float
) -> None:
    """Take replicas out without dropping a request: drain in the gateway, wait for their in-flight requests (up
    to ``drain_timeout_s``), remove them from the gateway, stop their processes."""
    for r in replicas:
        r.draining = True  # a gateway restarted meanwhile gets it back draining
        with contextlib.suppress(AdminError):  # not registered (never became ready): nothing to drain
            await admin.drain_replica(r.url)
    deadline = clock.now() + drain_timeout_s
    urls = {r.url for r in replicas}
    while clock.now() < deadline:
        try:
            busy = [x for x in await admin.replicas() if x["url"] in urls and x["in_flight"] > 0]
        except AdminError:
            break
        if not busy:
            break
        await clock.sleep(0.1)
    for r in replicas:
        with contextlib.suppress(AdminError):
            await admin.remove_replica(r.url)
        await sup.remove(r)


class _VerifyFailed(Exception):
    pass


def _port() -> int:
    from llmfleet.appthread import free_port

    return free_port()
