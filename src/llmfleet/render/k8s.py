"""``llmfleet render k8s``: plain Kubernetes manifests for a fleet, from the same fleet.yaml ``llmfleet up`` reads.

:func:`render_k8s` is pure (:class:`~llmfleet.config.FleetConfig` -> manifests grouped by file); :func:`k8s_files`
turns them into YAML text, one file per concern, numbered so that ``kubectl apply -f DIR`` creates the namespace
first:

===========================  ====================================================================================
``00-namespace.yaml``        the Namespace (``deploy.create_namespace``)
``01-rbac.yaml``             ServiceAccounts, Roles, RoleBindings: read EndpointSlices; the controller also
                             gets/patches its pools' ``deployments/scale`` (and Leases when it runs 2+ pods)
``02-config.yaml``           ConfigMap with the in-cluster fleet.yaml (and one fleet file per pool's controller)
``03-model-cache.yaml``      the model cache PersistentVolumeClaim (``deploy.model_cache``)
``10-engine-POOL.yaml``      per pool: vLLM Deployment and Service
``20-gateway.yaml``          gateway Deployment, Service, PodDisruptionBudget
``30-autoscaling.yaml``      controller Deployments, or HPAs, or KEDA ScaledObjects
``40-monitoring.yaml``       Prometheus Operator ServiceMonitors or PodMonitors
===========================  ====================================================================================
"""

from __future__ import annotations

import hashlib
from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.providers.kubernetes import CAPACITY_TYPE_LABEL, POOL_LABEL
from llmfleet.render.k8s_autoscaling import autoscaling_objects, pool_config_document, pool_config_file
from llmfleet.render.k8s_engine import engine_deployment, engine_service
from llmfleet.render.k8s_gateway import gateway_objects
from llmfleet.render.k8s_objects import CONFIG_FILE, Manifest, Names, Pool, labels, meta, resolve_pools
from llmfleet.render.yamlout import dump_documents, dump_yaml

RBAC_API = "rbac.authorization.k8s.io/v1"
K8S_FILES_GLOB = "[0-9][0-9]-*.yaml"
"""The names of rendered manifest files (a stale one is removed on the next render)."""


def in_cluster_document(cfg: FleetConfig) -> dict[str, Any]:
    """fleet.yaml as the pods read it: the gateway binds all addresses and finds replicas through discovery.

    Replica URLs meant for one machine are dropped, and so is the admin token (a ConfigMap is no place for a
    secret; the gateway needs no admin API when it discovers replicas itself).
    """
    doc = cfg.model_dump(mode="json", exclude_defaults=True)
    gateway = {k: v for k, v in doc.get("gateway", {}).items() if k not in {"replicas", "admin_token", "host"}}
    doc["gateway"] = {"host": "0.0.0.0", **gateway}
    doc.pop("kubernetes", None)
    return doc


def _config_map(cfg: FleetConfig, pools: list[Pool]) -> tuple[Manifest, str]:
    d = cfg.deploy
    base = in_cluster_document(cfg)
    data = {CONFIG_FILE: dump_yaml(base)}
    if d.autoscaling.mode == "controller":
        for p in pools:
            data[pool_config_file(p)] = dump_yaml(pool_config_document(cfg, base, p))
    digest = hashlib.sha256("".join(f"{k}\n{v}" for k, v in sorted(data.items())).encode()).hexdigest()
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(Names(d).config, d.namespace, labels(d, "config")),
        "data": data,
    }
    return cm, digest


def _role(cfg: FleetConfig, name: str, rules: list[dict[str, Any]], component: str) -> list[Manifest]:
    d = cfg.deploy
    lab = labels(d, component)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, d.namespace, lab)},
        {"apiVersion": RBAC_API, "kind": "Role", "metadata": meta(name, d.namespace, lab), "rules": rules},
        {
            "apiVersion": RBAC_API,
            "kind": "RoleBinding",
            "metadata": meta(name, d.namespace, lab),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": d.namespace}],
        },
    ]


def rbac_objects(cfg: FleetConfig, pools: list[Pool]) -> list[Manifest]:
    """Least privilege: the gateway reads EndpointSlices; the controller also scales its pools' Deployments."""
    d = cfg.deploy
    names = Names(d)
    slices = {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    out = _role(cfg, names.gateway, [slices], "gateway")
    if d.autoscaling.mode == "controller":
        scale = {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [names.engine(p.name) for p in pools],
            "verbs": ["get", "patch"],
        }
        rules = [slices, scale]
        if d.autoscaling.controller_replicas > 1:
            rules.append(
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
            )
        out += _role(cfg, f"{d.name}-autoscaler", rules, "autoscaler")
    return out


def _model_cache_claim(cfg: FleetConfig) -> Manifest:
    d, mc = cfg.deploy, cfg.deploy.model_cache
    spec: dict[str, Any] = {"accessModes": [mc.access_mode], "resources": {"requests": {"storage": mc.size}}}
    if mc.storage_class:
        spec["storageClassName"] = mc.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(mc.claim_name, d.namespace, labels(d, "model-cache")),
        "spec": spec,
    }


def monitoring_objects(cfg: FleetConfig) -> list[Manifest]:
    """ServiceMonitors (or PodMonitors) for the engines and the gateway, copying pool labels onto the series."""
    d, m = cfg.deploy, cfg.deploy.monitoring
    if m.kind == "none":
        return []
    out = []
    components = ["engine", "gateway"]
    if d.autoscaling.mode == "controller":
        components.append("autoscaler")  # decisions, leadership and would-scale counts
    for component in components:
        sel = {"matchLabels": {"app.kubernetes.io/instance": d.name, "app.kubernetes.io/component": component}}
        endpoint = {"port": "http", "path": "/metrics", "interval": f"{m.interval_s}s"}
        spec: dict[str, Any] = {"selector": sel, "namespaceSelector": {"matchNames": [d.namespace]}}
        # The controller has no Service (nothing calls it), so its pods are scraped directly.
        if m.kind == "servicemonitor" and component != "autoscaler":
            kind, spec["endpoints"] = "ServiceMonitor", [endpoint]
        else:
            kind, spec["podMetricsEndpoints"] = "PodMonitor", [endpoint]
        spec["podTargetLabels"] = ["app.kubernetes.io/instance", POOL_LABEL, CAPACITY_TYPE_LABEL]
        obj_labels = {**labels(d, component), **m.labels}
        name = f"{d.name}-{component}"
        out.append(
            {"apiVersion": "monitoring.coreos.com/v1", "kind": kind, "metadata": meta(name, d.namespace, obj_labels)}
            | {"spec": spec}
        )
    return out


def render_k8s(cfg: FleetConfig) -> dict[str, list[Manifest]]:
    """Every manifest of the fleet, grouped by the file it goes in (see the module docstring)."""
    d = cfg.deploy
    pools = resolve_pools(cfg)
    config_map, digest = _config_map(cfg, pools)
    files: dict[str, list[Manifest]] = {}
    if d.create_namespace:
        ns_meta = meta(d.namespace, None, labels(d, "namespace"))
        files["00-namespace.yaml"] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": ns_meta}]
    files["01-rbac.yaml"] = rbac_objects(cfg, pools)
    files["02-config.yaml"] = [config_map]
    if d.model_cache.kind == "pvc" and d.model_cache.create_claim:
        files["03-model-cache.yaml"] = [_model_cache_claim(cfg)]
    for p in pools:
        files[f"10-engine-{p.name}.yaml"] = [engine_deployment(cfg, p), engine_service(cfg, p)]
    files["20-gateway.yaml"] = gateway_objects(cfg, pools, digest)
    scaling = autoscaling_objects(cfg, pools, digest)
    if scaling:
        files["30-autoscaling.yaml"] = scaling
    monitors = monitoring_objects(cfg)
    if monitors:
        files["40-monitoring.yaml"] = monitors
    return files


def k8s_files(cfg: FleetConfig) -> dict[str, str]:
    """The rendered manifests as YAML text, file name -> content."""
    return {name: dump_documents(docs) for name, docs in render_k8s(cfg).items()}
