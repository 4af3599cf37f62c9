"""Autoscaling on Kubernetes, rendered one of three ways (``deploy.autoscaling.mode``):

- ``controller``: llmfleet's own controller, one Deployment per pool, each reading its pool's fleet file (the
  ``autoscaler`` section plus a ``kubernetes`` section naming the pool's Deployment and Service);
- ``hpa``: a HorizontalPodAutoscaler per pool on a per-pod custom metric (outstanding requests, served by
  prometheus-adapter), its ``behavior`` mapped from the ``autoscaler`` section;
- ``keda``: a KEDA ScaledObject per pool with a Prometheus trigger on the same signal.

The target is the ``queue`` policy's: ``autoscaler.target_queue_per_replica`` outstanding (waiting + running)
requests per replica.
"""

from __future__ import annotations

from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.errors import ConfigError
from llmfleet.providers.kubernetes import POOL_LABEL
from llmfleet.render.k8s_gateway import config_volume, llmfleet_image, pod_common, template_annotations
from llmfleet.render.k8s_objects import (
    CONFIG_DIR,
    INSTANCE_LABEL,
    Manifest,
    Names,
    Pool,
    labels,
    meta,
    restricted_security_context,
    selector,
)

COMPONENT = "autoscaler"
CONTROLLER_METRICS_PORT = 9091
"""Port of the controller's /metrics, /healthz and /status (``llmfleet autoscaler --metrics-port``)."""


def pool_config_file(pool: Pool) -> str:
    """Name, inside the ConfigMap, of the fleet file one pool's controller reads."""
    return f"fleet-{pool.name}.yaml"


def pool_config_document(cfg: FleetConfig, base: dict[str, Any], pool: Pool) -> dict[str, Any]:
    """The in-cluster fleet.yaml with the pool's bounds and the Kubernetes provider pointed at the pool."""
    names = Names(cfg.deploy)
    doc = dict(base)
    doc["autoscaler"] = {**base.get("autoscaler", {}), "min_replicas": pool.min_replicas}
    doc["autoscaler"]["max_replicas"] = pool.max_replicas
    doc["kubernetes"] = {
        "namespace": cfg.deploy.namespace,
        "deployment": names.engine(pool.name),
        "service": names.engine(pool.name),
        "port_name": "http",
        "pool": pool.name,
        "capacity_type": pool.cfg.capacity_type,
    }
    return doc


def controller_deployment(cfg: FleetConfig, pool: Pool, config_sha256: str) -> Manifest:
    """llmfleet's controller for one pool (``llmfleet autoscaler``), with the controller's service account."""
    d = cfg.deploy
    names = Names(d)
    obj_labels = labels(d, COMPONENT, pool)
    container = {
        "name": "autoscaler",
        "image": llmfleet_image(cfg),
        "imagePullPolicy": d.images.pull_policy,
        "args": [
            "autoscaler",
            "--config",
            f"{CONFIG_DIR}/{pool_config_file(pool)}",
            "--metrics-port",
            str(CONTROLLER_METRICS_PORT),
            # Two controller pods may only both run when one Lease makes a single one act.
            *(["--leader-elect"] if d.autoscaling.controller_replicas > 1 else []),
        ],
        "ports": [{"name": "http", "containerPort": CONTROLLER_METRICS_PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": restricted_security_context(),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(names.controller(pool.name), d.namespace, obj_labels),
        "spec": {
            "replicas": d.autoscaling.controller_replicas,
            "selector": {"matchLabels": selector(d, COMPONENT, pool)},
            # Without leader election two controllers must never overlap.
            "strategy": {"type": "Recreate"} if d.autoscaling.controller_replicas == 1 else {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": obj_labels, "annotations": template_annotations(config_sha256)},
                "spec": {
                    **pod_common(cfg, f"{d.name}-autoscaler"),
                    "containers": [container],
                    "volumes": [config_volume(names)],
                },
            },
        },
    }


def _quantity(value: float) -> str:
    return f"{value:g}"


def hpa_behavior(cfg: FleetConfig) -> dict[str, Any]:
    """HPA ``behavior`` from the autoscaler section: stabilisation windows and per-period step limits."""
    a = cfg.autoscaler
    period = max(1, min(1800, round(a.interval_s)))
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": min(3600, round(a.scale_up_stabilization_s)),
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": a.max_scale_up_step, "periodSeconds": period},
                {"type": "Percent", "value": max(1, round(a.max_scale_up_ratio * 100)), "periodSeconds": period},
            ],
        },
        "scaleDown": {
            # HPA has no cool-down of its own: the scale-down window covers llmfleet's cooldown_s too.
            "stabilizationWindowSeconds": min(3600, round(max(a.scale_down_stabilization_s, a.cooldown_s))),
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": a.max_scale_down_step, "periodSeconds": period}],
        },
    }


def hpa(cfg: FleetConfig, pool: Pool) -> Manifest:
    """HorizontalPodAutoscaler (autoscaling/v2) for one pool on the per-pod outstanding-requests metric."""
    d = cfg.deploy
    if pool.min_replicas < 1:
        raise ConfigError(f"{pool.key}.min_replicas: an HPA needs at least 1 (keda can scale to zero)")
    name = Names(d).engine(pool.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name, d.namespace, labels(d, "engine", pool)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": pool.min_replicas,
            "maxReplicas": pool.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": d.autoscaling.hpa_metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": _quantity(cfg.autoscaler.target_queue_per_replica),
                        },
                    },
                }
            ],
            "behavior": hpa_behavior(cfg),
        },
    }


def keda_query(cfg: FleetConfig, pool: Pool) -> str:
    """PromQL: the pool's outstanding requests (labels copied onto the series by the monitors' podTargetLabels)."""
    d = cfg.deploy
    match = (
        f'namespace="{d.namespace}",{_prom_label(INSTANCE_LABEL)}="{d.name}",{_prom_label(POOL_LABEL)}="{pool.name}"'
    )
    return f"sum(vllm:num_requests_running{{{match}}}) + sum(vllm:num_requests_waiting{{{match}}})"


def _prom_label(k8s_label: str) -> str:
    """How Prometheus names a pod label copied by podTargetLabels (``llmfleet.io/pool`` -> ``llmfleet_io_pool``)."""
    return "".join(c if c.isalnum() else "_" for c in k8s_label)


def scaled_object(cfg: FleetConfig, pool: Pool) -> Manifest:
    """KEDA ScaledObject (keda.sh/v1alpha1) for one pool with a Prometheus trigger."""
    d, a = cfg.deploy, cfg.autoscaler
    name = Names(d).engine(pool.name)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(name, d.namespace, labels(d, "engine", pool)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": max(1, round(a.interval_s)),
            "cooldownPeriod": max(1, round(a.cooldown_s)),
            "minReplicaCount": pool.min_replicas,
            "maxReplicaCount": pool.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(cfg)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": d.autoscaling.prometheus_url,
                        "query": keda_query(cfg, pool),
                        "threshold": _quantity(a.target_queue_per_replica),
                    },
                }
            ],
        },
    }


def autoscaling_objects(cfg: FleetConfig, pools: list[Pool], config_sha256: str) -> list[Manifest]:
    """The objects of the chosen autoscaling mode (none for ``none``)."""
    mode = cfg.deploy.autoscaling.mode
    if mode == "controller":
        return [controller_deployment(cfg, p, config_sha256) for p in pools]
    if mode == "hpa":
        return [hpa(cfg, p) for p in pools]
    if mode == "keda":
        return [scaled_object(cfg, p) for p in pools]
    return []
