"""The simulated engine's Prometheus metrics, with vLLM's own names, labels and meanings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmfleet.engines import vllm_metrics as vm

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


class EngineMetrics:
    """One registry per engine instance (no process-wide state), exposed at ``/metrics``."""

    def __init__(self, model_name: str) -> None:
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

    def success(self, finished_reason: str) -> Counter:
        """``vllm:request_success_total`` for one finish reason."""
        return self._success.labels(**self._labels, finished_reason=finished_reason)
