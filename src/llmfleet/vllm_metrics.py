"""vLLM's Prometheus metric names, defined once: the simulated engine exports them, the gateway's prober and the
autoscaler's sources read them.

Names are *family* names as vLLM declares them; a counter family ``F`` is exposed as the sample ``F_total`` and a
histogram ``H`` as ``H_bucket``/``H_sum``/``H_count`` (read them with :meth:`llmfleet.promtext.Scrape.counter` and
:meth:`llmfleet.promtext.HistogramTotals.of`). Every family carries the label ``model_name`` (and, since vLLM's v1
engine, ``engine``, one per data-parallel engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.promtext import Scrape

# Gauges (scheduler state, sampled at each scrape).
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
"""Requests in model execution batches."""
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
"""Requests waiting to be scheduled."""
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
"""KV-cache usage as a fraction in [0, 1] (despite the name), per engine."""
KV_CACHE_USAGE_LEGACY = "vllm:gpu_cache_usage_perc"
"""The same gauge's name before vLLM v0.10."""
KV_CACHE_USAGE_NAMES = (KV_CACHE_USAGE, KV_CACHE_USAGE_LEGACY)
"""Current name first, then the older one."""

# Counters (family names; the samples end in ``_total``).
REQUEST_SUCCESS = "vllm:request_success"
"""Finished requests, labelled ``finished_reason`` (stop, length, abort)."""
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"
NUM_PREEMPTIONS = "vllm:num_preemptions"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"
"""Prefix-cache lookups, in tokens."""
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"
"""Prefix-cache hits, in tokens."""

# Histograms (base names).
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"


@dataclass(frozen=True)
class EngineGauges:
    """The load gauges of one replica's page: what routing and the autoscaler read."""

    waiting: float = 0.0
    """``vllm:num_requests_waiting`` summed over engines."""
    running: float = 0.0
    """``vllm:num_requests_running`` summed over engines."""
    kv_cache_usage: float = 0.0
    """``vllm:kv_cache_usage_perc`` (or its pre-v0.10 name), the mean over engines: a fraction in [0, 1]."""


def read_gauges(page: Scrape) -> EngineGauges:
    """The load gauges of a vLLM ``/metrics`` page; absent gauges read as 0."""
    kv = next((v for name in KV_CACHE_USAGE_NAMES if (v := page.mean(name)) is not None), 0.0)
    return EngineGauges(
        waiting=page.total(NUM_REQUESTS_WAITING) or 0.0,
        running=page.total(NUM_REQUESTS_RUNNING) or 0.0,
        kv_cache_usage=kv,
    )


def read_prefix_cache(page: Scrape) -> tuple[float, float]:
    """``(hits, queries)`` of the prefix cache in tokens, summed over engines (0 when absent)."""
    return page.counter(PREFIX_CACHE_HITS) or 0.0, page.counter(PREFIX_CACHE_QUERIES) or 0.0
