"""Holding the fleet's autoscaler still around the checks that measure a fixed fleet.

A reactive autoscaler grows the fleet under the throughput check's 100 streams, and every check after it then
measures a different fleet (``cost`` more replicas than projected, ``scaling`` no room left). So validate pauses
`llmfleet up`'s autoscaler through its control API (``POST /autoscaler/pause``) around :data:`FIXED_FLEET_CHECKS`,
with a TTL it renews while the check runs: if validate dies, autoscaling resumes by itself within the TTL.
``scaling`` and ``cost`` run with the autoscaler live: the first measures it, the second prices what it does under
steady load (the planner's projection includes its spare capacity and bounds). Each verdict says which it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmfleet.errors import LLMFleetError
from llmfleet.validate.context import CheckContext
from llmfleet.validate.verdict import CheckResult, Status

FIXED_FLEET_CHECKS = frozenset({"throughput", "latency", "failover", "memory", "error_recovery"})
"""Checks measured with the autoscaler paused."""


@dataclass
class HoldOutcome:
    """Whether the autoscaler was held during a check, and if not why."""

    held: bool = False
    why_not: str | None = None
    """None when held, or when there was nothing to hold (no autoscaler runs)."""

    def annotate(self, result: CheckResult) -> CheckResult:
        """``result`` with ``details.autoscaler`` and, when it matters, a sentence in its evidence."""
        if result.status is Status.SKIP:
            return result
        if self.held:
            state, note = "paused", "autoscaler paused during this check"
        elif self.why_not is not None:
            state, note = f"not paused: {self.why_not}", f"autoscaler NOT paused ({self.why_not})"
        else:
            return result
        result.details["autoscaler"] = state
        result.evidence = f"{result.evidence}; {note}" if result.evidence else note
        return result


class _ControlClient:
    """The calls validate makes to `up`'s control API."""

    def __init__(self, ctx: CheckContext) -> None:
        assert ctx.fleet.control_url is not None
        self.url = ctx.fleet.control_url.rstrip("/")
        self.session = ctx.session
        self.headers = {"Authorization": f"Bearer {ctx.fleet.admin_token}"}

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            timeout = aiohttp.ClientTimeout(total=10.0)
            async with self.session.post(self.url + path, json=body, headers=self.headers, timeout=timeout) as resp:
                if resp.status != 200:
                    raise LLMFleetError(f"{self.url}{path} answered HTTP {resp.status}: {(await resp.text())[:200]}")
                doc = await resp.json(content_type=None)
                return doc if isinstance(doc, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LLMFleetError(f"cannot reach {self.url}{path}: {exc or type(exc).__name__}") from None


@contextlib.asynccontextmanager
async def autoscaler_held(ctx: CheckContext, check: str, ttl_wall_s: float = 60.0) -> AsyncIterator[HoldOutcome]:
    """Pause the autoscaler for the block (renewed every third of ``ttl_wall_s``), resume it after."""
    outcome = HoldOutcome()
    if ctx.fleet.control_url is None or not ctx.fleet.admin_token:
        outcome.why_not = (
            "`up` gave no control API" if ctx.fleet.controlled else "--url: validate has no control API to pause it"
        )
        yield outcome
        return
    client = _ControlClient(ctx)
    body = {"reason": f"llmfleet validate: {check}", "ttl_s": ttl_wall_s}
    try:
        doc = await client.post("/autoscaler/pause", body)
    except LLMFleetError as exc:
        outcome.why_not = str(exc)
        yield outcome
        return
    outcome.held = bool(doc.get("controllers"))  # an empty list: no model autoscales, nothing was held

    async def renew() -> None:
        while True:
            await ctx.clock.sleep(ttl_wall_s / 3 * ctx.fleet.time_scale)  # the fleet clock runs time_scale x wall
            with contextlib.suppress(LLMFleetError):  # a missed renewal is covered by the next one or the TTL
                await client.post("/autoscaler/pause", body)

    task = asyncio.create_task(renew(), name=f"validate-hold-{check}")
    try:
        yield outcome
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(LLMFleetError):  # unreachable now: the TTL resumes it
            await client.post("/autoscaler/resume")
