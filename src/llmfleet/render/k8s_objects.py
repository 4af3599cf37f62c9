"""Shared pieces of the Kubernetes manifests: object names, labels, metadata, the resolved engine pools.

Every object carries the recommended ``app.kubernetes.io/*`` labels; engine pods, Services and (through the
EndpointSlice controller, which copies a Service's labels) EndpointSlices also carry ``llmfleet.io/pool`` and
``llmfleet.io/capacity-type``, the labels the Kubernetes provider reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmfleet.config import DeployConfig, DeployPoolConfig, FleetConfig, TolerationConfig
from llmfleet.errors import ConfigError
from llmfleet.providers.kubernetes import CAPACITY_TYPE_LABEL, POOL_LABEL

Manifest = dict[str, Any]
"""One Kubernetes object as a plain mapping (what ``kubectl apply`` reads)."""

CONFIG_DIR = "/etc/llmfleet"
CONFIG_FILE = "fleet.yaml"
COMPONENT_LABEL = "app.kubernetes.io/component"
INSTANCE_LABEL = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class Pool:
    """An engine pool with its defaults resolved."""

    index: int
    cfg: DeployPoolConfig
    replicas: int
    min_replicas: int
    max_replicas: int
    gpus: int

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def key(self) -> str:
        """Dotted config key of this pool, for error messages."""
        return f"deploy.pools[{self.index}]"


def resolve_pools(cfg: FleetConfig) -> list[Pool]:
    """The pools to render: ``deploy.pools``, or one pool ``default`` sized like ``llmfleet up`` would size it."""
    d = cfg.deploy
    tp = cfg.vllm.tensor_parallel_size
    if not d.pools:
        auto = cfg.autoscaler
        explicit = auto.model_fields_set
        lo = auto.min_replicas if "min_replicas" in explicit else cfg.fleet.min_replicas or cfg.fleet.replicas
        hi = auto.max_replicas if "max_replicas" in explicit else cfg.fleet.max_replicas or max(cfg.fleet.replicas, lo)
        pool = DeployPoolConfig(name="default", replicas=cfg.fleet.replicas)
        return [Pool(0, pool, cfg.fleet.replicas, lo, max(hi, lo, 1), tp)]
    _check_tiered_pools(cfg)
    out = []
    for i, p in enumerate(d.pools):
        lo = p.replicas if p.min_replicas is None else p.min_replicas
        hi = max(lo, p.replicas, 1) if p.max_replicas is None else p.max_replicas
        if hi < lo:
            raise ConfigError(f"deploy.pools[{i}].max_replicas ({hi}) must be >= the floor ({lo})")
        out.append(Pool(i, p, p.replicas, lo, hi, p.gpus_per_replica or tp))
    return out


def _check_tiered_pools(cfg: FleetConfig) -> None:
    """Tiered routing sends requests to pools by name: every name it uses must be a rendered pool."""
    if cfg.routing.policy != "tiered":
        return
    names = [p.name for p in cfg.deploy.pools]
    tiered = cfg.routing.tiered
    used = [(f"routing.tiered.rules[{i}].pool", r.pool) for i, r in enumerate(tiered.rules)]
    used.append(("routing.tiered.default_pool", tiered.default_pool))
    for key, pool in used:
        if pool not in names:
            raise ConfigError(f"{key}: {pool!r} is not a pool in deploy.pools ({', '.join(names)})")


def require(value: str | None, key: str, why: str) -> str:
    """A value ``render k8s`` cannot do without; the error names the key."""
    if not value:
        raise ConfigError(f"{key}: required to render Kubernetes manifests ({why})")
    return value


class Names:
    """Object names, all prefixed with ``deploy.name``."""

    def __init__(self, d: DeployConfig) -> None:
        self.prefix = d.name
        self.namespace = d.namespace

    def engine(self, pool: str) -> str:
        return f"{self.prefix}-engine-{pool}"

    def controller(self, pool: str) -> str:
        return f"{self.prefix}-autoscaler-{pool}"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}-gateway"

    @property
    def config(self) -> str:
        return f"{self.prefix}-config"

    def discover(self, pool: str) -> str:
        """The gateway's discovery target for a pool's Service."""
        return f"k8s:{self.namespace}/{self.engine(pool)}"


def labels(d: DeployConfig, component: str, pool: Pool | None = None) -> dict[str, str]:
    """Labels of one component's objects (and selector labels: these minus managed-by)."""
    out = {
        "app.kubernetes.io/name": "llmfleet",
        INSTANCE_LABEL: d.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/managed-by": "llmfleet",
    }
    if pool is not None:
        out[POOL_LABEL] = pool.name
        out[CAPACITY_TYPE_LABEL] = pool.cfg.capacity_type
    return out


def selector(d: DeployConfig, component: str, pool: Pool | None = None) -> dict[str, str]:
    """Labels that select one component's pods (stable across renders: never the capacity type)."""
    out = {INSTANCE_LABEL: d.name, COMPONENT_LABEL: component}
    if pool is not None:
        out[POOL_LABEL] = pool.name
    return out


def meta(name: str, namespace: str | None, object_labels: dict[str, str]) -> dict[str, Any]:
    """``metadata`` of a namespaced (or, with ``namespace=None``, cluster-scoped) object."""
    m: dict[str, Any] = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    m["labels"] = dict(object_labels)
    return m


def toleration(t: TolerationConfig) -> dict[str, str]:
    """A toleration in API form (unset fields left out)."""
    return {k: v for k, v in t.model_dump(exclude_none=True).items() if v is not None}


def http_probe(path: str, *, period_s: int, failures: int, timeout_s: int = 5, initial_s: int = 0) -> dict[str, Any]:
    """An HTTP GET probe on the container port named ``http``."""
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": "http"}}
    if initial_s:
        probe["initialDelaySeconds"] = initial_s
    probe.update({"periodSeconds": period_s, "timeoutSeconds": timeout_s, "failureThreshold": failures})
    return probe


def restricted_security_context() -> dict[str, Any]:
    """Container securityContext meeting the ``restricted`` Pod Security Standard (gateway, controller)."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
