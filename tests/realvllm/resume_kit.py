"""Helpers for the real-vLLM resumption test: the gateway in its own process, and a kill -9 triggered by the
victim engine's own progress counters (not by what a client has seen, which lags behind the engine by whatever
sits in socket buffers)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import yaml

from llmfleet import promtext
from llmfleet.appthread import free_port
from llmfleet.engines.launch import tail
from llmfleet.engines.vllm_testing import VLLMReplica
from llmfleet.vllm_metrics import GENERATION_TOKENS, PROMPT_TOKENS, read_gauges


class GatewayProcess:
    """``llmfleet gateway`` in its own process (as deployed: the test client does not share its event loop), with
    the fleet.yaml ``fleet`` written beside ``log_path``; its output (INFO) goes to ``log_path``."""

    def __init__(self, fleet: dict[str, Any], log_path: Path, ready_timeout_s: float = 60.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cfg = log_path.with_suffix(".yaml")
        cfg.write_text(yaml.safe_dump(fleet))
        cmd = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(self.port), "--config", str(cfg)]
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([*cmd, "--log-level", "INFO"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout_s
        while not self._ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the gateway did not become ready:\n{tail(log_path, 30)}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> promtext.Scrape:
        """The gateway's ``/metrics`` page."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            return promtext.parse(r.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


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


async def progress(session: aiohttp.ClientSession, url: str) -> Progress:
    """The engine's requests in flight and tokens generated so far, from its ``/metrics``."""
    async with session.get(f"{url}/metrics") as r:
        page = promtext.parse(await r.read())
    gauges = read_gauges(page)
    generated = page.counter(GENERATION_TOKENS) or 0.0
    return Progress(gauges.running, gauges.waiting, generated, page.counter(PROMPT_TOKENS) or 0.0)


async def kill_when_generating(
    session: aiohttp.ClientSession,
    victim: VLLMReplica,
    base: Progress,
    prompt_tokens: int,
    tokens: int,
    poll_s: float = 0.02,
    stale_s: float = 0.3,
    timeout_s: float = 120.0,
    client_ahead: Callable[[], bool] | None = None,
) -> Progress:
    """kill -9 ``victim`` as soon as its ``/metrics`` shows ``prompt_tokens`` prompt tokens prefilled (every stream
    placed on it has started) and ``tokens`` tokens generated since ``base``, with requests still running; returns
    that scrape (counters from ``base``). A scrape slower than ``stale_s`` is not acted on: on a starved machine the
    victim's API server can leave ``/metrics`` unanswered for seconds while it streams, so ``client_ahead`` (what
    the clients have received, which trails the engine) also triggers the kill.
    Raises AssertionError when that does not happen within ``timeout_s`` (the run did not test what it should)."""
    t0 = time.monotonic()
    seen: list[str] = []
    last = base
    while time.monotonic() - t0 < timeout_s:
        if client_ahead is not None and client_ahead():
            victim.kill9()
            seen.append(f"{time.monotonic() - t0:.2f}s: killed on the client's count")
            return Progress(last.running, last.waiting, last.generated - base.generated, 0.0, tuple(seen))
        asked = time.monotonic()
        try:
            async with asyncio.timeout(stale_s):
                last = await progress(session, victim.url)
        except TimeoutError:  # a starved API server: look at the client's count meanwhile
            seen.append(f"{asked - t0:.2f}s: slow scrape")
            continue
        rtt = time.monotonic() - asked
        generated, prompt = last.generated - base.generated, last.prompt - base.prompt
        seen.append(f"{asked - t0:.2f}s: {last.running:.0f}+{last.waiting:.0f} {prompt:.0f}/{generated:.0f}")
        # A scrape that took long (a stalled machine) is stale: the engine may be near done by now.
        if prompt >= prompt_tokens and generated >= tokens and last.running and rtt < stale_s:
            victim.kill9()
            return Progress(last.running, last.waiting, generated, prompt, tuple(seen))
        await asyncio.sleep(poll_s)
    raise AssertionError(
        f"the victim never had {prompt_tokens} prompt tokens and {tokens} new tokens in flight: "
        f"{seen[:30]}...{seen[-5:]}"
    )
