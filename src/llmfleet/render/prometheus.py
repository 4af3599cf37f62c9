"""Prometheus for a fleet: ``prometheus.yml`` (scrape config) and ``rules/llmfleet.rules.yml`` (alerts, see
:mod:`llmfleet.render.alerts`), and the file-based discovery file ``llmfleet up`` writes for its dynamic ports.

Layout of the rendered folder (Prometheus resolves relative paths against the config file's folder)::

    prometheus.yml
    rules/llmfleet.rules.yml
    targets/*.json          file_sd target files: written by `llmfleet up` (see file_sd_path / render_file_sd)

Discovery: ``file`` (a local ``llmfleet up``: targets come from ``targets/*.json``, each carrying its ``job``
label), ``static`` (``gateway.host:port`` and ``gateway.replicas`` from fleet.yaml) or ``kubernetes`` (engine pods
behind the ``kubernetes`` section's Service, found through EndpointSlices). The ``file`` job is present in all
three, so a fleet started later by ``llmfleet up`` is scraped without re-rendering.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from llmfleet.config import FleetConfig
from llmfleet.errors import ConfigError
from llmfleet.render.alerts import JOB_ENGINE, JOB_GATEWAY, AlertSettings, rules_document

Discovery = Literal["file", "static", "kubernetes"]
TARGETS_DIR = "targets"
RULES_FILE = "rules/llmfleet.rules.yml"
CONFIG_FILE = "prometheus.yml"
HEADER = "# Rendered by `llmfleet render prometheus` from fleet.yaml; edit fleet.yaml and render again.\n"
FILE_SD_JOB = "llmfleet"
"""The job that reads ``targets/*.json``; each target group sets its own ``job`` label, which wins."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint to scrape: its job (``llmfleet-gateway``, ``llmfleet-engine``, ``llmfleet-control``), base URL
    (``/metrics`` is appended to its path) and extra labels (``replica``, ``pool``, ``capacity_type``...)."""

    job: str
    url: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScrapeSettings:
    """Scrape-side knobs of ``prometheus.yml``."""

    discovery: Discovery | None = None
    """``None``: kubernetes when fleet.yaml has that section, static when it lists gateway.replicas, else file."""
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    alertmanager: str | None = None
    """``host:port`` of an Alertmanager to send alerts to (none: alerts only show in Prometheus)."""


def _address(url: str, key: str) -> tuple[str, str, str]:
    """(scheme, host:port, metrics path) of a base URL; errors name ``key``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: {url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}", parts.path.rstrip("/") + "/metrics"


def _group(target: ScrapeTarget, key: str, with_job: bool) -> dict[str, Any]:
    scheme, address, path = _address(target.url, key)
    labels = {"job": target.job} if with_job else {}
    labels.update(target.labels)
    if scheme != "http":
        labels["__scheme__"] = scheme
    if path != "/metrics":
        labels["__metrics_path__"] = path
    return {"targets": [address], "labels": labels}


def render_file_sd(targets: Iterable[ScrapeTarget]) -> str:
    """A Prometheus ``file_sd`` target file (JSON): one group per target, its labels including ``job``."""
    groups = [_group(t, f"targets[{i}].url", with_job=True) for i, t in enumerate(targets)]
    return json.dumps(groups, indent=2) + "\n"


def file_sd_path(prometheus_dir: Path, name: str = "llmfleet-up") -> Path:
    """Where a target file named ``name`` goes so the rendered ``prometheus.yml`` in ``prometheus_dir`` reads it."""
    return prometheus_dir / TARGETS_DIR / f"{name}.json"


def write_file_sd(path: Path, targets: Iterable[ScrapeTarget]) -> None:
    """Write a target file atomically (Prometheus watches the folder and must never read half a file)."""
    text = render_file_sd(targets)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json.part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _discovery(cfg: FleetConfig, s: ScrapeSettings) -> Discovery:
    if s.discovery is not None:
        if s.discovery == "kubernetes" and cfg.kubernetes is None:
            raise ConfigError("--discovery kubernetes: fleet.yaml has no `kubernetes:` section")
        return s.discovery
    if cfg.kubernetes is not None:
        return "kubernetes"
    return "static" if cfg.gateway.replicas else "file"


def _gateway_url(cfg: FleetConfig) -> str:
    host = cfg.gateway.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
    return f"http://{host}:{cfg.gateway.port}"


def _static_jobs(cfg: FleetConfig) -> list[dict[str, Any]]:
    gateway = ScrapeTarget(JOB_GATEWAY, _gateway_url(cfg))
    engines = [ScrapeTarget(JOB_ENGINE, r.url, {"pool": r.pool}) for r in cfg.gateway.replicas]
    jobs = [{"job_name": JOB_GATEWAY, "static_configs": [_group(gateway, "gateway.port", with_job=False)]}]
    if engines:
        groups = [_group(t, f"gateway.replicas[{i}].url", with_job=False) for i, t in enumerate(engines)]
        jobs.append({"job_name": JOB_ENGINE, "static_configs": groups})
    return jobs


def _kubernetes_job(cfg: FleetConfig) -> dict[str, Any]:
    k = cfg.kubernetes
    assert k is not None
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_service_name"], "regex": k.service, "action": "keep"},
    ]
    if k.port_name:
        relabel.append(
            {"source_labels": ["__meta_kubernetes_endpointslice_port_name"], "regex": k.port_name, "action": "keep"}
        )
    # Pool and capacity type: the pod's labels, overridden by the EndpointSlice's (as the provider reads them).
    for label, meta in (("pool", "llmfleet_io_pool"), ("capacity_type", "llmfleet_io_capacity_type")):
        for source in (f"__meta_kubernetes_pod_label_{meta}", f"__meta_kubernetes_endpointslice_label_{meta}"):
            relabel.append({"source_labels": [source], "regex": "(.+)", "target_label": label})
    relabel.append({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "replica"})
    return {
        "job_name": JOB_ENGINE,
        "scheme": k.scheme,
        "kubernetes_sd_configs": [{"role": "endpointslice", "namespaces": {"names": [k.namespace]}}],
        "relabel_configs": relabel,
    }


def prometheus_config(cfg: FleetConfig, s: ScrapeSettings) -> dict[str, Any]:
    """The ``prometheus.yml`` mapping."""
    mode = _discovery(cfg, s)
    doc: dict[str, Any] = {
        "global": {"scrape_interval": s.scrape_interval, "evaluation_interval": s.evaluation_interval},
        "rule_files": ["rules/*.yml"],
    }
    if s.alertmanager:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [s.alertmanager]}]}]}
    jobs: list[dict[str, Any]] = [
        {
            "job_name": FILE_SD_JOB,
            "file_sd_configs": [{"files": [f"{TARGETS_DIR}/*.json"], "refresh_interval": "30s"}],
        }
    ]
    if mode == "static":
        jobs += _static_jobs(cfg)
    elif mode == "kubernetes":
        jobs.append(_kubernetes_job(cfg))
    doc["scrape_configs"] = jobs
    return doc


def dump_yaml(doc: Any) -> str:
    """Readable YAML: keys in the order built, block style, wide lines (PromQL stays on one line)."""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200, allow_unicode=True)


def prometheus_files(cfg: FleetConfig, scrape: ScrapeSettings, alerts: AlertSettings) -> dict[str, str]:
    """Every file of the rendered Prometheus folder: relative path -> text."""
    return {
        CONFIG_FILE: HEADER + dump_yaml(prometheus_config(cfg, scrape)),
        RULES_FILE: HEADER + dump_yaml(rules_document(cfg, alerts)),
    }
