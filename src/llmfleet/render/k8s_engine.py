"""One engine pool on Kubernetes: a Deployment of vLLM replicas and the Service whose EndpointSlices list them.

The vLLM command line comes from :func:`llmfleet.engines.vllm.render_command` (the same rendering ``llmfleet up``
uses), bound to ``0.0.0.0`` inside the pod. Start-up is guarded by a startup probe with a long budget (a model load
takes minutes); readiness takes a replica out of the Service within seconds; liveness restarts a hung engine.
"""

from __future__ import annotations

import math
from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.engines.vllm import VLLMRuntime, render_command
from llmfleet.render.k8s_objects import Manifest, Names, Pool, http_probe, labels, meta, require, selector, toleration

COMPONENT = "engine"
STARTUP_PERIOD_S = 10
PRE_STOP_SLEEP_S = 10
"""Engine pods keep serving this long after being marked terminating, so every gateway sees the endpoint leave
before the engine stops accepting requests."""

# The official vllm/vllm-openai image runs this module; it exists in every vLLM build, unlike the `vllm` script.
_IMAGE_RUNTIME = VLLMRuntime(python="python3", has_vllm_distribution=False, cpu_build=False)


def engine_command(cfg: FleetConfig, pool: Pool) -> tuple[list[str], dict[str, str]]:
    """The vLLM argv and environment of one pool's replicas."""
    vllm = cfg.vllm.model_copy(
        update={
            "device": "gpu",
            "gpus": None,
            "tensor_parallel_size": pool.gpus,
            "extra_args": [*cfg.vllm.extra_args, *pool.cfg.extra_args],
        }
    )
    return render_command(vllm, _IMAGE_RUNTIME, host="0.0.0.0", port=cfg.deploy.engine_port)


def _env(cfg: FleetConfig, base: dict[str, str]) -> list[dict[str, Any]]:
    d = cfg.deploy
    values = {"HF_HOME": d.model_cache.mount_path, **base, **d.engine_env}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    if d.hf_token_secret:
        ref = {"secretKeyRef": {"name": d.hf_token_secret, "key": "HF_TOKEN"}}
        env.append({"name": "HF_TOKEN", "valueFrom": ref})
    return env


def _model_cache_volume(cfg: FleetConfig) -> dict[str, Any]:
    mc = cfg.deploy.model_cache
    if mc.kind == "pvc":
        return {"name": "model-cache", "persistentVolumeClaim": {"claimName": mc.claim_name, "readOnly": mc.read_only}}
    return {"name": "model-cache", "hostPath": {"path": mc.host_path, "type": "DirectoryOrCreate"}}


def _scheduling(cfg: FleetConfig, pool: Pool) -> dict[str, Any]:
    d, p = cfg.deploy, pool.cfg
    node_selector: dict[str, str] = {}
    if p.gpu_type:
        node_selector[d.gpu_type_label] = p.gpu_type
    if d.capacity_type_label:
        node_selector[d.capacity_type_label] = p.capacity_type
    node_selector.update(p.node_selector)
    tolerations = [*d.gpu_tolerations, *d.capacity_tolerations.get(p.capacity_type, []), *p.tolerations]
    out: dict[str, Any] = {}
    if node_selector:
        out["nodeSelector"] = node_selector
    if tolerations:
        out["tolerations"] = [toleration(t) for t in tolerations]
    return out


def _container(cfg: FleetConfig, pool: Pool) -> dict[str, Any]:
    d = cfg.deploy
    argv, env = engine_command(cfg, pool)
    gpus = str(pool.gpus)
    return {
        "name": "vllm",
        "image": require(d.images.vllm, "deploy.images.vllm", "the vLLM server image, e.g. vllm/vllm-openai:v0.10.1"),
        "imagePullPolicy": d.images.pull_policy,
        "command": argv,
        "env": _env(cfg, env),
        "ports": [{"name": "http", "containerPort": d.engine_port, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": pool.cfg.cpu, "memory": pool.cfg.memory, d.gpu_resource: gpus},
            "limits": {"memory": pool.cfg.memory, d.gpu_resource: gpus},
        },
        "startupProbe": http_probe(
            "/health", period_s=STARTUP_PERIOD_S, failures=math.ceil(d.startup_timeout_s / STARTUP_PERIOD_S)
        ),
        "readinessProbe": http_probe("/health", period_s=5, failures=3),
        "livenessProbe": http_probe("/health", period_s=10, failures=6, timeout_s=10),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_S)]}}},
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": d.model_cache.mount_path, "readOnly": d.model_cache.read_only},
        ],
    }


def engine_deployment(cfg: FleetConfig, pool: Pool) -> Manifest:
    """The pool's Deployment; ``spec.replicas`` is left to the autoscaler unless autoscaling is off."""
    d = cfg.deploy
    names = Names(d)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": d.termination_grace_s,
        **_scheduling(cfg, pool),
        "containers": [_container(cfg, pool)],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": d.shm_size}},
            _model_cache_volume(cfg),
        ],
    }
    if d.images.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in d.images.pull_secrets]
    spec: dict[str, Any] = {}
    if d.autoscaling.mode == "none":
        spec["replicas"] = pool.replicas
    spec.update(
        {
            "selector": {"matchLabels": selector(d, COMPONENT, pool)},
            # A new replica needs a free GPU node; never take a serving one away before it is ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": d.startup_timeout_s + 300,
            "template": {"metadata": {"labels": labels(d, COMPONENT, pool)}, "spec": pod_spec},
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(names.engine(pool.name), d.namespace, labels(d, COMPONENT, pool)),
        "spec": spec,
    }


def engine_service(cfg: FleetConfig, pool: Pool) -> Manifest:
    """The pool's Service; its labels (pool, capacity type) are copied onto its EndpointSlices."""
    d = cfg.deploy
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(Names(d).engine(pool.name), d.namespace, labels(d, COMPONENT, pool)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(d, COMPONENT, pool),
            "ports": [{"name": "http", "port": d.engine_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
