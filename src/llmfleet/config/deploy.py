"""The ``deploy`` section: what `llmfleet render k8s|nginx|haproxy` needs beyond the fleet itself."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmfleet.config._base import _Section

CapacityType = Literal["on-demand", "spot", "reserved"]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class TolerationConfig(_Section):
    """A Kubernetes toleration, as in ``kubectl explain pod.spec.tolerations``."""

    key: str | None = Field(None, description="Taint key (unset with operator Exists: tolerate every taint).")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Equal compares value; Exists ignores it.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate (unset: all)."
    )


class DeployImagesConfig(_Section):
    """Container images (section ``deploy.images``); pin tags so a re-apply never changes the engine silently."""

    vllm: str | None = Field(None, description="vLLM OpenAI server image, e.g. vllm/vllm-openai:v0.10.1 (required).")
    llmfleet: str | None = Field(
        None, description="llmfleet image built from the repository's Dockerfile: gateway, controller (required)."
    )
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field("IfNotPresent", description="imagePullPolicy.")
    pull_secrets: list[str] = Field(default_factory=list, description="Names of image pull Secrets.")


class ModelCacheConfig(_Section):
    """Where replicas find model weights (section ``deploy.model_cache``); also ``HF_HOME`` for downloads."""

    kind: Literal["pvc", "hostPath"] = Field("pvc", description="A PersistentVolumeClaim or a node directory.")
    mount_path: str = Field("/models", pattern=r"^/", description="Mount point in the engine container.")
    claim_name: str = Field("model-cache", pattern=_DNS_LABEL, description="pvc: the claim's name.")
    create_claim: bool = Field(True, description="pvc: render the claim (false: it exists already).")
    size: str = Field("500Gi", pattern=_QUANTITY, description="pvc: requested size.")
    storage_class: str | None = Field(None, description="pvc: storageClassName (unset: the cluster default).")
    access_mode: Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"] = Field(
        "ReadWriteMany", description="pvc: replicas on several nodes need ReadWriteMany or ReadOnlyMany."
    )
    host_path: str = Field("/mnt/models", pattern=r"^/", description="hostPath: directory on each GPU node.")
    read_only: bool = Field(False, description="Mount read-only (weights placed beforehand).")


class DeployPoolConfig(_Section):
    """One engine pool: a Deployment and a Service of identical replicas (``deploy.pools[]``)."""

    name: str = Field(pattern=_DNS_LABEL, max_length=40, description="Pool name (label llmfleet.io/pool).")
    replicas: int = Field(1, ge=0, description="Replicas when autoscaling is off.")
    min_replicas: int | None = Field(None, ge=0, description="Autoscaling floor (default: replicas).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling ceiling (default: the floor).")
    gpu_type: str | None = Field(
        None, description="Node label value of deploy.gpu_type_label, e.g. NVIDIA-H100-80GB-HBM3 (unset: any GPU)."
    )
    gpus_per_replica: int | None = Field(None, ge=1, description="Tensor parallel size (default: vllm's).")
    capacity_type: CapacityType = Field("on-demand", description="Node capacity (label llmfleet.io/capacity-type).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels to require.")
    tolerations: list[TolerationConfig] = Field(default_factory=list, description="Extra tolerations.")
    cpu: str = Field("8", pattern=_QUANTITY, description="CPU request per replica.")
    memory: str = Field("64Gi", pattern=_QUANTITY, description="Memory request and limit per replica.")
    extra_args: list[str] = Field(default_factory=list, description="Appended to this pool's vLLM arguments.")

    @model_validator(mode="after")
    def _bounds(self) -> DeployPoolConfig:
        if self.min_replicas is not None and self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class GatewayDeployConfig(_Section):
    """The gateway Deployment (section ``deploy.gateway``)."""

    replicas: int = Field(2, ge=1, description="Gateway pods (2+ so one can go while the other serves).")
    anti_affinity: Literal["preferred", "required"] = Field(
        "preferred", description="Spread gateway pods over nodes: required refuses to co-locate them."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Service type.")
    cpu: str = Field("2", pattern=_QUANTITY, description="CPU request per gateway pod.")
    memory: str = Field("1Gi", pattern=_QUANTITY, description="Memory request and limit per gateway pod.")


class AutoscalingDeployConfig(_Section):
    """Who scales the pools on Kubernetes (section ``deploy.autoscaling``)."""

    mode: Literal["controller", "hpa", "keda", "none"] = Field(
        "controller",
        description="llmfleet's controller (the autoscaler section), an HPA on a custom metric, a KEDA "
        "ScaledObject with a Prometheus trigger, or fixed replicas.",
    )
    controller_replicas: int = Field(1, ge=1, description="controller: pods per pool (more than 1 elect a leader).")
    hpa_metric: str = Field(
        "vllm_requests_outstanding",
        min_length=1,
        description="hpa: per-pod custom metric (waiting + running requests) served by prometheus-adapter.",
    )
    prometheus_url: str = Field(
        "http://prometheus-operated.monitoring.svc:9090",
        pattern=r"^https?://",
        description="keda: Prometheus the trigger queries.",
    )


class MonitoringDeployConfig(_Section):
    """Prometheus Operator scrape objects (section ``deploy.monitoring``)."""

    kind: Literal["servicemonitor", "podmonitor", "none"] = Field("servicemonitor", description="What to render.")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "prometheus"},
        description="Labels the Prometheus resource selects monitors by (kube-prometheus-stack: release).",
    )
    interval_s: int = Field(15, ge=1, description="Scrape interval.")


class L7Config(_Section):
    """The L7 load balancer tier in front of the gateways (section ``deploy.l7``; `render nginx|haproxy`)."""

    gateways: list[str] = Field(
        default_factory=list, description="Gateway addresses, host:port (two or more for redundancy; required)."
    )
    listen_host: str = Field("0.0.0.0", min_length=1, description="Address the load balancer binds.")
    listen_port: int = Field(80, ge=1, le=65535, description="Port clients connect to.")
    max_fails: int = Field(3, ge=1, description="Passive health: failed attempts that take a gateway out ...")
    fail_timeout_s: int = Field(10, ge=1, description="... for this long (nginx), or the haproxy check interval.")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect to a gateway.")
    stream_timeout_s: int = Field(
        600, ge=1, description="Longest silence while reading a response or sending a request (long streams)."
    )
    max_body_bytes: int | None = Field(None, ge=1024, description="Largest request body (default: gateway's).")
    keepalive: int = Field(64, ge=0, description="Idle keep-alive connections kept open to the gateways.")
    max_connections: int = Field(4096, ge=16, description="Connections per nginx worker / haproxy maxconn.")

    @model_validator(mode="after")
    def _addresses(self) -> L7Config:
        for i, g in enumerate(self.gateways):
            host, _, port = g.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"gateways[{i}]: {g!r} is not host:port")
        return self


class DeployConfig(_Section):
    """What running the fleet on Kubernetes needs beyond the engine settings (section ``deploy``)."""

    name: str = Field("llmfleet", pattern=_DNS_LABEL, max_length=30, description="Prefix of every object name.")
    namespace: str = Field("llmfleet", pattern=_DNS_LABEL, description="Namespace of every object.")
    create_namespace: bool = Field(True, description="Render the Namespace object.")
    images: DeployImagesConfig = Field(default_factory=DeployImagesConfig)
    pools: list[DeployPoolConfig] = Field(
        default_factory=list, description="Engine pools (default: one pool `default` of fleet.replicas replicas)."
    )
    engine_port: int = Field(8000, ge=1, le=65535, description="Port vLLM listens on in its pod.")
    gpu_resource: str = Field("nvidia.com/gpu", min_length=1, description="Extended resource of one GPU.")
    gpu_type_label: str = Field(
        "nvidia.com/gpu.product", min_length=1, description="Node label naming the GPU model (GPU feature discovery)."
    )
    capacity_type_label: str | None = Field(
        "karpenter.sh/capacity-type",
        description="Node label whose value is the capacity type (on-demand, spot, reserved); unset: none.",
    )
    capacity_tolerations: dict[CapacityType, list[TolerationConfig]] = Field(
        default_factory=dict, description="Tolerations per capacity type (e.g. the taint of spot nodes)."
    )
    gpu_tolerations: list[TolerationConfig] = Field(
        default_factory=lambda: [TolerationConfig(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="Tolerations every engine pod gets (GPU nodes are commonly tainted).",
    )
    shm_size: str = Field("16Gi", pattern=_QUANTITY, description="Size of /dev/shm (memory-backed; NCCL with TP).")
    startup_timeout_s: int = Field(1800, ge=60, description="How long a replica may take to load its model.")
    termination_grace_s: int = Field(120, ge=1, description="Time an engine pod has to finish streams on stop.")
    hf_token_secret: str | None = Field(None, description="Secret with key HF_TOKEN for gated models (optional).")
    engine_env: dict[str, str] = Field(
        default_factory=dict, description="Engine environment overrides (e.g. HF_HUB_OFFLINE: '0' to download)."
    )
    model_cache: ModelCacheConfig = Field(default_factory=ModelCacheConfig)
    gateway: GatewayDeployConfig = Field(default_factory=GatewayDeployConfig)
    autoscaling: AutoscalingDeployConfig = Field(default_factory=AutoscalingDeployConfig)
    monitoring: MonitoringDeployConfig = Field(default_factory=MonitoringDeployConfig)
    l7: L7Config = Field(default_factory=L7Config)

    @model_validator(mode="after")
    def _unique_pools(self) -> DeployConfig:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pools: duplicate pool names {dupes}")
        return self
