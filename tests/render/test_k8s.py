"""What the Kubernetes manifests say: engine args from the vLLM rendering, GPUs, probes, scheduling, least-privilege
RBAC, an in-cluster fleet.yaml that loads, autoscaling mapped from the autoscaler section, and clear errors."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmfleet.config import FleetConfig, parse_fleet_config
from llmfleet.engines.vllm import VLLMRuntime, render_command
from llmfleet.errors import ConfigError
from llmfleet.render.k8s import k8s_files, render_k8s
from tests.render.test_k8s_validate import MULTI_POOL, SEED, with_deploy


def objects(cfg: FleetConfig) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for docs in render_k8s(cfg).values() for d in docs}


def pod_annotations(obj: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = obj["spec"]["template"]["metadata"]["annotations"]
    return annotations


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def test_engine_command_is_the_vllm_rendering_with_pool_overrides() -> None:
    cfg = parse_fleet_config(MULTI_POOL)
    objs = objects(cfg)
    a100 = pod(objs["Deployment", "chat-engine-a100-short"])["containers"][0]
    vllm = cfg.vllm.model_copy(update={"tensor_parallel_size": 8, "extra_args": ["--max-num-seqs", "64"]})
    runtime = VLLMRuntime(python="python3", has_vllm_distribution=False, cpu_build=False)
    argv, env = render_command(vllm, runtime, host="0.0.0.0", port=8000)
    assert a100["command"] == argv
    assert a100["command"][a100["command"].index("--tensor-parallel-size") + 1] == "8"
    assert a100["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert a100["resources"]["requests"]["nvidia.com/gpu"] == "8"
    reserved = pod(objs["Deployment", "chat-engine-h100-reserved"])["containers"][0]
    assert reserved["resources"]["limits"]["nvidia.com/gpu"] == "4"
    values = {e["name"]: e.get("value") for e in reserved["env"]}
    assert values["HF_HUB_OFFLINE"] == "0"  # deploy.engine_env wins over the local default
    assert values["HF_HOME"] == "/models"
    token = next(e for e in reserved["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert set(env) <= set(values)


def test_probes_shm_and_model_cache() -> None:
    cfg = with_deploy(SEED, startup_timeout_s=2400, shm_size="32Gi")
    spec = pod(objects(cfg)["Deployment", "llmfleet-engine-h100"])
    c = spec["containers"][0]
    start = c["startupProbe"]
    assert start["httpGet"]["path"] == "/health"
    assert start["periodSeconds"] * start["failureThreshold"] >= 2400
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] < 120
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "model-cache"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/dev/shm", "/models"}
    assert "03-model-cache.yaml" in render_k8s(cfg)
    host = pod(objects(parse_fleet_config(MULTI_POOL))["Deployment", "chat-engine-h100-spot"])
    cache = next(v for v in host["volumes"] if v["name"] == "model-cache")
    assert cache["hostPath"]["path"] == "/mnt/nvme/models"
    assert "03-model-cache.yaml" not in render_k8s(parse_fleet_config(MULTI_POOL))


def test_scheduling_by_gpu_type_and_capacity() -> None:
    objs = objects(parse_fleet_config(MULTI_POOL))
    spot = pod(objs["Deployment", "chat-engine-h100-spot"])
    assert spot["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "karpenter.sh/capacity-type": "spot",
    }
    keys = [t.get("key") for t in spot["tolerations"]]
    assert keys == ["nvidia.com/gpu", "cloud.example.com/spot"]
    reserved = pod(objs["Deployment", "chat-engine-h100-reserved"])
    assert reserved["nodeSelector"]["karpenter.sh/capacity-type"] == "reserved"
    assert "cloud.example.com/spot" not in [t.get("key") for t in reserved["tolerations"]]
    a100 = pod(objs["Deployment", "chat-engine-a100-short"])
    assert a100["nodeSelector"]["topology.kubernetes.io/zone"] == "us-east-1a"
    svc = objs["Service", "chat-engine-h100-spot"]
    # EndpointSlices inherit these: the provider and the gateway read pool and capacity type from them.
    assert svc["metadata"]["labels"]["llmfleet.io/pool"] == "h100-spot"
    assert svc["metadata"]["labels"]["llmfleet.io/capacity-type"] == "spot"
    assert "llmfleet.io/capacity-type" not in svc["spec"]["selector"]


def test_rbac_is_least_privilege() -> None:
    objs = objects(parse_fleet_config(MULTI_POOL))
    gateway_rules = objs["Role", "chat-gateway"]["rules"]
    assert gateway_rules == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    ctrl = objs["Role", "chat-autoscaler"]["rules"]
    grants = {(g, r, v) for rule in ctrl for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert grants == {
        ("discovery.k8s.io", "endpointslices", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
    }
    scale = next(r for r in ctrl if r["resources"] == ["deployments/scale"])
    assert sorted(scale["resourceNames"]) == [
        "chat-engine-a100-short",
        "chat-engine-h100-reserved",
        "chat-engine-h100-spot",
    ]
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert not [k for k in objs if k[0] == kind]
    assert pod(objs["Deployment", "chat-engine-h100-spot"])["automountServiceAccountToken"] is False
    hpa = objects(with_deploy(MULTI_POOL, autoscaling={"mode": "hpa"}))
    assert ("Role", "chat-autoscaler") not in hpa
    leader = objects(with_deploy(MULTI_POOL, autoscaling={"mode": "controller", "controller_replicas": 2}))
    assert any(r["resources"] == ["leases"] for r in leader["Role", "chat-autoscaler"]["rules"])


def test_in_cluster_fleet_yaml_loads_and_points_each_controller_at_its_pool() -> None:
    data = copy.deepcopy(MULTI_POOL)
    data["gateway"] = {"admin_token": "s3cret", "replicas": [{"url": "http://127.0.0.1:8001"}], "port": 9000}
    cfg = parse_fleet_config(data)
    cm = objects(cfg)["ConfigMap", "chat-config"]
    assert "s3cret" not in yaml.safe_dump(cm)
    base = parse_fleet_config(yaml.safe_load(cm["data"]["fleet.yaml"]))
    assert base.gateway.host == "0.0.0.0" and base.gateway.port == 9000 and base.gateway.replicas == []
    assert base.deploy == cfg.deploy and base.vllm == cfg.vllm and base.routing == cfg.routing
    spot = parse_fleet_config(yaml.safe_load(cm["data"]["fleet-h100-spot.yaml"]))
    assert spot.kubernetes is not None
    assert (spot.kubernetes.namespace, spot.kubernetes.deployment) == ("llm-prod", "chat-engine-h100-spot")
    assert (spot.kubernetes.pool, spot.kubernetes.capacity_type) == ("h100-spot", "spot")
    assert (spot.autoscaler.min_replicas, spot.autoscaler.max_replicas) == (1, 14)
    ctrl = objects(cfg)["Deployment", "chat-autoscaler-h100-spot"]
    args = pod(ctrl)["containers"][0]["args"]
    assert args[:3] == ["autoscaler", "--config", "/etc/llmfleet/fleet-h100-spot.yaml"]
    # Leader election exactly when more than one controller pod runs (otherwise two would both scale).
    assert ("--leader-elect" in args) == (cfg.deploy.autoscaling.controller_replicas > 1)
    assert ctrl["spec"]["strategy"] == {"type": "Recreate"}


def test_gateway_is_spread_disruption_budgeted_and_discovers_every_pool() -> None:
    objs = objects(parse_fleet_config(MULTI_POOL))
    gw = objs["Deployment", "chat-gateway"]
    assert gw["spec"]["replicas"] == 3
    args = pod(gw)["containers"][0]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--discover"] == [
        "k8s:llm-prod/chat-engine-h100-reserved",
        "k8s:llm-prod/chat-engine-h100-spot",
        "k8s:llm-prod/chat-engine-a100-short",
    ]
    anti = pod(gw)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert objs["PodDisruptionBudget", "chat-gateway"]["spec"]["maxUnavailable"] == 1
    assert objs["Service", "chat-gateway"]["spec"]["type"] == "LoadBalancer"
    single = objects(with_deploy(SEED, gateway={"replicas": 1}))
    assert ("PodDisruptionBudget", "llmfleet-gateway") not in single  # would block every node drain


def test_config_change_rolls_the_gateway() -> None:
    a = objects(parse_fleet_config(SEED))["Deployment", "llmfleet-gateway"]
    changed = copy.deepcopy(SEED)
    changed["routing"] = {"policy": "power_of_two"}
    b = objects(parse_fleet_config(changed))["Deployment", "llmfleet-gateway"]
    key = "llmfleet.io/config-sha256"
    assert (
        a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_replicas_are_left_to_the_autoscaler() -> None:
    auto = objects(parse_fleet_config(SEED))["Deployment", "llmfleet-engine-h100"]
    assert "replicas" not in auto["spec"]  # a re-apply must not undo the autoscaler's scale
    fixed = objects(with_deploy(SEED, autoscaling={"mode": "none"}))["Deployment", "llmfleet-engine-h100"]
    assert fixed["spec"]["replicas"] == 5


def test_hpa_and_keda_map_the_autoscaler_section() -> None:
    data = copy.deepcopy(MULTI_POOL)
    data["autoscaler"] = {"target_queue_per_replica": 24, "interval_s": 10, "cooldown_s": 300, "max_scale_up_step": 2}
    data["deploy"]["autoscaling"] = {"mode": "hpa"}
    hpa = objects(parse_fleet_config(data))["HorizontalPodAutoscaler", "chat-engine-h100-spot"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 14)
    assert hpa["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "24"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa["behavior"]["scaleUp"]["policies"][0] == {"type": "Pods", "value": 2, "periodSeconds": 10}
    data["deploy"]["autoscaling"] = {"mode": "keda", "prometheus_url": "http://prom.monitoring:9090"}
    keda = objects(parse_fleet_config(data))["ScaledObject", "chat-engine-h100-spot"]["spec"]
    trigger = keda["triggers"][0]["metadata"]
    assert trigger["threshold"] == "24" and trigger["serverAddress"] == "http://prom.monitoring:9090"
    assert 'llmfleet_io_pool="h100-spot"' in trigger["query"] and "vllm:num_requests_waiting" in trigger["query"]
    assert (keda["pollingInterval"], keda["cooldownPeriod"]) == (10, 300)


def test_monitors_copy_the_pool_labels_onto_series() -> None:
    objs = objects(parse_fleet_config(MULTI_POOL))
    sm = objs["ServiceMonitor", "chat-engine"]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert "llmfleet.io/pool" in sm["spec"]["podTargetLabels"]
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return apply


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (_set("deploy.images", {"llmfleet": "x:1"}), "deploy.images.vllm"),
        (_set("deploy.images", {"vllm": "x:1"}), "deploy.images.llmfleet"),
        (_set("vllm.model", None), "vllm.model"),
        (_set("deploy.pools", [{"name": "Bad_Name"}]), "deploy.pools.0.name"),
        (_set("deploy.pools", [{"name": "a"}, {"name": "a"}]), "duplicate pool names"),
        (_set("deploy.pools", [{"name": "a", "min_replicas": 3, "max_replicas": 2}]), "deploy.pools.0"),
        (_set("deploy.pools", [{"name": "a", "replicas": 4, "max_replicas": 2}]), r"deploy.pools\[0\].max_replicas"),
        (_set("deploy.shm_size", "lots"), "deploy.shm_size"),
        (_set("deploy.autoscaling", {"mode": "hpa"}), r"deploy.pools\[0\].min_replicas"),
        (_set("routing", {"policy": "tiered", "tiered": {"default_pool": "nope"}}), "routing.tiered.default_pool"),
    ],
)
def test_bad_input_names_the_key(change: Callable[[dict[str, Any]], None], key: str) -> None:
    data = copy.deepcopy(SEED)
    data["deploy"]["pools"][0]["min_replicas"] = 0
    change(data)
    with pytest.raises(ConfigError, match=key):
        k8s_files(parse_fleet_config(data))


def test_cli_writes_files_and_removes_a_dropped_pool(tmp_path: Path) -> None:
    fleet, out = tmp_path / "fleet.yaml", tmp_path / "out"
    out.mkdir()
    (out / "kustomization.yaml").write_text("resources: []\n")  # not ours: must survive
    fleet.write_text(yaml.safe_dump(MULTI_POOL))
    cmd = [sys.executable, "-m", "llmfleet", "render", "k8s", "--config", str(fleet), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert (out / "10-engine-a100-short.yaml").exists()
    fewer = copy.deepcopy(MULTI_POOL)
    fewer["deploy"]["pools"] = fewer["deploy"]["pools"][:2]
    fewer["routing"] = {}
    fleet.write_text(yaml.safe_dump(fewer))
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert sorted(p.name for p in out.iterdir()) == [
        "00-namespace.yaml",
        "01-rbac.yaml",
        "02-config.yaml",
        "10-engine-h100-reserved.yaml",
        "10-engine-h100-spot.yaml",
        "20-gateway.yaml",
        "30-autoscaling.yaml",
        "40-monitoring.yaml",
        "kustomization.yaml",
    ]
    fleet.write_text("vllm: {model: /models/m}\ndeploy: {images: {vllm: 'v:1'}}\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "deploy.images.llmfleet" in bad.stderr and "Traceback" not in bad.stderr


def test_image_user_and_entrypoint_match_the_manifests() -> None:
    root = Path(__file__).resolve().parents[2]
    dockerfile = (root / "Dockerfile").read_text()
    gw = objects(parse_fleet_config(SEED))["Deployment", "llmfleet-gateway"]
    assert f"USER {pod(gw)['securityContext']['runAsUser']}:" in dockerfile
    assert 'ENTRYPOINT ["llmfleet"]' in dockerfile
    assert "[k8s,fast]" in dockerfile  # the controller and discovery need the Kubernetes client
    assert "!src/" in (root / ".dockerignore").read_text()


def _options(help_text: str) -> set[str]:
    return {w.strip("│,[]") for w in help_text.split() if w.strip("│,[]").startswith("--")}


def test_the_commands_the_manifests_run_exist() -> None:
    objs = objects(parse_fleet_config(SEED))
    for name in ("llmfleet-gateway", "llmfleet-autoscaler-h100"):
        args = pod(objs["Deployment", name])["containers"][0]["args"]
        cmd = [sys.executable, "-m", "llmfleet", args[0], "--help"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
        assert out.returncode == 0, out.stderr
        assert {a for a in args if a.startswith("--")} <= _options(out.stdout)


def test_two_controller_pods_elect_a_leader_and_are_scraped() -> None:
    for replicas in (1, 2):
        cfg = with_deploy(MULTI_POOL, autoscaling={"mode": "controller", "controller_replicas": replicas})
        ctrls = [
            o for o in objects(cfg).values() if o["kind"] == "Deployment" and "autoscaler" in o["metadata"]["name"]
        ]
        assert ctrls
        for ctrl in ctrls:
            container = pod(ctrl)["containers"][0]
            assert ("--leader-elect" in container["args"]) == (replicas > 1)
            assert container["ports"] == [{"name": "http", "containerPort": 9091}]
            assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    monitors = [o for o in objects(cfg).values() if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    ctrl_monitors = [m for m in monitors if m["metadata"]["name"].endswith("-autoscaler")]
    assert [m["kind"] for m in ctrl_monitors] == ["PodMonitor"]  # no Service to select: scrape the pods
