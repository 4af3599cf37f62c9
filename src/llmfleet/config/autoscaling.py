"""The ``autoscaler`` section and the Kubernetes provider's ``kubernetes`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmfleet.config._base import _Section

AutoscalePolicyName = Literal["threshold", "target_ratio", "queue", "model"]


class AutoscalerConfig(_Section):
    """The controller (section ``autoscaler``). Times are in the controller's clock (simulated with --time-scale)."""

    enabled: bool = Field(True, description="Run the controller in `llmfleet up`.")
    min_replicas: int = Field(1, ge=0, description="Never fewer replicas.")
    max_replicas: int = Field(8, ge=1, description="Never more replicas.")
    interval_s: float = Field(15.0, gt=0, description="Seconds between decisions (HPA: 15 s).")
    window_s: float = Field(30.0, gt=0, description="Signals are averaged over this window.")
    policies: list[AutoscalePolicyName] = Field(
        default_factory=lambda: list[AutoscalePolicyName](["queue"]),
        description="Proposals from these; the largest wins (default: the simulated-day search, docs/simulator.md).",
    )
    latency_up_ms: float = Field(500.0, gt=0, description="threshold: scale up when average latency is above.")
    latency_down_ms: float = Field(250.0, gt=0, description="threshold: scale down when average latency is below.")
    latency_signal: Literal["e2e", "ttft", "e2e_p95", "ttft_p95"] = Field(
        "e2e", description="threshold: which latency to watch (mean, or the p95 of each interval)."
    )
    target_running_per_replica: float = Field(32.0, gt=0, description="target_ratio: running requests per replica.")
    target_queue_per_replica: float = Field(
        8.0,
        gt=0,
        description=(
            "queue: outstanding (waiting + running) requests per replica (KEDA). 8: a 3x burst (8 x 3 = 24) stays"
            " under the ~30 a replica holds within the SLO while new replicas start (docs/simulator.md, 24 h day)."
        ),
    )
    tolerance: float = Field(0.1, ge=0, lt=1, description="Ignore proposals within this ratio of current (HPA).")
    scale_up_stabilization_s: float = Field(30.0, ge=0, description="A breach must persist this long to scale up.")
    scale_down_stabilization_s: float = Field(
        300.0, ge=0, description="... and this long to scale down (long: the fleet sheds replicas slowly, no flapping)."
    )
    cooldown_s: float = Field(
        60.0,
        ge=0,
        description="No scale-down within this long of any scaling (seed: 3 min; 1 min sheds a burst's fleet).",
    )
    max_scale_up_step: int = Field(4, ge=1, description="At most this many replicas added per decision ...")
    max_scale_up_ratio: float = Field(1.0, gt=0, description="... or this fraction of current, whichever is more.")
    max_scale_down_step: int = Field(
        4, ge=1, description="At most this many replicas removed per decision (4: 40 -> 10 in ~8 min, not 1.8 h)."
    )
    panic_window_s: float = Field(6.0, gt=0, description="KPA panic: short window for bursts.")
    panic_threshold: float = Field(2.0, gt=1, description="Panic when the short-window proposal is this x current.")
    spare_capacity: float = Field(0.4, ge=0, le=2, description="model: headroom over the observed load (30-50%).")
    model_concurrency_per_replica: int = Field(
        64, ge=1, description="model: concurrency per replica at which the performance model rates throughput."
    )
    model_input_tokens: int = Field(512, ge=1, description="model: typical prompt length of the workload.")
    model_output_tokens: int = Field(256, ge=1, description="model: typical output length of the workload.")
    drain_timeout_s: float = Field(60.0, gt=0, description="Scale-down waits this long for in-flight requests.")

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalerConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        if self.latency_down_ms >= self.latency_up_ms:
            raise ValueError(
                f"latency_down_ms ({self.latency_down_ms:g}) must be < latency_up_ms ({self.latency_up_ms:g})"
            )
        return self


class KubernetesProviderConfig(_Section):
    """The Kubernetes provider (section ``kubernetes``): one Deployment behind one Service."""

    namespace: str = Field("default", min_length=1, description="Namespace of the Deployment and Service.")
    deployment: str = Field(min_length=1, description="Deployment whose scale subresource is patched.")
    service: str = Field(min_length=1, description="Service whose EndpointSlices list the replicas.")
    port_name: str | None = Field(None, description="EndpointSlice port name to use (default: the first port).")
    scheme: Literal["http", "https"] = Field("http", description="Scheme of the replica URLs.")
    watch_timeout_s: int = Field(300, ge=1, description="Server-side timeout of one EndpointSlice watch.")
    api_url: str | None = Field(
        None, description="API server URL without credentials (e.g. `kubectl proxy` at http://127.0.0.1:8001)."
    )
    kubeconfig: str | None = Field(None, description="Kubeconfig file (default: in-cluster, else ~/.kube/config).")
    context: str | None = Field(None, description="Kubeconfig context (default: the current one).")
    request_timeout_s: float = Field(10.0, gt=0, description="Timeout of one scale/list call.")
    pool: str = Field(
        "default", min_length=1, description="Pool of these replicas (slice label llmfleet.io/pool wins)."
    )
    capacity_type: Literal["on-demand", "spot", "reserved"] = Field(
        "on-demand", description="Capacity type of these replicas (slice label llmfleet.io/capacity-type wins)."
    )
