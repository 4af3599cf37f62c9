"""``failover``: kill a replica while it streams (SIGKILL to its process group, like a lost node); the seed expects
< 2 s interruption.

The streams it served must carry on (the gateway resumes them on another replica) with no failed request, and the
killed replica must come back: `up` restarts it and it rejoins the gateway within ``recovery_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from urllib.parse import urlsplit

from llmfleet.bench.records import RequestRecord
from llmfleet.config import ValidateFailoverConfig
from llmfleet.errors import LLMFleetError
from llmfleet.validate.context import CheckContext
from llmfleet.validate.verdict import CheckResult, skipped, verdict

NAME = "failover"


def silences(rec: RequestRecord) -> list[tuple[float, float]]:
    """When a stream went without output: sending to its first output, then between outputs (the whole request when
    no output came). A stream cut for good fails, which the check counts apart."""
    if rec.first_token_s is None:
        return [(rec.start_s, rec.end_s)]
    out = [(rec.start_s, rec.first_token_s)]
    t = rec.first_token_s
    for gap in rec.itl_s:
        out.append((t, t + gap))
        t += gap
    return out


def stall(rec: RequestRecord, kill_s: float, window_s: float = math.inf) -> tuple[float, float] | None:
    """(length, start relative to the kill) of the longest silence of a stream in flight at ``kill_s`` among those
    that began within ``window_s`` after the kill and had not ended before it; None when it was not in flight.

    A silence that began later is not the kill's interruption (it shows in the stream's latency). The wait for the
    first output counts from the kill, not from sending (the time before the kill was ordinary TTFT)."""
    if not rec.start_s <= kill_s <= (rec.end_s or kill_s):
        return None
    found: tuple[float, float] | None = None
    for i, (a, b) in enumerate(silences(rec)):
        if b < kill_s or a > kill_s + window_s:
            continue
        begin = max(a, kill_s) if i == 0 else a
        if found is None or b - begin > found[0]:
            found = (b - begin, begin - kill_s)
    return found or (0.0, 0.0)


def stall_s(rec: RequestRecord, kill_s: float, window_s: float = math.inf) -> float | None:
    """Length of :func:`stall` (None: not in flight at the kill)."""
    found = stall(rec, kill_s, window_s)
    return None if found is None else found[0]


def kill_replica(pid: int) -> None:
    """SIGKILL a replica and everything it started: its process group when it leads one (`up` starts each replica
    in its own session; real vLLM runs its engine core in a child process, which must not outlive the kill, as
    nothing survives a lost node), else the process alone."""
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        if leads_group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


async def _victim(ctx: CheckContext, timeout_wall_s: float = 10.0) -> dict[str, object] | None:
    """The routable replica with the most requests in flight, once one has some."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_wall_s
    while loop.time() < deadline:
        with contextlib.suppress(LLMFleetError):
            reps = [r for r in await ctx.replicas() if r["state"] == "healthy"]
            busy = sorted(reps, key=lambda r: -int(r["in_flight"]))
            if busy and int(busy[0]["in_flight"]) >= 1:
                return busy[0]
        await asyncio.sleep(0.05)
    return None


async def _restarted(
    ctx: CheckContext, url: str, port: int, old_pid: int, kill_s: float, timeout_wall_s: float
) -> float | None:
    """Fleet seconds from the kill until a new process serves ``port`` and the gateway routes to ``url`` again."""
    assert ctx.fleet.replica_pids is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_wall_s
    while loop.time() < deadline:
        new_pid = ctx.fleet.replica_pids().get(port)
        if new_pid is not None and new_pid != old_pid:
            with contextlib.suppress(LLMFleetError):
                if any(r["url"] == url and r["state"] == "healthy" for r in await ctx.replicas()):
                    return ctx.clock.now() - kill_s
        await asyncio.sleep(0.1)
    return None


async def run(ctx: CheckContext, cfg: ValidateFailoverConfig) -> CheckResult:
    """Kill the busiest replica mid-stream; PASS when every stream resumed quickly and the replica came back."""
    target = (
        f"interruption < {cfg.max_interruption_s:g} s, failed requests <= {cfg.max_failed_requests}, "
        f"replica back within {cfg.recovery_timeout_s:g} s"
    )
    missing = ctx.control_missing()
    if missing or ctx.fleet.replica_pids is None:
        return skipped(NAME, target, missing or "no replica processes to kill")
    routable = [r for r in await ctx.replicas() if r["state"] == "healthy"]
    if len(routable) < 2:
        return verdict(NAME, False, f"{len(routable)} routable replica", target, "a single replica cannot fail over")
    async with ctx.phase(NAME):
        load = asyncio.create_task(
            ctx.run_load(
                NAME,
                concurrency=cfg.concurrency,
                requests=cfg.concurrency * 3,
                input_tokens=cfg.input_tokens,
                output_tokens=cfg.output_tokens,
            )
        )
        victim = await _victim(ctx)
        if victim is None:
            await load
            return verdict(NAME, False, "-", target, "no replica had a request in flight to kill")
        url = str(victim["url"])
        port = urlsplit(url).port
        pid = ctx.fleet.replica_pids().get(port or -1)
        if pid is None:
            await load
            return verdict(NAME, False, "-", target, f"cannot find the process of {url} among the fleet's")
        await asyncio.sleep(0.02)  # let its streams get going
        kill_s = ctx.clock.now()
        kill_replica(pid)
        ctx.progress(f"failover: killed {url} (pid {pid}) with {victim['in_flight']} requests in flight")
        records = await load
        recovered_s = await _restarted(ctx, url, port or -1, pid, kill_s, cfg.recovery_timeout_s)
    around = [(r, s) for r in records.records if (s := stall(r, kill_s, cfg.max_interruption_s)) is not None]
    spanning = [s for _, s in around]
    streams = [
        {
            "sent_s": round(r.start_s - kill_s, 3),
            "first_output_s": None if r.first_token_s is None else round(r.first_token_s - kill_s, 3),
            "end_s": round(r.end_s - kill_s, 3),
            "stall_s": round(s[0], 3),
            "stall_began_s": round(s[1], 3),
        }
        for r, s in around
    ]
    failed = [r for r in records.records if not r.ok]
    worst, began = max(spanning, default=(0.0, 0.0))
    passed = worst < cfg.max_interruption_s and len(failed) <= cfg.max_failed_requests and recovered_s is not None
    back = (
        f"restarted and routable {recovered_s:.1f} s after the kill"
        if recovered_s is not None
        else f"NOT back within {cfg.recovery_timeout_s:g} s"
    )
    errors: dict[str, int] = {}
    for r in failed:
        errors[r.error or "?"] = errors.get(r.error or "?", 0) + 1
    evidence = (
        f"killed {url} (SIGKILL to its process group) with {victim['in_flight']} streams on it; {len(spanning)} "
        f"streams spanned the kill, longest stall {worst:.2f} s (began {began:+.2f} s from the kill); "
        f"{len(records.records) - len(failed)} completed, {len(failed)} failed "
        f"{errors or ''}; replica {back}"
    )
    return verdict(
        NAME,
        passed,
        f"{worst:.2f} s interruption, {len(failed)} failed",
        target,
        evidence,
        interruption_s=worst,
        stall_began_s=began,
        streams_around_kill=streams,
        failed=len(failed),
        recovered_s=recovered_s,
        killed=url,
    )
