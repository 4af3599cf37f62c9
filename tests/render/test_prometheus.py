"""``llmfleet render prometheus``: the scrape config and rules pass promtool, and every alert is unit-tested firing
and not firing with ``promtool test rules`` on series written here."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from llmfleet.config import FleetConfig, parse_fleet_config
from llmfleet.errors import ConfigError
from llmfleet.perfmodel import load_catalog
from llmfleet.render.alerts import AlertSettings, alert_rules, default_daily_budget_usd, rules_document
from llmfleet.render.prometheus import (
    ScrapeSettings,
    ScrapeTarget,
    file_sd_path,
    prometheus_config,
    prometheus_files,
    render_file_sd,
    write_file_sd,
)

from .live_prometheus import GPU as FLEET_GPU
from .live_prometheus import MODEL, PROMETHEUS, live_fleet

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian package prometheus)")
RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
SETTINGS = AlertSettings(daily_budget_usd=1000.0)  # threshold: 0.8 x 1000 / 24 = 33.3 USD/h

ENGINE = {"job": "llmfleet-engine", "instance": "127.0.0.1:8001"}
ENGINE_VLLM = {**ENGINE, "model_name": "m", "engine": "0"}
GPU = {**ENGINE, "gpu": "0", "device": "nvidia0", "modelName": "H100"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _ttft(bucket_counts: dict[str, str]) -> list[dict[str, str]]:
    name = "llmfleet_gateway_time_to_first_token_seconds_bucket"
    return [_series(name, {"route": "/v1/chat/completions", "le": le}, v) for le, v in bucket_counts.items()]


def _requests(ok: str, failed: str) -> list[dict[str, str]]:
    name = "llmfleet_gateway_requests_total"
    base = {"route": "/v1/chat/completions", "replica": "a"}
    return [_series(name, {**base, "status": "200"}, ok), _series(name, {**base, "status": "500"}, failed)]


# alert -> [(firing?, input series, eval time, labels of the expected alerts beyond severity)]
Case = tuple[bool, list[dict[str, str]], str, list[dict[str, str]]]
CASES: dict[str, list[Case]] = {
    "LLMFleetP99LatencyHigh": [
        (True, _ttft({"0.5": "0+1x40", "1.0": "0+1x40", "2.5": "0+100x40", "+Inf": "0+100x40"}), "20m", [{}]),
        (False, _ttft({"0.5": "0+100x40", "1.0": "0+100x40", "2.5": "0+100x40", "+Inf": "0+100x40"}), "20m", []),
    ],
    "LLMFleetErrorRateHigh": [
        (True, _requests("0+100x40", "0+5x40"), "20m", [{}]),
        (False, _requests("0+100x40", "0+0.5x40"), "20m", []),
    ],
    "LLMFleetGPUMemoryHigh": [
        (True, [_series("DCGM_FI_DEV_FB_USED", GPU, "75000x20"), _series("DCGM_FI_DEV_FB_FREE", GPU, "6920x20")],
         "10m", [GPU]),
        (False, [_series("DCGM_FI_DEV_FB_USED", GPU, "60000x20"), _series("DCGM_FI_DEV_FB_FREE", GPU, "21920x20")],
         "10m", []),
    ],
    "LLMFleetReplicaDown": [
        (True, [_series("up", ENGINE, "0x10")], "5m", [ENGINE]),
        (True, [_series("llmfleet_gateway_replica_state", {"replica": "r1", "state": "unhealthy"}, "1x10")], "5m",
         [{"replica": "r1", "state": "unhealthy"}]),
        (False, [_series("up", ENGINE, "1x10"),
                 _series("llmfleet_gateway_replica_state", {"replica": "r1", "state": "unhealthy"}, "0x10")],
         "5m", []),
    ],
    "LLMFleetNoHealthyReplica": [
        (True, [_series("llmfleet_gateway_replicas", {"state": s}, v)
                for s, v in (("healthy", "0x10"), ("degraded", "0x10"), ("unhealthy", "2x10"))], "5m", [{}]),
        (False, [_series("llmfleet_gateway_replicas", {"state": s}, v)
                 for s, v in (("healthy", "0x10"), ("degraded", "1x10"), ("unhealthy", "1x10"))], "5m", []),
    ],
    "LLMFleetGatewayDown": [
        (True, [_series("up", {"job": "llmfleet-gateway", "instance": "gw:8080"}, "0x10")], "5m",
         [{"job": "llmfleet-gateway", "instance": "gw:8080"}]),
        (False, [_series("up", {"job": "llmfleet-gateway", "instance": "gw:8080"}, "1x10")], "5m", []),
    ],
    "LLMFleetRequestsQueueing": [
        (True, [_series("vllm:num_requests_waiting", ENGINE_VLLM, "20x20")], "10m",
         [{"job": "llmfleet-engine", "instance": "127.0.0.1:8001", "model_name": "m"}]),
        (False, [_series("vllm:num_requests_waiting", ENGINE_VLLM, "5x20")], "10m", []),
    ],
    "LLMFleetKVCachePressure": [
        (True, [_series("vllm:kv_cache_usage_perc", ENGINE_VLLM, "0.97x30")], "15m",
         [{"job": "llmfleet-engine", "instance": "127.0.0.1:8001", "model_name": "m"}]),
        (False, [_series("vllm:kv_cache_usage_perc", ENGINE_VLLM, "0.5x30")], "15m", []),
    ],
    "LLMFleetAutoscalerAtMax": [
        (True, [_series("llmfleet_autoscaler_decisions_total", {"direction": "hold", "reason": "clamp_max"},
                        "0+4x40")], "25m", [{}]),
        (False, [_series("llmfleet_autoscaler_decisions_total", {"direction": "hold", "reason": "clamp_max"},
                         "3x40"),
                 _series("llmfleet_autoscaler_decisions_total", {"direction": "hold", "reason": "policy:queue"},
                         "0+4x40")], "25m", []),
    ],
    "LLMFleetBudgetBurn": [
        (True, [_series("llmfleet_gateway_cost_usd_per_hour", {"pool": "default", "capacity_type": "on-demand"},
                        "50x60")], "30m", [{}]),
        (False, [_series("llmfleet_gateway_cost_usd_per_hour", {"pool": "default", "capacity_type": "on-demand"},
                         "20x60")], "30m", []),
    ],
}  # fmt: skip


def _without_annotations(rules_doc: dict[str, Any]) -> dict[str, Any]:
    """promtool compares annotations exactly; their templates are checked by ``promtool check rules`` instead."""
    for group in rules_doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return rules_doc


def _unit_tests(cases: dict[str, list[Case]], severity: dict[str, str]) -> dict[str, Any]:
    tests = []
    for alert, alert_cases in cases.items():
        for firing, series, at, labels in alert_cases:
            expected = [{"exp_labels": {**lab, "severity": severity[alert]}} for lab in labels] if firing else []
            tests.append(
                {
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
                }
            )
    return {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def _write_unit_tests(tmp_path: Path, cases: dict[str, list[Case]]) -> Path:
    doc = rules_document(FleetConfig(), SETTINGS)
    severity = {r["alert"]: r["labels"]["severity"] for r in doc["groups"][0]["rules"]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(_without_annotations(doc), sort_keys=False))
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(_unit_tests(cases, severity), sort_keys=False))
    return path


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = {r.name for r in alert_rules(FleetConfig(), SETTINGS)}
    assert set(CASES) == names
    for name, cases in CASES.items():
        assert {firing for firing, *_ in cases} == {True, False}, name


@needs_promtool
def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    r = _promtool("test", "rules", str(_write_unit_tests(tmp_path, CASES)))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # The quiet GPU case expected to fire, and a firing case expected quiet: promtool must report both.
    fire, quiet = CASES["LLMFleetGPUMemoryHigh"]
    wrong = {"LLMFleetGPUMemoryHigh": [(True, quiet[1], quiet[2], [GPU]), (False, fire[1], fire[2], [])]}
    r = _promtool("test", "rules", str(_write_unit_tests(tmp_path, wrong)))
    assert r.returncode != 0
    assert r.stdout.count("LLMFleetGPUMemoryHigh") + r.stderr.count("LLMFleetGPUMemoryHigh") >= 2


def _render(tmp_path: Path, cfg: FleetConfig, scrape: ScrapeSettings | None = None) -> Path:
    for name, text in prometheus_files(cfg, scrape or ScrapeSettings(), SETTINGS).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / "prometheus.yml"


STATIC = {
    "gateway": {
        "host": "0.0.0.0",
        "port": 9000,
        "replicas": [
            {"url": "http://10.0.0.5:8000", "pool": "spot"},
            {"url": "https://engine-b.internal/vllm", "pool": "reserved"},
        ],
    }
}
KUBE = {"kubernetes": {"namespace": "llm", "deployment": "vllm", "service": "vllm", "port_name": "http"}}  # fmt: skip


@needs_promtool
@pytest.mark.parametrize("data", [{}, STATIC, KUBE], ids=["file", "static", "kubernetes"])
def test_promtool_checks_config_and_rules(tmp_path: Path, data: dict[str, Any]) -> None:
    config = _render(tmp_path, parse_fleet_config(data), ScrapeSettings(alertmanager="127.0.0.1:9093"))
    r = _promtool("check", "config", str(config))
    if "field kubernetes_sd_configs not found" in r.stderr:
        pytest.skip("this promtool is built without Kubernetes discovery (Debian's is; upstream's is not)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr
    r = _promtool("check", "rules", str(tmp_path / "rules" / "llmfleet.rules.yml"))
    assert r.returncode == 0 and "10 rules found" in r.stdout, r.stdout + r.stderr


def test_discovery_modes() -> None:
    jobs = {j["job_name"]: j for j in prometheus_config(parse_fleet_config(STATIC), ScrapeSettings())["scrape_configs"]}
    assert set(jobs) == {"llmfleet", "llmfleet-gateway", "llmfleet-engine"}
    assert jobs["llmfleet-gateway"]["static_configs"] == [{"targets": ["127.0.0.1:9000"], "labels": {}}]
    assert jobs["llmfleet-engine"]["static_configs"] == [
        {"targets": ["10.0.0.5:8000"], "labels": {"pool": "spot"}},
        {
            "targets": ["engine-b.internal:443"],
            "labels": {"pool": "reserved", "__scheme__": "https", "__metrics_path__": "/vllm/metrics"},
        },
    ]
    kube = prometheus_config(parse_fleet_config(KUBE), ScrapeSettings())["scrape_configs"][1]
    assert kube["kubernetes_sd_configs"] == [{"role": "endpointslice", "namespaces": {"names": ["llm"]}}]
    assert {"source_labels": ["__meta_kubernetes_service_name"], "regex": "vllm", "action": "keep"} in kube[
        "relabel_configs"
    ]
    with pytest.raises(ConfigError, match="kubernetes"):
        prometheus_config(FleetConfig(), ScrapeSettings(discovery="kubernetes"))


def test_file_sd_targets(tmp_path: Path) -> None:
    targets = [
        ScrapeTarget("llmfleet-gateway", "http://127.0.0.1:8080"),
        ScrapeTarget("llmfleet-engine", "http://[::1]:41234/", {"replica": "r0", "pool": "default"}),
    ]
    assert json.loads(render_file_sd(targets)) == [
        {"targets": ["127.0.0.1:8080"], "labels": {"job": "llmfleet-gateway"}},
        {"targets": ["[::1]:41234"], "labels": {"job": "llmfleet-engine", "replica": "r0", "pool": "default"}},
    ]
    path = file_sd_path(tmp_path)
    assert path == tmp_path / "targets" / "llmfleet-up.json"
    write_file_sd(path, targets)
    assert json.loads(path.read_text())[0]["targets"] == ["127.0.0.1:8080"]
    assert [p.name for p in path.parent.iterdir()] == ["llmfleet-up.json"]  # no temporary file left
    with pytest.raises(ConfigError, match=r"targets\[0\].url"):
        render_file_sd([ScrapeTarget("x", "127.0.0.1:80")])


def test_thresholds_from_config() -> None:
    cfg = parse_fleet_config(
        {"gateway": {"health": {"degraded_latency_s": 2.5}}, "fleet": {"replicas": 2, "max_replicas": 6}}
    )
    rules = {r.name: r for r in alert_rules(cfg, AlertSettings())}
    assert rules["LLMFleetP99LatencyHigh"].expr.endswith("> 2.5")
    assert "(6)" in rules["LLMFleetAutoscalerAtMax"].summary
    # Budget: 6 replicas x 1 H100 at the catalog's on-demand price, for 24 h; alert at 80%.
    budget = default_daily_budget_usd(cfg)
    assert rules["LLMFleetBudgetBurn"].expr.endswith(f"> {0.8 * budget:g}")
    assert budget == pytest.approx(3 * default_daily_budget_usd(parse_fleet_config({})))  # defaults: 2 replicas
    e2e = {r.name: r for r in alert_rules(cfg, AlertSettings(latency_signal="e2e", p99_latency_s=30))}
    assert (
        "request_duration_seconds" in e2e["LLMFleetP99LatencyHigh"].expr
        and "> 30" in e2e["LLMFleetP99LatencyHigh"].expr
    )


def test_for_scale_and_runbook_links() -> None:
    doc = rules_document(FleetConfig(), AlertSettings(for_scale=0.05, runbook_base_url="https://x/runbooks.md"))
    rules = doc["groups"][0]["rules"]
    assert {r["for"] for r in rules} == {"3s", "15s", "30s", "45s"}
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("#")
    }
    for r in rules:
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://x/runbooks.md#")
        assert url.split("#")[1] in headings, f"docs/runbooks.md has no section for {r['alert']}"
        assert r["labels"]["severity"] in {"critical", "warning", "info"}


def test_bad_settings_name_the_option() -> None:
    with pytest.raises(ConfigError, match="--rate-window"):
        AlertSettings(rate_window="5 minutes")
    with pytest.raises(ConfigError, match="--error-rate"):
        AlertSettings(error_rate=0)
    with pytest.raises(ConfigError, match=r"engine\.gpu"):
        alert_rules(parse_fleet_config({"engine": {"gpu": "nope"}}), AlertSettings())


def test_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(yaml.safe_dump(STATIC))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llmfleet", "render", "prometheus", "--config", str(cfg), "--out", str(out)]
    r = subprocess.run([*cmd, "--for-scale", "0.1"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert (out / "prometheus.yml").exists() and (out / "rules" / "llmfleet.rules.yml").exists()
    r = subprocess.run([*cmd, "--discovery", "dns"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--discovery" in r.stderr and "Traceback" not in r.stderr
    cfg.write_text("gateway: {replicaz: []}\n")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "gateway.replicaz" in r.stderr and "Traceback" not in r.stderr


async def _slow_requests(gateway_url: str, n: int) -> None:
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> None:
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4, "stream": True}
            async with s.post(f"{gateway_url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                await resp.read()

        await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.slow  # real Prometheus tier, ~12 s
@pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus server (Debian package prometheus)")
def test_alerts_fire_on_a_real_prometheus(tmp_path: Path) -> None:
    """One slow replica and one leaking replica: the p99-latency and GPU-memory alerts go to firing, for the
    leaking replica only; the quiet alerts stay quiet."""
    settings = AlertSettings(for_scale=0.01, rate_window="30s", daily_budget_usd=1000.0)
    with live_fleet(tmp_path, settings) as live:
        slow, leaking = live.sims

        async def faults() -> None:
            async with aiohttp.ClientSession() as s:
                for sim, patch in ((slow, {"extra_latency_ms": 1500}), (leaking, {"memory_leak_mib_per_min": 1e7})):
                    async with s.post(f"{sim.url}/admin/faults", json=patch) as resp:
                        assert resp.status == 200

        asyncio.run(faults())
        asyncio.run(_slow_requests(live.gateway_url, 8))

        def fired() -> set[str]:
            return {a["labels"]["alertname"] for a in live.firing()}

        live.wait(lambda: {"LLMFleetP99LatencyHigh", "LLMFleetGPUMemoryHigh"} <= fired(), 30, "the two alerts")
        gpu = [a for a in live.firing() if a["labels"]["alertname"] == "LLMFleetGPUMemoryHigh"]
        assert {a["labels"]["instance"] for a in gpu} == {leaking.url.removeprefix("http://")}
        assert gpu[0]["labels"]["severity"] == "warning"
        assert gpu[0]["annotations"]["runbook_url"].endswith("#llmfleetgpumemoryhigh")
        assert "100%" in gpu[0]["annotations"]["summary"]
        assert fired() == {"LLMFleetP99LatencyHigh", "LLMFleetGPUMemoryHigh"}
        rules = live.api("rules")["data"]["groups"][0]["rules"]
        assert len(rules) == 10 and all(r["health"] == "ok" for r in rules), rules
        # The budget rule reads the gateway's cost: two on-demand H100s (live_fleet registers them priced), quiet.
        (spend,) = live.query("sum(avg_over_time(llmfleet_gateway_cost_usd_per_hour[1h])) * 24")
        assert float(spend["value"][1]) == pytest.approx(
            2 * load_catalog([]).gpu(FLEET_GPU).price.on_demand_usd_per_hour * 24
        )
