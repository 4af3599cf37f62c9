"""The gateway on Kubernetes: a Deployment of 2+ pods spread over nodes, its Service and PodDisruptionBudget.

Each gateway pod reads fleet.yaml from the ConfigMap and discovers every pool's replicas from that pool's Service
(``--discover k8s:NAMESPACE/SERVICE``). Readiness is ``/ready`` (at least one routable replica, not draining), so a
gateway that cannot serve leaves the Service; liveness is ``/health``.
"""

from __future__ import annotations

from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.render.k8s_objects import (
    CONFIG_DIR,
    CONFIG_FILE,
    Manifest,
    Names,
    Pool,
    http_probe,
    labels,
    meta,
    require,
    restricted_security_context,
    selector,
)

COMPONENT = "gateway"


def llmfleet_image(cfg: FleetConfig) -> str:
    """The llmfleet image (gateway, controller); the error names the key when it is missing."""
    return require(cfg.deploy.images.llmfleet, "deploy.images.llmfleet", "an image built from the Dockerfile")


def config_volume(names: Names) -> dict[str, Any]:
    """The ConfigMap holding fleet.yaml, as a pod volume."""
    return {"name": "config", "configMap": {"name": names.config}}


def pod_common(cfg: FleetConfig, service_account: str) -> dict[str, Any]:
    """Pod-level settings shared by the gateway and the controller (both run the llmfleet image)."""
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
    }
    if cfg.deploy.images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in cfg.deploy.images.pull_secrets]
    return spec


def template_annotations(config_sha256: str) -> dict[str, str]:
    """Changing fleet.yaml changes this annotation, which rolls the pods that read it."""
    return {"llmfleet.io/config-sha256": config_sha256}


def gateway_objects(cfg: FleetConfig, pools: list[Pool], config_sha256: str) -> list[Manifest]:
    """Deployment, Service and (with 2+ replicas) PodDisruptionBudget of the gateway."""
    d, g = cfg.deploy, cfg.deploy.gateway
    names = Names(d)
    sel = selector(d, COMPONENT)
    args = ["gateway", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
    for p in pools:
        args += ["--discover", names.discover(p.name)]
    term = {"labelSelector": {"matchLabels": sel}, "topologyKey": "kubernetes.io/hostname"}
    anti = (
        {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
        if g.anti_affinity == "required"
        else {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}
    )
    container = {
        "name": "gateway",
        "image": llmfleet_image(cfg),
        "imagePullPolicy": d.images.pull_policy,
        "args": args,
        "ports": [{"name": "http", "containerPort": cfg.gateway.port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": g.cpu, "memory": g.memory}, "limits": {"memory": g.memory}},
        "readinessProbe": http_probe("/ready", period_s=5, failures=2, timeout_s=3),
        "livenessProbe": http_probe("/health", period_s=10, failures=3, timeout_s=5, initial_s=5),
        # Leave the Service (and the L7 tier's pool) before SIGTERM starts the drain.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": restricted_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec = {
        **pod_common(cfg, names.gateway),
        "terminationGracePeriodSeconds": int(cfg.gateway.drain_grace_s) + 10,
        "affinity": {"podAntiAffinity": anti},
        "containers": [container],
        "volumes": [config_volume(names), {"name": "tmp", "emptyDir": {}}],
    }
    obj_labels = labels(d, COMPONENT)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(names.gateway, d.namespace, obj_labels),
        "spec": {
            "replicas": g.replicas,
            "selector": {"matchLabels": sel},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": obj_labels, "annotations": template_annotations(config_sha256)},
                "spec": pod_spec,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(names.gateway, d.namespace, obj_labels),
        "spec": {
            "type": g.service_type,
            "selector": sel,
            "ports": [{"name": "http", "port": cfg.gateway.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    out: list[Manifest] = [deployment, service]
    if g.replicas >= 2:
        out.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta(names.gateway, d.namespace, obj_labels),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel}},
            }
        )
    return out
