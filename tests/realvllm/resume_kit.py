"""Helpers for the real-vLLM resumption test: the gateway in its own process, and a kill -9 triggered by the
victim engine's own progress counters (not by what a client has seen, which lags behind the engine by whatever
sits in socket buffers)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp

from llmfleet import promtext
from llmfleet.engines.vllm_testing import VLLMReplica
from llmfleet.vllm_metrics import GENERATION_TOKENS, PROMPT_TOKENS, read_gauges

_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: where ``python -m tests.realvllm.resume_kit`` (the watcher) runs."""


@dataclass(frozen=True)
class Progress:
    """One scrape of an engine's load and generation counter."""

    running: float
    waiting: float
    generated: float
    """``vllm:generation_tokens_total``."""
    prompt: float = 0.0
    """``vllm:prompt_tokens_total``: prompts prefilled."""
    trace: tuple[str, ...] = ()
    """The scrapes before it, ``<seconds>: <running>+<waiting> <prompt>/<generated>`` (for the report)."""


def _progress(page_bytes: bytes) -> Progress:
    page = promtext.parse(page_bytes)
    gauges = read_gauges(page)
    generated = page.counter(GENERATION_TOKENS) or 0.0
    return Progress(gauges.running, gauges.waiting, generated, page.counter(PROMPT_TOKENS) or 0.0)


async def progress(session: aiohttp.ClientSession, url: str) -> Progress:
    """The engine's requests in flight and tokens generated so far, from its ``/metrics``."""
    async with session.get(f"{url}/metrics") as r:
        return _progress(await r.read())


def progress_now(url: str, timeout_s: float) -> Progress:
    """:func:`progress` with a plain blocking socket (for the watcher thread)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as r:
        return _progress(r.read())


@dataclass(frozen=True)
class KillPlan:
    """What the watcher process needs (:func:`watch_and_kill`): the victim and when to kill it."""

    url: str
    pgid: int
    """The victim's process group (its API server's pid): killed whole."""
    engine_pids: list[int]
    """The victim's engine processes, frozen while it is looked at."""
    base: Progress
    prompt_tokens: int
    tokens: int
    run_s: float = 0.1
    scrape_timeout_s: float = 2.0
    timeout_s: float = 180.0


def watch_and_kill(plan: KillPlan) -> Progress:
    """kill -9 the victim once its ``/metrics`` shows ``plan.prompt_tokens`` prompt tokens prefilled (every stream
    placed on it has started) and ``plan.tokens`` tokens generated since ``plan.base``, with requests still
    running; returns that scrape (counters from ``base``).

    The engine is looked at while frozen: every ``run_s`` its engine processes are stopped (SIGSTOP; the API
    server keeps answering), ``/metrics`` is read, and the kill, when due, lands on the still-stopped engine, so the
    replica dies exactly as far into the generation as the scrape saw, however long the scrape took.
    Raises AssertionError when that does not happen within ``timeout_s`` (the run did not test what it should)."""
    t0 = time.monotonic()
    seen: list[str] = []
    base = plan.base
    while time.monotonic() - t0 < plan.timeout_s:
        time.sleep(plan.run_s)
        VLLMReplica.freeze(plan.engine_pids)
        try:
            asked = time.monotonic()
            try:
                last = progress_now(plan.url, plan.scrape_timeout_s)
            except OSError:  # a starved API server: let the engine run on and ask again
                seen.append(f"{asked - t0:.2f}s: slow scrape")
                continue
            generated, prompt = last.generated - base.generated, last.prompt - base.prompt
            seen.append(
                f"{asked - t0:.2f}s +{time.monotonic() - asked:.2f}s: {last.running:.0f}+{last.waiting:.0f}"
                f" {prompt:.0f}/{generated:.0f}"
            )
            if prompt >= plan.prompt_tokens and generated >= plan.tokens and last.running:
                os.killpg(plan.pgid, signal.SIGKILL)
                return Progress(last.running, last.waiting, generated, prompt, tuple(seen))
        finally:
            VLLMReplica.thaw(plan.engine_pids)  # after a kill: nothing left to continue
    raise AssertionError(
        f"the victim never had {plan.prompt_tokens} prompt tokens and {plan.tokens} new tokens in flight: "
        f"{seen[:30]}...{seen[-5:]}"
    )


class KillWatcher:
    """:func:`watch_and_kill` in a process of its own, started (and ready) before the streams are: a watcher in
    the test's process, sharing its interpreter with the clients, once woke up 3 s late on this loaded 2-core
    machine (a process that wakes from a sleep is scheduled at once), and a watcher process started with the
    streams took so long to import that the victim had generated 99% of them before its first look."""

    def __init__(self, victim: VLLMReplica, base: Progress, prompt_tokens: int, tokens: int) -> None:
        assert victim.proc is not None
        pids = victim.engine_pids()
        assert pids, "the victim's engine runs in its API server's process: it cannot be frozen"
        self.victim = victim
        self.plan = KillPlan(victim.url, victim.proc.pid, pids, base, prompt_tokens, tokens)
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        argv = [sys.executable, "-m", "tests.realvllm.resume_kit", json.dumps(asdict(self.plan))]
        self.proc = await asyncio.create_subprocess_exec(*argv, cwd=_ROOT, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        try:
            ready = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        except BaseException:
            await self._stop()
            raise
        assert ready == b"ready\n", ready
        return self

    async def killed(self) -> Progress:
        """The scrape the victim was killed on (then reaped); AssertionError when the watcher gave up."""
        assert self.proc is not None and self.proc.stdout is not None
        result = json.loads(await self.proc.stdout.read())
        await self.proc.wait()
        if "error" in result:
            raise AssertionError(result["error"])
        self.victim.kill9()  # reap it (killed by the watcher)
        p = result["progress"]
        return Progress(p["running"], p["waiting"], p["generated"], p["prompt"], tuple(p["trace"]))

    async def _stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()


def _main(arg: str) -> None:
    raw = json.loads(arg)
    plan = KillPlan(**{**raw, "base": Progress(**{**raw["base"], "trace": ()})})
    print("ready", flush=True)
    try:
        print(json.dumps({"progress": asdict(watch_and_kill(plan))}))
    except AssertionError as exc:
        print(json.dumps({"error": str(exc)}))


if __name__ == "__main__":
    _main(sys.argv[1])
