"""What every check works with: the fleet's endpoints, the fleet clock, a load runner and a status monitor.

Times are measured on the *fleet clock*: wall time multiplied by the simulated engines' ``time_scale``, so latencies,
durations and targets read as they would on the real hardware being simulated (``--time-scale 1`` for real vLLM).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmfleet.bench.client import BenchClient
from llmfleet.bench.loadgen import LoadGenerator
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.records import RequestRecord, RunRecords
from llmfleet.bench.spec import BenchRequest, Bounds, Load, Target
from llmfleet.clock import Clock
from llmfleet.config import FleetConfig
from llmfleet.errors import LLMFleetError
from llmfleet.validate.timeline import FleetSample, Phase, ScalingEvent, Timeline


@dataclass
class FleetHandle:
    """Where the fleet under test is and how much of it validate controls."""

    url: str
    model: str
    time_scale: float
    admin_token: str | None = None
    control_url: str | None = None
    config: FleetConfig | None = None
    """The fleet's whole config (only when validate brought the fleet up)."""
    replica_pids: Callable[[], dict[int, int]] | None = None
    """Port -> PID of the replica processes (only when validate brought the fleet up)."""

    @property
    def controlled(self) -> bool:
        """Validate started this fleet: it may kill replicas and inject faults."""
        return self.config is not None and self.replica_pids is not None


class CheckContext:
    """Shared by the checks of one run: the fleet, the fleet clock, one HTTP session, the timeline."""

    def __init__(
        self,
        fleet: FleetHandle,
        clock: Clock,
        session: aiohttp.ClientSession,
        rng: random.Random,
        timeline: Timeline,
        progress: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.session = session
        self.rng = rng
        self.timeline = timeline
        self.progress = progress
        self._headers = {"Authorization": f"Bearer {fleet.admin_token}"} if fleet.admin_token else {}

    def control_missing(self) -> str | None:
        """Why a check that needs control of the fleet cannot run, or None when it can."""
        if not self.fleet.controlled:
            return "needs a fleet validate controls (run with --config, not --url)"
        return None

    # ---- load ------------------------------------------------------------------------------------------------
    async def run_load(
        self,
        check: str,
        *,
        input_tokens: int,
        output_tokens: int,
        concurrency: int | None = None,
        rate_per_s: float | None = None,
        requests: int | None = None,
        duration_s: float | None = None,
        timeout_s: float = 600.0,
    ) -> RunRecords:
        """Send a fixed-length synthetic workload through the gateway; every record joins the timeline."""
        target = Target(self.fleet.url, self.fleet.model, api="completions", timeout_s=timeout_s)
        client = BenchClient(target, self.session, self.clock)
        gen = LoadGenerator(client, PromptBuilder(self.rng.randrange(1 << 30)), self.clock, self.rng)
        workload = (BenchRequest(i, input_tokens, output_tokens) for i in itertools.count())
        load = Load(concurrency=concurrency) if concurrency is not None else Load(rate_per_s=rate_per_s)

        def keep(rec: RequestRecord) -> None:
            self.timeline.requests.append((check, rec))

        return await gen.run(workload, load, Bounds(duration_s, requests), keep)

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[None]:
        """Mark a stretch of the run in the timeline."""
        start = self.clock.now()
        try:
            yield
        finally:
            self.timeline.phases.append(Phase(name, self.timeline.rel(start), self.timeline.rel(self.clock.now())))

    # ---- the gateway's admin API -----------------------------------------------------------------------------
    async def admin(self, path: str) -> Any:
        """GET an admin document of the gateway."""
        try:
            async with self.session.get(self.fleet.url + path, headers=self._headers) as resp:
                if resp.status != 200:
                    raise LLMFleetError(f"{self.fleet.url}{path} answered HTTP {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LLMFleetError(f"cannot reach {self.fleet.url}{path}: {exc or type(exc).__name__}") from None

    async def replicas(self) -> list[dict[str, Any]]:
        """The gateway's replicas (``/admin/replicas``)."""
        return list((await self.admin("/admin/replicas"))["replicas"])

    async def set_faults(self, replica_url: str, patch: dict[str, Any]) -> None:
        """Patch a simulated replica's faults (``POST /admin/faults`` of the engine)."""
        try:
            async with self.session.post(replica_url.rstrip("/") + "/admin/faults", json=patch) as resp:
                if resp.status != 200:
                    raise LLMFleetError(f"{replica_url}/admin/faults answered HTTP {resp.status}: {await resp.text()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LLMFleetError(f"cannot set faults on {replica_url}: {exc or type(exc).__name__}") from None

    async def scrape(self, url: str) -> str:
        """A replica's ``/metrics`` page ('' when it does not answer)."""
        try:
            async with self.session.get(url.rstrip("/") + "/metrics") as resp:
                return await resp.text() if resp.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return ""

    async def wait_routable(self, count: int, timeout_wall_s: float, url: str | None = None) -> float | None:
        """Wait until ``count`` replicas (or ``url``) are routable; fleet seconds it took, None on timeout."""
        start = self.clock.now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_wall_s
        while loop.time() < deadline:
            with contextlib.suppress(LLMFleetError):
                reps = await self.replicas()
                ok = [r for r in reps if r["state"] in ("healthy", "degraded")]
                if (url is None and len(ok) >= count) or (url is not None and any(r["url"] == url for r in ok)):
                    return self.clock.now() - start
            await asyncio.sleep(0.1)
        return None


class StatusMonitor:
    """Samples the gateway's status document in the background: fleet size and autoscaler decisions."""

    def __init__(self, ctx: CheckContext, interval_wall_s: float = 0.2) -> None:
        self.ctx = ctx
        self.interval_wall_s = interval_wall_s
        self._task: asyncio.Task[None] | None = None
        self._seen: set[Any] = set()

    async def sample(self) -> None:
        """Take one sample."""
        doc = await self.ctx.admin("/admin/status")
        tl, now = self.ctx.timeline, self.ctx.clock.now()
        gw = doc.get("gateway", {})
        tl.fleet.append(FleetSample(tl.rel(now), int(gw.get("replicas_total", 0)), int(gw.get("replicas_routable", 0))))
        d = doc.get("autoscaler")
        if isinstance(d, dict) and d.get("at") not in self._seen:
            self._seen.add(d.get("at"))
            tl.scaling.append(
                ScalingEvent(
                    tl.rel(now),
                    str(d.get("direction", "")),
                    int(d.get("current", 0)),
                    int(d.get("replicas", 0)),
                    str(d.get("reason", "")),
                )
            )

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(LLMFleetError):
                await self.sample()
            await asyncio.sleep(self.interval_wall_s)

    def start(self) -> None:
        """Start sampling (the admin API needs the token; without it nothing is sampled)."""
        if self.ctx.fleet.admin_token and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="validate-monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
