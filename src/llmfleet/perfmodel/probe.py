"""Measure a running engine through its OpenAI API and ``/metrics`` only (real vLLM or the simulated engine).

* engine facts: ``GET /v1/models`` (served name, ``max_model_len``, ``root``) and ``vllm:cache_config_info`` (KV
  blocks, block size, prefix caching, memory utilisation) from ``/metrics``;
* prefill: TTFT of one streamed request at a time, over prompt lengths (median of repeats);
* decode: ``batch`` requests sent together with the same prompt length and ``ignore_eos``, so they decode in
  lock-step; the time per output token after the first (TPOT, from the server's ``usage``) of each is one decode
  step of ``batch`` sequences at a context of about prompt + half the output (median over the batch);
* ``max_num_seqs``: many short requests at once while watching ``vllm:num_requests_running`` top out.

Prompts come from :class:`~llmfleet.bench.prompts.PromptBuilder` (each one unique from its first block, so prefix
caching never shortens a measurement) and are sent by :class:`~llmfleet.bench.client.BenchClient` to
``/v1/completions``; prompt lengths are what the server's ``usage`` reports.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from llmfleet.bench.client import BenchClient
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.records import RequestRecord
from llmfleet.bench.spec import BenchRequest, Target
from llmfleet.clock import Clock
from llmfleet.errors import ConfigError, LLMFleetError
from llmfleet.perfmodel.profile import DecodePoint, PrefillPoint
from llmfleet.promtext import HistogramTotals, MetricsParseError, parse

Progress = Callable[[str], None]
ITL_HISTOGRAM = "vllm:inter_token_latency_seconds"
PREFILL_HISTOGRAM = "vllm:request_prefill_time_seconds"


class ProbeError(LLMFleetError):
    """The engine could not be measured (unreachable, refusing requests, no such model)."""


@dataclass(frozen=True)
class EngineFacts:
    """What the engine says about itself."""

    served_model: str
    root: str | None
    max_model_len: int | None
    block_size: int | None
    num_gpu_blocks: int | None
    enable_prefix_caching: bool | None
    gpu_memory_utilization: float | None


def _label_int(labels: dict[str, str], key: str) -> int | None:
    try:
        return int(float(labels[key]))
    except (KeyError, ValueError):
        return None


class EngineProbe:
    """Measurements against the engine at ``url`` serving ``model``."""

    def __init__(
        self,
        url: str,
        model: str,
        session: aiohttp.ClientSession,
        clock: Clock,
        progress: Progress = lambda _msg: None,
        seed: int = 0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._session = session
        self._clock = clock
        self._progress = progress
        self._client = BenchClient(Target(self.url, model, api="completions"), session, clock, ignore_eos=True)
        self._prompts = PromptBuilder(seed)
        self._index = itertools.count()
        self.tokens_per_word = 1.0
        """Prompt tokens the server counts per word of the prompt text (measured by :meth:`tune_prompts`)."""

    # ---- facts ------------------------------------------------------------------------------------------
    async def _get(self, path: str) -> aiohttp.ClientResponse:
        try:
            resp = await self._session.get(self.url + path)
            await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConfigError(f"--url: cannot reach {self.url} ({type(exc).__name__}: {exc})") from None
        return resp

    async def facts(self) -> EngineFacts:
        """The served model's card and the KV cache configuration."""
        resp = await self._get("/v1/models")
        if resp.status != 200:
            raise ConfigError(f"--url: {self.url}/v1/models answered HTTP {resp.status}: is it an OpenAI API?")
        try:
            cards = (await resp.json()).get("data") or []
        except (ValueError, aiohttp.ContentTypeError, AttributeError):
            raise ConfigError(f"--url: {self.url}/v1/models did not answer a model list") from None
        card = next((c for c in cards if isinstance(c, dict) and c.get("id") == self.model), None)
        if card is None:
            known = ", ".join(str(c.get("id")) for c in cards if isinstance(c, dict)) or "none"
            raise ConfigError(f"--model: {self.model!r} is not served at {self.url} (it serves: {known})")
        max_len = card.get("max_model_len")
        root = card.get("root")
        block_size = num_blocks = None
        prefix: bool | None = None
        gmu: float | None = None
        resp = await self._get("/metrics")
        if resp.status == 200:
            try:
                scrape = parse(await resp.text())
            except MetricsParseError:
                scrape = None
            info = [s for s in scrape.samples if s.name == "vllm:cache_config_info"] if scrape else []
            if info:
                labels = dict(info[0].labels)
                block_size = _label_int(labels, "block_size")
                num_blocks = _label_int(labels, "num_gpu_blocks")
                prefix = (
                    labels.get("enable_prefix_caching", "").lower() == "true"
                    if labels.get("enable_prefix_caching")
                    else None
                )
                try:
                    gmu = float(labels["gpu_memory_utilization"])
                except (KeyError, ValueError):
                    gmu = None
        return EngineFacts(
            served_model=self.model,
            root=root if isinstance(root, str) else None,
            max_model_len=max_len if isinstance(max_len, int) else None,
            block_size=block_size,
            num_gpu_blocks=num_blocks,
            enable_prefix_caching=prefix,
            gpu_memory_utilization=gmu,
        )

    async def queue_state(self) -> tuple[float, float] | None:
        """``(vllm:num_requests_running, vllm:num_requests_waiting)`` now; None when not exported."""
        resp = await self._get("/metrics")
        if resp.status != 200:
            return None
        try:
            scrape = parse(await resp.text())
        except MetricsParseError:
            return None
        running, waiting = scrape.total("vllm:num_requests_running"), scrape.total("vllm:num_requests_waiting")
        return None if running is None or waiting is None else (running, waiting)

    async def itl_totals(self, histogram: str = ITL_HISTOGRAM) -> HistogramTotals | None:
        """The totals of one of the engine's histograms (None when it does not export it)."""
        resp = await self._get("/metrics")
        if resp.status != 200:
            return None
        try:
            scrape = parse(await resp.text())
        except MetricsParseError:
            return None
        if f"{histogram}_count" not in scrape.names():
            return None
        return HistogramTotals.of(scrape, histogram)

    # ---- requests ---------------------------------------------------------------------------------------
    async def _send(self, input_tokens: int, output_tokens: int) -> RequestRecord:
        words = max(1, round(input_tokens / self.tokens_per_word))
        req = BenchRequest(next(self._index), words, output_tokens)
        rec = await self._client.send(req, self._prompts.text(req), self._clock.now())
        if not rec.ok:
            raise ProbeError(
                f"request to {self.url}/v1/completions failed ({rec.error}: {rec.error_detail or 'no detail'})"
            )
        return rec

    async def tune_prompts(self, words: int = 200) -> None:
        """Learn how many prompt tokens the server counts per word, so prompt lengths can be aimed at."""
        rec = await self._send(words, 2)
        if rec.usage_reported and rec.input_tokens > 0:
            self.tokens_per_word = rec.input_tokens / words

    async def prefill(self, lengths: Sequence[int], repeats: int) -> list[PrefillPoint]:
        """Median TTFT of a lone request for each prompt length, and the engine's own prefill time when it exports
        ``vllm:request_prefill_time_seconds`` (scheduled to first token, from the engine core's timestamps).

        Repeats go round the lengths (not one length after another) so that a burst of load from elsewhere on the
        machine spreads over the lengths instead of spoiling one.
        """
        server = await self.itl_totals(PREFILL_HISTOGRAM) is not None
        ttfts: dict[int, list[float]] = {n: [] for n in lengths}
        engine: dict[int, list[float]] = {n: [] for n in lengths}
        sizes: dict[int, list[int]] = {n: [] for n in lengths}
        for _ in range(repeats):
            for n in lengths:
                before = await self.itl_totals(PREFILL_HISTOGRAM) if server else None
                rec = await self._send(n, 2)
                assert rec.ttft_s is not None  # ok records have a first token
                ttfts[n].append(rec.ttft_s)
                sizes[n].append(rec.input_tokens)
                if server:
                    after = await self.itl_totals(PREFILL_HISTOGRAM)
                    mean = after.since(before).mean if after is not None else None
                    if mean is not None and mean > 0:
                        engine[n].append(mean)
        points = []
        for n in lengths:
            point = PrefillPoint(
                prompt_tokens=round(statistics.median(sizes[n])),
                ttft_s=statistics.median(ttfts[n]),
                engine_prefill_s=statistics.median(engine[n]) if engine[n] else None,
            )
            extra = f", engine prefill {point.engine_prefill_s * 1000:8.2f} ms" if point.engine_prefill_s else ""
            self._progress(f"prefill {point.prompt_tokens:>6} tokens: TTFT {point.ttft_s * 1000:8.2f} ms{extra}")
            points.append(point)
        return points

    async def _batch(self, batch: int, input_tokens: int, output_tokens: int) -> tuple[float, float]:
        """Send ``batch`` requests together; (median end-to-end seconds, median prompt tokens)."""
        recs = await asyncio.gather(*(self._send(input_tokens, output_tokens) for _ in range(batch)))
        return statistics.median(r.e2e_s for r in recs), statistics.median(r.input_tokens for r in recs)

    async def decode(
        self,
        batches: Sequence[int],
        contexts: Sequence[int],
        output_tokens: int,
        repeats: int = 1,
        short_tokens: int = 8,
    ) -> list[DecodePoint]:
        """Decode step time with ``batch`` requests decoding together, at each context length (median of repeats).

        Where the engine exports ``vllm:inter_token_latency_seconds`` (vLLM measures it from the engine core's own
        timestamps) a step is the mean inter-token latency the engine recorded over one batch of ``batch`` requests
        with ``short_tokens + output_tokens`` outputs: decoding in lock-step, every gap is one step of the batch. This
        leaves out the API server and the stream, which on a loaded vLLM sends several tokens per chunk. Otherwise
        the batch is also sent with ``short_tokens`` outputs, and a step is the difference of the median end-to-end
        times over ``output_tokens``.
        """
        if output_tokens < 1 or short_tokens < 1:
            raise ConfigError("decode: output lengths must be >= 1")
        server_itl = await self.itl_totals() is not None
        points = []
        for ctx in contexts:
            for b in batches:
                steps, prompts = [], []
                for _ in range(repeats):
                    if server_itl:
                        before = await self.itl_totals()
                        _, prompt = await self._batch(b, ctx, short_tokens + output_tokens)
                        after = await self.itl_totals()
                        mean = after.since(before).mean if after is not None else None
                        if mean is None:
                            raise ProbeError(f"decode batch {b}: the engine recorded no inter-token latencies")
                        steps.append(mean)
                    else:
                        short_s, prompt = await self._batch(b, ctx, short_tokens)
                        long_s, _ = await self._batch(b, ctx, short_tokens + output_tokens)
                        steps.append(max(long_s - short_s, 1e-6) / output_tokens)
                    prompts.append(prompt)
                step_s, prompt = statistics.median(steps), statistics.median(prompts)
                point = DecodePoint(
                    batch=b,
                    context_tokens=round(prompt + (short_tokens + output_tokens) / 2),
                    step_s=step_s,
                    method="server_itl" if server_itl else "e2e_difference",
                )
                self._progress(
                    f"decode batch {b:>3} context {point.context_tokens:>6}: {point.step_s * 1000:8.2f} ms/token"
                )
                points.append(point)
        return points

    async def max_num_seqs(self, probe: int, output_tokens: int = 64) -> int | None:
        """Send ``probe`` short requests at once and watch the running and waiting counts.

        The cap is the running count seen at least three times while requests were waiting (KV memory is not the
        limit for such short requests); None when requests never waited below ``probe`` running.
        """
        seen: dict[int, int] = {}
        tasks = [asyncio.ensure_future(self._send(8, output_tokens)) for _ in range(probe)]
        try:
            while not all(t.done() for t in tasks):
                state = await self.queue_state()
                if state is None:
                    break
                running, waiting = state
                if waiting > 0 and running > 0:
                    seen[int(running)] = seen.get(int(running), 0) + 1
                await self._clock.sleep(0.01)
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        plateaus = [r for r, n in seen.items() if n >= 3 and r < probe]
        return max(plateaus) if plateaus else None
