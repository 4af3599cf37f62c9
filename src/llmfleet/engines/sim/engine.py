"""The simulated engine core: a step loop that runs the scheduler and paces each step by the performance model."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from llmfleet.clock import ScaledClock
from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.faults import FaultState
from llmfleet.engines.sim.gpu import SimGpus
from llmfleet.engines.sim.kvcache import KVCacheManager
from llmfleet.engines.sim.metrics import EngineMetrics
from llmfleet.engines.sim.scheduler import FinishReason, Scheduler, SimRequest
from llmfleet.engines.sim.tokenizer import TextGenerator, piece_id
from llmfleet.errors import ConfigError
from llmfleet.perfmodel.model import PerfModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEvent:
    """One generated token (``piece``); ``finish_reason`` is set on the request's last event (whose piece may be
    empty, e.g. when a stop string cut it)."""

    piece: str = ""
    finish_reason: str | None = None


@dataclass(eq=False)
class RequestHandle:
    """What a server handler holds for one request: its events and its state."""

    req: SimRequest
    stop: list[str]
    ignore_eos: bool
    generator: TextGenerator
    events: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    text: str = ""
    first_token_s: float | None = None
    last_token_s: float | None = None

    async def stream(self) -> AsyncIterator[TokenEvent]:
        """Tokens as they are generated, ending with the finish event."""
        while True:
            ev = await self.events.get()
            yield ev
            if ev.finish_reason is not None:
                return


class SimEngine:
    """Continuous batching over a KV-block-limited batch, with step times from :class:`PerfModel`."""

    def __init__(
        self, config: SimEngineConfig, perf: PerfModel, clock: ScaledClock, metrics: EngineMetrics, faults: FaultState
    ) -> None:
        self.config = config
        self.perf = perf
        self.clock = clock
        self.metrics = metrics
        self.faults = faults
        capacity_blocks = config.num_gpu_blocks_override or perf.kv_capacity_blocks(
            config.gpu_memory_utilization, config.block_size
        )
        if capacity_blocks < 1:
            raise ConfigError(
                f"engine: {perf.model.name} ({perf.precision}) does not fit on {perf.tp} x {perf.gpu.name} at "
                f"gpu_memory_utilization {config.gpu_memory_utilization}: no memory left for the KV cache"
            )
        capacity_tokens = capacity_blocks * config.block_size
        self.max_model_len = config.max_model_len or min(perf.model.max_context, capacity_tokens)
        if self.max_model_len > capacity_tokens:
            raise ConfigError(
                f"engine.max_model_len: {self.max_model_len} exceeds the KV cache capacity of {capacity_tokens} tokens"
            )
        self.kv = KVCacheManager(capacity_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, config.max_num_seqs, config.max_num_batched_tokens)
        self.gpus = SimGpus(perf, config.block_size, clock.now())
        self.gpus.set_leak(faults.config.memory_leak_mib_per_min, clock.now())
        metrics.watch_gpus(perf.gpu.name, perf.tp, self._gpu_sample)
        metrics.set_cache_config(
            {
                "block_size": str(config.block_size),
                "cache_dtype": "auto",
                "enable_prefix_caching": str(config.enable_prefix_caching),
                "gpu_memory_utilization": str(config.gpu_memory_utilization),
                "num_gpu_blocks": str(capacity_blocks),
                "num_gpu_blocks_override": str(config.num_gpu_blocks_override),
            }
        )
        self._handles: dict[int, RequestHandle] = {}
        self._ids = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sim-engine-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for handle in list(self._handles.values()):
            self._finish(handle, FinishReason.ABORT)

    # ---- requests --------------------------------------------------------------------------------------
    def submit(
        self, prompt_ids: list[int], max_tokens: int, stop: list[str], ignore_eos: bool, text_salt: int = 0
    ) -> RequestHandle:
        """Queue a request; ``text_salt`` varies the generated text (a LoRA adapter's output differs from the
        base model's)."""
        req = SimRequest(
            request_id=str(next(self._ids)), prompt_ids=prompt_ids, max_tokens=max_tokens, arrival_s=self.clock.now()
        )
        handle = RequestHandle(req, stop, ignore_eos, TextGenerator(self.config.seed + text_salt, prompt_ids))
        self._handles[id(req)] = handle
        self.scheduler.add(req)
        self._wakeup.set()
        return handle

    def abort(self, handle: RequestHandle) -> None:
        """Abort a request (client went away); frees its KV blocks at once."""
        if handle.req.finished is None:
            self.scheduler.abort(handle.req)
            self._handles.pop(id(handle.req), None)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def _gpu_sample(self) -> tuple[float, float, float]:
        """(used MiB, free MiB, utilisation %) of each GPU now: what ``/metrics`` exports with DCGM's names."""
        s = self.gpus.sample(self.kv.num_blocks - self.kv.num_free_blocks, self.clock.now())
        return s.used_mib, s.free_mib, s.util_pct

    # ---- the step loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        deadline = self.clock.now()
        while True:
            if not self.scheduler.has_work():
                self._update_gauges()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            now = self.clock.now()
            deadline = max(deadline, now)
            plan = self.scheduler.schedule(deadline)
            if plan.preempted:
                self.metrics.preemptions.inc(len(plan.preempted))
            if plan.prefix_queries:
                self.metrics.prefix_queries.inc(plan.prefix_queries)
                self.metrics.prefix_hits.inc(plan.prefix_hits)
            if plan.empty:
                if plan.preempted:
                    continue
                # Nothing fits even alone: should be prevented by max_model_len checks; fail the head request.
                head = self.scheduler.waiting[0]
                self._finish(self._handles[id(head)], FinishReason.ABORT)
                continue
            start = deadline
            deadline += self.perf.step_time_s(plan.work) * self.faults.step_time_factor(deadline)
            self.gpus.record_busy(start, deadline)
            self.metrics.iteration_tokens.observe(sum(n for _, n in plan.scheduled))
            self._update_gauges()
            await self.clock.sleep_until(deadline)
            self.metrics.step_lateness.observe(max(0.0, self.clock.now() - deadline))
            for req in self.scheduler.complete(plan):
                self._emit(self._handles[id(req)], deadline)
            self._update_gauges()

    def _emit(self, handle: RequestHandle, now_s: float) -> None:
        req = handle.req
        piece = handle.generator.next_piece()
        first = not req.output_ids
        req.output_ids.append(piece_id(piece))
        m = self.metrics
        m.generation_tokens.inc()
        if first:
            handle.first_token_s = now_s
            m.ttft.observe(now_s - req.arrival_s)
            m.prompt_tokens.inc(len(req.prompt_ids))
            m.queue_time.observe((req.first_scheduled_s or now_s) - req.arrival_s)
        else:
            m.itl.observe(now_s - (handle.last_token_s or now_s))
        handle.last_token_s = now_s
        handle.text += piece
        finish: FinishReason | None = None
        for s in handle.stop:
            cut = handle.text.find(s)
            if cut >= 0:
                piece = piece[: max(0, len(piece) - (len(handle.text) - cut))]
                handle.text = handle.text[:cut]
                finish = FinishReason.STOP
                break
        if finish is None and len(req.output_ids) >= req.max_tokens:
            finish = FinishReason.LENGTH
        if finish is None:
            handle.events.put_nowait(TokenEvent(piece))
            return
        m.e2e.observe(now_s - req.arrival_s)
        m.success(finish.value).inc()
        self._observe_finished(handle, now_s)
        self._finish(handle, finish, piece)

    def _observe_finished(self, handle: RequestHandle, now_s: float) -> None:
        """vLLM's per-request histograms, recorded when a request finishes (prefill = scheduled to first token)."""
        req, m = handle.req, self.metrics
        scheduled = req.first_scheduled_s if req.first_scheduled_s is not None else req.arrival_s
        first = handle.first_token_s if handle.first_token_s is not None else now_s
        m.prefill_time.observe(first - scheduled)
        m.decode_time.observe(now_s - first)
        m.inference_time.observe(now_s - scheduled)
        m.request_prompt_tokens.observe(len(req.prompt_ids))
        m.request_generation_tokens.observe(len(req.output_ids))
        m.request_max_num_generation_tokens.observe(req.max_tokens)

    def _finish(self, handle: RequestHandle, reason: FinishReason, piece: str = "") -> None:
        self.scheduler.finish(handle.req, reason)
        self._handles.pop(id(handle.req), None)
        handle.events.put_nowait(TokenEvent(piece, reason.value))

    def _update_gauges(self) -> None:
        m = self.metrics
        m.running.set(len(self.scheduler.running))
        m.waiting.set(len(self.scheduler.waiting))
        m.kv_usage.set(self.kv.usage)
