"""Rendered manifests validate offline: built-in kinds against the Kubernetes 1.30 schemas (kubernetes-validate,
strict: unknown fields are errors), Prometheus Operator and KEDA custom resources structurally (the required fields
and types of their published CRDs). Two scenarios: the seed's single H100 fleet, and a multi-pool spot/reserved
fleet, each with every autoscaling mode and monitor kind."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from llmfleet.config import FleetConfig, parse_fleet_config
from llmfleet.render.k8s import k8s_files, render_k8s

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S_VERSION = "1.30.0"

SEED: dict[str, Any] = {
    # The seed guide: 1,000 requests/min baseline on 5-6 H100s, 3x peaks (15-18), production vLLM settings.
    "fleet": {"replicas": 5, "max_replicas": 18},
    "vllm": {"model": "/models/llama-3.1-8b-instruct", "profile": "production"},
    "deploy": {
        "images": {"vllm": "vllm/vllm-openai:v0.10.1", "llmfleet": "registry.example.com/llmfleet:0.1.0"},
        "pools": [{"name": "h100", "replicas": 5, "max_replicas": 18, "gpu_type": "NVIDIA-H100-80GB-HBM3"}],
    },
}

SPOT_TAINT = {"key": "cloud.example.com/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}

MULTI_POOL: dict[str, Any] = {
    # 30% reserved H100 for critical traffic, 70% spot H100, plus A100s for short requests (tiered routing).
    "vllm": {"model": "meta-llama/Llama-3.1-70B-Instruct", "tensor_parallel_size": 4, "max_model_len": 8192},
    "routing": {
        "policy": "tiered",
        "tiered": {"rules": [{"pool": "a100-short", "max_tokens_at_most": 200}], "default_pool": "h100-reserved"},
    },
    "deploy": {
        "name": "chat",
        "namespace": "llm-prod",
        "images": {
            "vllm": "vllm/vllm-openai:v0.10.1",
            "llmfleet": "registry.example.com/llmfleet:0.1.0",
            "pull_secrets": ["registry-creds"],
        },
        "hf_token_secret": "hf-token",
        "engine_env": {"HF_HUB_OFFLINE": "0"},
        "model_cache": {"kind": "hostPath", "host_path": "/mnt/nvme/models"},
        "capacity_tolerations": {"spot": [SPOT_TAINT]},
        "pools": [
            {"name": "h100-reserved", "replicas": 3, "max_replicas": 6, "capacity_type": "reserved",
             "gpu_type": "NVIDIA-H100-80GB-HBM3"},
            {"name": "h100-spot", "replicas": 7, "min_replicas": 1, "max_replicas": 14, "capacity_type": "spot",
             "gpu_type": "NVIDIA-H100-80GB-HBM3"},
            {"name": "a100-short", "replicas": 2, "max_replicas": 8, "gpu_type": "NVIDIA-A100-SXM4-80GB",
             "gpus_per_replica": 8, "extra_args": ["--max-num-seqs", "64"],
             "node_selector": {"topology.kubernetes.io/zone": "us-east-1a"}},
        ],
        "gateway": {"replicas": 3, "anti_affinity": "required", "service_type": "LoadBalancer"},
    },
}  # fmt: skip

# Structural schemas: the required fields and types of the published CRDs (prometheus-operator v0.7x
# monitoring.coreos.com_{servicemonitors,podmonitors}.yaml, KEDA v2 keda.sh_scaledobjects.yaml), limited to the
# fields llmfleet renders; anything else llmfleet might add is an error.
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": {"type": "object"}},
}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
    "additionalProperties": False,
}
_ENDPOINT = {
    "type": "object",
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
    },
    "additionalProperties": False,
}


def _monitor(endpoints_key: str, required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": required,
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                        "additionalProperties": False,
                    },
                    endpoints_key: {"type": "array", "items": _ENDPOINT, "minItems": 1},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    }


_BEHAVIOR_RULES = {
    "type": "object",
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "value", "periodSeconds"],
                "properties": {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

CR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _monitor("endpoints", ["selector", "endpoints"]),
    "PodMonitor": _monitor("podMetricsEndpoints", ["selector"]),
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "advanced": {
                        "type": "object",
                        "properties": {
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "properties": {
                                    "behavior": {
                                        "type": "object",
                                        "properties": {"scaleUp": _BEHAVIOR_RULES, "scaleDown": _BEHAVIOR_RULES},
                                        "additionalProperties": False,
                                    }
                                },
                                "additionalProperties": False,
                            }
                        },
                        "additionalProperties": False,
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"const": "prometheus"},
                                # KEDA trigger metadata is a map of strings.
                                "metadata": {
                                    "type": "object",
                                    "required": ["serverAddress", "query", "threshold"],
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
    },
}


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` is not a valid object of its kind."""
    if doc["kind"] in CR_SCHEMAS:
        jsonschema.validate(doc, CR_SCHEMAS[doc["kind"]])
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def all_docs(cfg: FleetConfig) -> list[dict[str, Any]]:
    """The documents as ``kubectl`` would read them: parsed back from the rendered YAML text."""
    return [d for text in k8s_files(cfg).values() for d in yaml.safe_load_all(text) if d is not None]


def with_deploy(base: dict[str, Any], **deploy: Any) -> FleetConfig:
    data = copy.deepcopy(base)
    for key, value in deploy.items():
        data["deploy"][key] = value
    return parse_fleet_config(data)


SCENARIOS = {"seed": SEED, "multi_pool": MULTI_POOL}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("mode", ["controller", "hpa", "keda", "none"])
@pytest.mark.parametrize("monitor", ["servicemonitor", "podmonitor"])
def test_every_manifest_validates(scenario: str, mode: str, monitor: str) -> None:
    cfg = with_deploy(SCENARIOS[scenario], autoscaling={"mode": mode}, monitoring={"kind": monitor})
    docs = all_docs(cfg)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Role", "RoleBinding", "ServiceAccount"} <= kinds
    monitor_kind = "ServiceMonitor" if monitor == "servicemonitor" else "PodMonitor"
    # The controller has no Service: its pods are always scraped through a PodMonitor.
    assert kinds & {"ServiceMonitor", "PodMonitor"} == {monitor_kind} | (
        {"PodMonitor"} if mode == "controller" else set()
    )
    expected = {"controller": "Deployment", "hpa": "HorizontalPodAutoscaler", "keda": "ScaledObject"}.get(mode)
    if expected:
        assert expected in {d["kind"] for d in yaml.safe_load_all(k8s_files(cfg)["30-autoscaling.yaml"]) if d}
    for d in docs:
        validate(d)


def test_the_validation_can_fail() -> None:
    """Mistakes the schemas must catch: an unknown field, a wrong type, a missing required CR field."""
    files = render_k8s(with_deploy(SEED, autoscaling={"mode": "keda"}))
    deployment = copy.deepcopy(files["10-engine-h100.yaml"][0])
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    service = copy.deepcopy(files["10-engine-h100.yaml"][1])
    service["spec"]["ports"][0]["port"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service)
    scaled = copy.deepcopy(files["30-autoscaling.yaml"][0])
    del scaled["spec"]["triggers"][0]["metadata"]["query"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    monitor = copy.deepcopy(files["40-monitoring.yaml"][0])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
