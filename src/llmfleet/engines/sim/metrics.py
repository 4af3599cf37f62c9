"""The simulated engine's Prometheus metrics, with vLLM's own names, labels and meanings."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmfleet import vllm_metrics as vm

_LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
_ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


_ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def build_1_2_5_buckets(max_value: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value``: vLLM's buckets for token-count histograms."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(out)
            out.append(value)
        exponent += 1


class EngineMetrics:
    """One registry per engine instance (no process-wide state), exposed at ``/metrics``."""

    def __init__(self, model_name: str, max_model_len: int = 131072) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self._labels = {"model_name": model_name, "engine": "0"}
        r = self.registry

        # Children bound to this engine's labels, so the step loop pays no label lookup per update.
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r).labels(**self._labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(**self._labels)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(**self._labels)

        self.running = gauge(vm.NUM_REQUESTS_RUNNING, "Number of requests in model execution batches.")
        self.waiting = gauge(vm.NUM_REQUESTS_WAITING, "Number of requests waiting to be processed.")
        self.kv_usage = gauge(vm.KV_CACHE_USAGE, "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter(vm.PREFIX_CACHE_QUERIES, "Prefix cache queries, in terms of tokens.")
        self.prefix_hits = counter(vm.PREFIX_CACHE_HITS, "Prefix cache hits, in terms of tokens.")
        self.prompt_tokens = counter(vm.PROMPT_TOKENS, "Number of prefill tokens processed.")
        self.generation_tokens = counter(vm.GENERATION_TOKENS, "Number of generation tokens processed.")
        self.preemptions = counter(vm.NUM_PREEMPTIONS, "Cumulative number of preemptions from the engine.")
        self._success = Counter(
            vm.REQUEST_SUCCESS,
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self.ttft = hist(vm.TIME_TO_FIRST_TOKEN, "Histogram of time to first token in seconds.", _LATENCY_BUCKETS)
        self.itl = hist(vm.INTER_TOKEN_LATENCY, "Histogram of inter-token latency in seconds.", _ITL_BUCKETS)
        self.e2e = hist(vm.E2E_REQUEST_LATENCY, "Histogram of e2e request latency in seconds.", _E2E_BUCKETS)
        self.queue_time = hist(
            vm.REQUEST_QUEUE_TIME, "Histogram of time spent in WAITING phase for request.", _E2E_BUCKETS
        )
        self.step_lateness = Histogram(
            "llmfleet_sim_step_lateness_seconds",
            "How far (simulated seconds) each engine step ended after its modelled deadline: the pace kept.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )

        # Per-request families observed when a request finishes, and per-step token counts (vLLM v1 names).
        tokens = build_1_2_5_buckets(max_model_len)
        self.request_prompt_tokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.request_generation_tokens = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.request_max_num_generation_tokens = hist(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self.prefill_time = hist(
            "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", _E2E_BUCKETS
        )
        self.decode_time = hist(
            "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", _E2E_BUCKETS
        )
        self.inference_time = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            _E2E_BUCKETS,
        )
        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", _ITERATION_TOKEN_BUCKETS
        )

    def success(self, finished_reason: str) -> Counter:
        """``vllm:request_success_total`` for one finish reason."""
        return self._success.labels(**self._labels, finished_reason=finished_reason)

    def set_cache_config(self, info: Mapping[str, str]) -> None:
        """``vllm:cache_config_info``: the KV cache's settings as labels, value 1 (as vLLM's, no ``model_name``)."""
        g = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            [*info, "engine"],
            registry=self.registry,
        )
        g.labels(**info, engine=self._labels["engine"]).set(1)

    def watch_gpus(self, gpu_name: str, count: int, sample: Callable[[], tuple[float, float, float]]) -> None:
        """Export ``count`` GPUs with the DCGM exporter's names; ``sample()`` gives (used MiB, free MiB, util %)
        per GPU at scrape time."""
        self.registry.register(_DcgmCollector(gpu_name, count, sample))


class _DcgmCollector(Collector):
    """``DCGM_FI_DEV_FB_USED``/``FB_FREE`` (MiB) and ``DCGM_FI_DEV_GPU_UTIL`` (%), read at scrape time."""

    def __init__(self, gpu_name: str, count: int, sample: Callable[[], tuple[float, float, float]]) -> None:
        self._gpu_name = gpu_name
        self._count = count
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        used, free, util = self._sample()
        labels = ["gpu", "device", "modelName"]
        families = (
            GaugeMetricFamily("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels=labels),
            GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=labels),
            GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=labels),
        )
        for i in range(self._count):
            values = [str(i), f"nvidia{i}", self._gpu_name]
            for fam, v in zip(families, (used, free, util), strict=True):
                fam.add_metric(values, v)
        yield from families
