"""Roofline performance model of one vLLM replica: memory, KV capacity and step times.

A scheduler step processes, for each scheduled sequence, ``new_tokens`` (1 for a decode, a chunk for a prefill)
on top of ``context_tokens`` already in the KV cache. Its time is

    fixed overhead + per-sequence overhead x sequences + TP communication
    + max(memory time, compute time)

memory time  = (weights read + KV read/written) / (HBM bandwidth x bandwidth efficiency)
compute time = (2 x active params x tokens + attention FLOPs) / (peak FLOPS x MFU)

The efficiency factors are calibrated (:mod:`llmfleet.perfmodel.calibrate`) against published figures; the
defaults below reproduce the anchors in docs/perfmodel.md within 25%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llmfleet.errors import CatalogError
from llmfleet.perfmodel.catalog import GPU, Model, Precision

GIB = 2**30


@dataclass(frozen=True)
class Efficiency:
    """Calibrated factors that turn peak hardware figures into achieved ones."""

    bandwidth: float = 0.90
    """Fraction of peak HBM bandwidth achieved by weight and KV reads."""
    mfu: float = 0.35
    """Fraction of peak dense FLOPS achieved by the model's matmuls."""
    step_overhead_s: float = 0.0004
    """Fixed CPU/launch cost per scheduler step (scheduling, sampling, kernel launches)."""
    per_seq_overhead_s: float = 0.00002
    """Extra CPU cost per scheduled sequence per step (input prep, detokenize, output processing)."""
    tp_comm_s_per_layer: float = 0.000012
    """All-reduce latency per layer when tensor-parallel degree > 1 (two all-reduces per layer)."""
    activation_gib: float = 2.0
    """Memory for activations and the sampler, per GPU."""
    runtime_overhead_gib: float = 1.5
    """CUDA context, graphs and allocator slack, per GPU."""


@dataclass(frozen=True)
class SeqWork:
    """One sequence's share of a step: ``new_tokens`` computed on top of ``context_tokens`` cached."""

    new_tokens: int
    context_tokens: int


@dataclass(frozen=True)
class PerfModel:
    """Step times and memory of ``model`` on ``tp`` x ``gpu`` at ``precision``."""

    gpu: GPU
    model: Model
    precision: Precision = "bf16"
    kv_precision: str = "bf16"
    tp: int = 1
    eff: Efficiency = field(default_factory=Efficiency)

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise CatalogError("tensor_parallel_size must be >= 1")
        if self.model.heads % self.tp != 0:
            raise CatalogError(
                f"tensor_parallel_size {self.tp} does not divide {self.model.name}'s {self.model.heads} heads"
            )

    def with_efficiency(self, eff: Efficiency) -> PerfModel:
        return replace(self, eff=eff)

    # ---- memory ---------------------------------------------------------------------------------------------
    @property
    def weight_bytes(self) -> float:
        """All weights of the model (every expert for MoE)."""
        return self.model.weight_bytes(self.precision)

    @property
    def weight_bytes_per_gpu(self) -> float:
        return self.weight_bytes / self.tp

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes per token for the whole model (sum over TP ranks)."""
        return self.model.kv_bytes_per_token(self.kv_precision)

    def kv_budget_bytes_per_gpu(self, gpu_memory_utilization: float = 0.9) -> float:
        """Memory left for KV cache on each GPU (negative: the model does not fit)."""
        usable = self.gpu.memory_bytes * gpu_memory_utilization
        overhead = (self.eff.activation_gib + self.eff.runtime_overhead_gib) * GIB
        return usable - self.weight_bytes_per_gpu - overhead

    def kv_capacity_tokens(self, gpu_memory_utilization: float = 0.9) -> int:
        """Tokens of KV cache the replica holds (0 when the weights do not fit)."""
        budget = self.kv_budget_bytes_per_gpu(gpu_memory_utilization)
        if budget <= 0:
            return 0
        return int(budget / (self.kv_bytes_per_token / self.tp))

    def kv_capacity_blocks(self, gpu_memory_utilization: float = 0.9, block_size: int = 16) -> int:
        return self.kv_capacity_tokens(gpu_memory_utilization) // block_size

    # ---- time -----------------------------------------------------------------------------------------------
    def _weights_read_bytes(self, num_tokens: int) -> float:
        """Weight bytes read in one step: dense models read all; MoE reads the experts the batch touches."""
        moe = self.model.moe
        if moe is None or num_tokens <= 0:
            return self.weight_bytes
        per_param = self.weight_bytes / (self.model.params_total_b * 1e9)
        active = self.model.params_active_b * 1e9 * per_param
        expert_pool = self.weight_bytes - active
        p_untouched = (1.0 - moe.experts_per_token / moe.num_experts) ** max(0, num_tokens - 1)
        return active + expert_pool * (1.0 - p_untouched)

    def _attention_flops(self, work: SeqWork) -> float:
        # QK^T and PV: 2 matmuls x 2 FLOP per MAC over (new x average attended context) per layer.
        attended = work.context_tokens + (work.new_tokens + 1) / 2
        return 4.0 * self.model.layers * self.model.heads * self.model.head_dim * work.new_tokens * attended

    def step_time_s(self, batch: Sequence[SeqWork]) -> float:
        """Duration of one scheduler step that processes ``batch``."""
        if not batch:
            return 0.0
        tokens = sum(w.new_tokens for w in batch)
        kv_tokens = sum(w.context_tokens + w.new_tokens for w in batch)
        mem_bytes = self._weights_read_bytes(tokens) + kv_tokens * self.kv_bytes_per_token
        mem_s = mem_bytes / self.tp / (self.gpu.bandwidth_bytes_per_s * self.eff.bandwidth)
        flops = 2.0 * self.model.params_active_b * 1e9 * tokens + sum(self._attention_flops(w) for w in batch)
        compute_s = flops / self.tp / (self.gpu.flops(self.precision) * self.eff.mfu)
        comm_s = 2 * self.model.layers * self.eff.tp_comm_s_per_layer if self.tp > 1 else 0.0
        overhead_s = self.eff.step_overhead_s + self.eff.per_seq_overhead_s * len(batch)
        return overhead_s + comm_s + max(mem_s, compute_s)

    def decode_step_time_s(self, context_lens: Sequence[int]) -> float:
        """One decode step for sequences with the given context lengths."""
        return self.step_time_s([SeqWork(1, c) for c in context_lens])

    def prefill_time_s(self, prompt_tokens: int, chunk_tokens: int = 8192) -> float:
        """Prefill of a lone prompt, in chunks of ``chunk_tokens`` (vLLM's chunked prefill)."""
        total, done = 0.0, 0
        while done < prompt_tokens:
            n = min(chunk_tokens, prompt_tokens - done)
            total += self.step_time_s([SeqWork(n, done)])
            done += n
        return total

    def steady_state(self, concurrency: int, input_tokens: int, output_tokens: int) -> SteadyState:
        """Throughput and latency with ``concurrency`` sequences always in flight (a closed loop).

        Each step decodes every running sequence once and, on average, prefills the prompts of the sequences that
        replace the ones finishing (``concurrency / output_tokens`` per step), as vLLM's chunked prefill mixes them.
        """
        if concurrency < 1 or input_tokens < 1 or output_tokens < 1:
            raise ValueError("concurrency, input_tokens and output_tokens must be >= 1")
        ctx = input_tokens + output_tokens // 2
        prefill_tokens = max(1, round(concurrency * input_tokens / output_tokens))
        step_s = self.step_time_s([*[SeqWork(1, ctx)] * concurrency, SeqWork(prefill_tokens, 0)])
        tpot_s = step_s
        ttft_s = self.prefill_time_s(input_tokens) + step_s
        return SteadyState(
            concurrency=concurrency,
            step_s=step_s,
            output_tokens_per_s=concurrency / step_s,
            ttft_s=ttft_s,
            tpot_s=tpot_s,
            e2e_s=ttft_s + tpot_s * (output_tokens - 1),
        )

    def max_concurrency(
        self,
        input_tokens: int,
        output_tokens: int,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int = 256,
    ) -> int:
        """Sequences that fit in KV cache at once (each at its full length), capped at ``max_num_seqs``."""
        per_seq = input_tokens + output_tokens
        return max(0, min(max_num_seqs, self.kv_capacity_tokens(gpu_memory_utilization) // per_seq))


@dataclass(frozen=True)
class SteadyState:
    """Closed-loop operating point of one replica."""

    concurrency: int
    step_s: float
    output_tokens_per_s: float
    ttft_s: float
    tpot_s: float
    e2e_s: float

    @property
    def requests_per_s(self) -> float:
        return self.concurrency / self.e2e_s if self.e2e_s > 0 else math.inf
