"""The one Prometheus text reader: totals, histogram differences and quantiles (PromQL's interpolation), on pages
written by real prometheus_client registries and on a vLLM /metrics page as vLLM writes it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary, generate_latest

from llmfleet import vllm_metrics as vm
from llmfleet.engines.sim.metrics import EngineMetrics
from llmfleet.promtext import HistogramTotals, MetricsParseError, counter_since, parse

# A vLLM (v1 engine, two data-parallel engines) /metrics page, written out as vLLM exposes it: HELP/TYPE lines,
# process and GC metrics, info gauges with empty label values, counters as *_total, per-engine histograms with
# vLLM's buckets, a histogram whose name ends in _total, and a *_created series.
VLLM_PAGE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12109.0
python_gc_objects_collected_total{generation="1"} 1472.0
python_gc_objects_collected_total{generation="2"} 312.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.147483648e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",num_gpu_blocks="27975",prefix_caching_hash_algo="builtin"} 1.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 3.0
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 1.0
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 0.25
vllm:kv_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 0.15
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="0",running_lora_adapters="",waiting_lora_adapters=""} 1.7512e+09
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 0.0
vllm:num_preemptions_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 2.0
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 20480.0
vllm:prefix_cache_queries_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 8192.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 8192.0
vllm:prefix_cache_hits_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 1024.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 20480.0
vllm:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 8192.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 5120.0
vllm:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 2048.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",finished_reason="stop"} 30.0
vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",finished_reason="length"} 6.0
vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",finished_reason="abort"} 0.0
vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",finished_reason="stop"} 10.0
vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",finished_reason="length"} 4.0
vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",finished_reason="abort"} 0.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.001"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.005"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.01"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.02"} 2.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.04"} 10.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.06"} 20.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.08"} 28.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.1"} 32.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.25"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.5"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.75"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="1.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="2.5"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="5.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="7.5"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="10.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="20.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="40.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="80.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="160.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="640.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="2560.0"} 36.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="+Inf"} 36.0
vllm:time_to_first_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 36.0
vllm:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 2.1
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.001"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.005"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.01"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.02"} 0.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.04"} 1.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.06"} 4.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.08"} 8.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.1"} 12.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.25"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.5"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.75"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="1.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="2.5"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="5.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="7.5"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="10.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="20.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="40.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="80.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="160.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="640.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="2560.0"} 14.0
vllm:time_to_first_token_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="+Inf"} 14.0
vllm:time_to_first_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 14.0
vllm:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 1.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.3"} 0.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.5"} 0.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="0.8"} 3.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="1.0"} 9.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="1.5"} 20.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="2.0"} 30.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="2.5"} 34.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="5.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="10.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="15.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="20.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="30.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="40.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="50.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="60.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="120.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="240.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="480.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="960.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="1920.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="7680.0"} 36.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="+Inf"} 36.0
vllm:e2e_request_latency_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 36.0
vllm:e2e_request_latency_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 55.2
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.3"} 0.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.5"} 0.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="0.8"} 0.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="1.0"} 2.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="1.5"} 6.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="2.0"} 10.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="2.5"} 13.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="5.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="10.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="15.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="20.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="30.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="40.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="50.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="60.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="120.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="240.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="480.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="960.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="1920.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="7680.0"} 14.0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="+Inf"} 14.0
vllm:e2e_request_latency_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 14.0
vllm:e2e_request_latency_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 24.0
# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="1"} 40.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="8"} 120.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="16"} 130.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="32"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="64"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="128"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="256"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="512"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="1024"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="2048"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="4096"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="8192"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="16384"} 131.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",le="+Inf"} 131.0
vllm:iteration_tokens_total_count{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 131.0
vllm:iteration_tokens_total_sum{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"} 900.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="1"} 20.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="8"} 50.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="16"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="32"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="64"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="128"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="256"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="512"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="1024"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="2048"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="4096"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="8192"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="16384"} 52.0
vllm:iteration_tokens_total_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1",le="+Inf"} 52.0
vllm:iteration_tokens_total_count{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 52.0
vllm:iteration_tokens_total_sum{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 300.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0",finished_reason="stop"} 1.7512e+09
"""  # noqa: E501 (one line of vLLM's page is that long)

PAGE = """\
# TYPE req counter
req_total{status="200",route="c"} 27
req_total{status="503",route="c"} 3
# TYPE lat histogram
lat_bucket{route="a",le="0.1"} 4
lat_bucket{route="a",le="0.5"} 30
lat_bucket{route="a",le="1.0"} 50
lat_bucket{route="a",le="+Inf"} 50
lat_sum{route="a"} 20
lat_count{route="a"} 50
lat_bucket{route="b",le="0.1"} 6
lat_bucket{route="b",le="0.5"} 30
lat_bucket{route="b",le="1.0"} 50
lat_bucket{route="b",le="+Inf"} 50
lat_sum{route="b"} 20
lat_count{route="b"} 50
"""


def test_totals_filter_and_histogram_sums_over_label_sets() -> None:
    s = parse(PAGE)
    assert s.total("req_total") == 30
    assert s.total("req_total", lambda labels: labels["status"].startswith("5")) == 3
    assert s.total("missing") is None
    h = HistogramTotals.of(s, "lat")
    assert (h.count, h.sum, h.mean) == (100, 40, 0.4)
    assert h.buckets == {0.1: 10, 0.5: 60, 1.0: 100, math.inf: 100}


@pytest.mark.parametrize(
    ("q", "want"),
    [(0.5, 0.1 + 0.4 * 40 / 50), (0.95, 0.5 + 0.5 * 35 / 40), (1.0, 1.0), (0.05, 0.1 * 5 / 10), (0.0, 0.0)],
)
def test_quantile_interpolates_inside_the_bucket(q: float, want: float) -> None:
    h = HistogramTotals(40, 100, {0.1: 10, 0.5: 60, 1.0: 100, math.inf: 100})
    assert h.quantile(q) == pytest.approx(want)


def test_quantile_edge_cases() -> None:
    assert HistogramTotals().quantile(0.95) is None  # nothing observed
    assert HistogramTotals(50, 5, {0.1: 0, 1.0: 0, math.inf: 5}).quantile(0.5) == 1.0  # above the top bound
    assert HistogramTotals(1, 4, {0.1: 0, 0.5: 4, math.inf: 4}).quantile(0.0) == 0.1  # empty first buckets


def test_differences_between_scrapes_and_resets() -> None:
    before = HistogramTotals(10, 20, {0.5: 15, math.inf: 20})
    after = HistogramTotals(25, 30, {0.5: 16, math.inf: 30})
    d = after.since(before)
    assert (d.sum, d.count, d.buckets) == (15, 10, {0.5: 1, math.inf: 10})
    assert d.quantile(0.5) == 0.5  # 9 of the 10 new ones are above 0.5
    restarted = HistogramTotals(1, 2, {0.5: 2, math.inf: 2})
    assert restarted.since(before) == restarted
    assert [counter_since(*p) for p in [(30, 20), (5, 20), (None, 1), (3, None)]] == [10, 5, 0, 3]


def test_invalid_text_is_a_clear_error() -> None:
    with pytest.raises(MetricsParseError, match="invalid Prometheus text"):
        parse("garbage here {")


def test_a_vllm_page_load_counters_and_histograms() -> None:
    page = parse(VLLM_PAGE)
    assert vm.read_gauges(page) == vm.EngineGauges(waiting=1.0, running=5.0, kv_cache_usage=pytest.approx(0.2))
    assert page.counter(vm.REQUEST_SUCCESS) == 50
    assert page.counter(vm.REQUEST_SUCCESS, lambda labels: labels["finished_reason"] == "length") == 10
    assert page.counter(vm.PREFIX_CACHE_HITS) == 9216 and page.counter(vm.PREFIX_CACHE_QUERIES) == 28672
    assert page.counter(vm.NUM_PREEMPTIONS, lambda labels: labels["engine"] == "1") == 2
    assert page.counter("vllm:iteration_tokens") is None  # a histogram named *_total is not a counter
    assert HistogramTotals.of(page, "vllm:iteration_tokens_total").count == 183

    ttft = HistogramTotals.of(page, vm.TIME_TO_FIRST_TOKEN)
    assert (ttft.count, ttft.sum) == (50, pytest.approx(3.1))
    assert ttft.buckets[0.25] == 50 and ttft.buckets[0.08] == 36 and len(ttft.buckets) == 23
    assert ttft.quantile(0.95) == pytest.approx(0.1 + 0.15 * 3.5 / 6)
    assert ttft.quantile(0.5) == pytest.approx(0.06 + 0.02 * 1 / 12)
    one = HistogramTotals.of(page, vm.TIME_TO_FIRST_TOKEN, lambda labels: labels["engine"] == "1")
    assert (one.count, one.sum) == (14, 1.0)
    e2e = HistogramTotals.of(page, vm.E2E_REQUEST_LATENCY)
    assert e2e.mean == pytest.approx(79.2 / 50)
    assert e2e.quantile(0.95) == pytest.approx(2.5 + 2.5 * (47.5 - 47) / 3)

    info = page.values("vllm:lora_requests_info", lambda labels: labels["running_lora_adapters"] == "")
    assert info == [1.7512e09]
    assert {"process_resident_memory_bytes", "vllm:request_success_created"} <= page.names()


def test_kv_usage_under_the_pre_v0_10_name_and_the_current_one_first() -> None:
    legacy = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.4\nvllm:num_requests_running{model_name="m"} 2\n'
    assert vm.read_gauges(parse(legacy)) == vm.EngineGauges(running=2.0, kv_cache_usage=0.4)
    both = legacy + 'vllm:kv_cache_usage_perc{model_name="m"} 0.7\n'
    assert vm.read_gauges(parse(both)).kv_cache_usage == 0.7
    assert vm.read_gauges(parse("")) == vm.EngineGauges()  # nothing scraped yet: zeros


def test_a_real_registry_round_trips_through_the_reader() -> None:
    r = CollectorRegistry()
    c = Counter("app_requests", "Requests.", ["route", "status"], registry=r)
    g = Gauge("app_in_flight", "In flight.", ["replica"], registry=r)
    h = Histogram("app_latency_seconds", "Latency.", ["route"], buckets=(0.1, 0.5, 1.0), registry=r)
    sm = Summary("app_size_bytes", "Sizes.", registry=r)
    Info("app_build", "Build.", registry=r).info({"version": "1.2.3", "commit": 'a"b\\c'})
    Enum("app_mode", "Mode.", states=["up", "down"], registry=r).state("down")
    c.labels("chat", "200").inc(7)
    c.labels("chat", "503").inc(2)
    c.labels("completions", "200").inc(1)
    g.labels("http://10.0.0.1:8000").set(3)
    g.labels("http://[::1]:8001").set(4.5)
    for v in (0.05, 0.2, 0.3, 0.7, 2.0):
        h.labels("chat").observe(v)
    h.labels("completions").observe(0.05)
    sm.observe(10)
    sm.observe(30)

    page = parse(generate_latest(r))  # bytes, as served
    assert page.counter("app_requests") == 10
    assert page.counter("app_requests", lambda labels: labels["status"].startswith("5")) == 2
    assert page.total("app_in_flight") == 7.5 and page.mean("app_in_flight") == 3.75
    for name, labels in [("app_requests_total", {"route": "chat", "status": "200"}), ("app_size_bytes_sum", {})]:
        assert page.total(name, lambda got, want=labels: got == want) == r.get_sample_value(name, labels)
    lat = HistogramTotals.of(page, "app_latency_seconds")
    assert (lat.count, lat.buckets) == (6, {0.1: 2, 0.5: 4, 1.0: 5, math.inf: 6})
    assert lat.sum == pytest.approx(3.3)
    assert lat.quantile(0.5) == pytest.approx(0.1 + 0.4 * (3 - 2) / 2)
    assert page.values("app_build_info") == [1.0]
    assert page.total("app_mode", lambda labels: labels["app_mode"] == "down") == 1.0
    assert page.total("app_size_bytes_count") == 2


def test_the_simulated_engine_exports_every_name_the_readers_read() -> None:
    m = EngineMetrics("m")
    m.running.set(4)
    m.waiting.set(2)
    m.kv_usage.set(0.5)
    m.success("stop").inc(3)
    m.ttft.observe(0.03)
    m.e2e.observe(1.2)
    page = parse(generate_latest(m.registry))
    assert vm.read_gauges(page) == vm.EngineGauges(waiting=2.0, running=4.0, kv_cache_usage=0.5)
    assert page.counter(vm.REQUEST_SUCCESS) == 3
    assert HistogramTotals.of(page, vm.TIME_TO_FIRST_TOKEN).count == 1
    assert HistogramTotals.of(page, vm.E2E_REQUEST_LATENCY).sum == pytest.approx(1.2)
    for counter in (vm.PROMPT_TOKENS, vm.GENERATION_TOKENS, vm.NUM_PREEMPTIONS, vm.PREFIX_CACHE_HITS):
        assert page.counter(counter) == 0  # exported (bound to the engine's labels) before anything counts
    for hist in (vm.INTER_TOKEN_LATENCY, vm.REQUEST_QUEUE_TIME):
        assert f"{hist}_bucket" in page.names()
    assert page.values(vm.NUM_REQUESTS_RUNNING) == [4]
    labels = next(s.labels for s in page.samples if s.name == vm.NUM_REQUESTS_RUNNING)
    assert labels == {"model_name": "m", "engine": "0"}


def test_nan_samples_are_unknown_and_a_bad_bucket_bound_is_named() -> None:
    page = parse('g{a="1"} NaN\ng{a="2"} 3\n')
    assert (page.total("g"), page.mean("g"), page.values("g")) == (3, 3, [3])
    with pytest.raises(MetricsParseError, match="h_bucket: invalid le='x'"):
        parse('h_bucket{le="x"} 1\n').buckets("h")
    with pytest.raises(MetricsParseError, match="invalid Prometheus text"):
        parse(b"g 1\n\xff\xfe 2\n")


def test_prefix_cache_counters_sum_over_engines() -> None:
    hits, queries = vm.read_prefix_cache(parse(VLLM_PAGE))
    assert (hits, queries) == (8192.0 + 1024.0, 20480.0 + 8192.0)
    assert vm.read_prefix_cache(parse("")) == (0.0, 0.0)


REAL_VLLM_PAGE = (Path(__file__).parent / "data" / "vllm_0_32_metrics.txt").read_bytes()
"""A real vLLM 0.32 (CPU build) /metrics page: the demo model after three completions (~600 lines)."""


def test_parsing_only_some_samples_reads_them_as_the_full_parse_does() -> None:
    wanted = {vm.NUM_REQUESTS_RUNNING, vm.NUM_REQUESTS_WAITING, *vm.KV_CACHE_USAGE_NAMES, "vllm:lora_requests_info"}
    for page in (REAL_VLLM_PAGE, VLLM_PAGE.encode()):
        full, part = parse(page), parse(page, only=wanted)
        assert part.samples == tuple(s for s in full.samples if s.name in wanted)
        assert vm.read_gauges(part) == vm.read_gauges(full)
    assert len(parse(REAL_VLLM_PAGE).samples) > 20 * len(parse(REAL_VLLM_PAGE, only=wanted).samples)


def test_parsing_only_a_name_does_not_take_longer_names_it_prefixes_and_keeps_label_escapes() -> None:
    text = 'x 1\nx_total 2\nx{a="q\\"uote",b="}"} 3\nxy 4\n# HELP x help\n# TYPE x gauge\nx\t5\n'
    page = parse(text, only={"x"})
    assert page.values("x") == [1, 3, 5]
    assert [s.labels for s in page.samples][1] == {"a": 'q"uote', "b": "}"}
    assert page.names() == {"x"}
    with pytest.raises(MetricsParseError, match="invalid Prometheus text"):
        parse(b"x 1\nx{a= 2\n", only={"x"})
