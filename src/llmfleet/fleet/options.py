"""What `llmfleet up` runs, resolved once from fleet.yaml and the command line, and checked before anything starts.

:func:`build_options` merges command-line options into the file and validates the whole document with the root
:class:`~llmfleet.config.FleetConfig`; :func:`preflight` then checks what the schema cannot (catalog names, whether
the model fits the GPU, the routing policy, the gateway port), so a mistake is one line naming the key before any
process is started.
"""

from __future__ import annotations

import random
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmfleet.clock import WallClock
from llmfleet.config import (
    AutoscalerConfig,
    FleetConfig,
    SimEngineConfig,
    VLLMEngineConfig,
    load_yaml,
    merge_overrides,
    parse_fleet_config,
    validate_section,
)
from llmfleet.errors import CatalogError, ConfigError


@dataclass
class UpOptions:
    """Everything `llmfleet up` needs: the validated fleet.yaml (CLI options applied) and the run's admin token."""

    config: FleetConfig = field(default_factory=FleetConfig)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def replicas(self) -> int:
        return self.config.fleet.replicas

    @property
    def engine(self) -> Literal["sim", "vllm"]:
        return self.config.fleet.engine

    @property
    def sim(self) -> SimEngineConfig:
        return self.config.engine

    @property
    def vllm(self) -> VLLMEngineConfig:
        return self.config.vllm

    @property
    def autoscaler(self) -> AutoscalerConfig:
        return self.config.autoscaler

    @property
    def host(self) -> str:
        return self.config.fleet.host

    @property
    def port(self) -> int:
        return self.config.fleet.port

    @property
    def run_root(self) -> Path:
        return Path(self.config.fleet.run_dir)

    @property
    def ready_timeout_s(self) -> float:
        return self.config.fleet.ready_timeout_s

    @property
    def spot_replicas(self) -> int:
        return min(self.config.fleet.spot_replicas, self.config.fleet.replicas)

    @property
    def rollout_verify_s(self) -> float:
        return self.config.fleet.rollout_verify_s

    @property
    def time_scale(self) -> float:
        """Simulated seconds per wall second (the autoscaler's clock runs this much faster); 1 for real vLLM."""
        return self.config.engine.time_scale if self.engine == "sim" else 1.0

    def gateway_document(self) -> dict[str, Any]:
        """The effective fleet.yaml handed to the gateway process: what `up` validated, nothing re-read."""
        doc = self.config.model_copy(
            update={"gateway": self.config.gateway.model_copy(update={"host": self.host, "port": self.port})}
        )
        return doc.model_dump(mode="json", exclude_none=True)


def build_options(config_path: Path | None, overrides: dict[str, Any]) -> UpOptions:
    """fleet.yaml with the command-line ``overrides`` (``{"fleet": {...}, "engine": {...}}``, ``None`` = not
    given) merged in, validated as one document; errors name the dotted key.

    The autoscaler's bounds default to ``fleet.min_replicas`` / ``fleet.max_replicas`` (themselves defaulting to
    ``fleet.replicas``), so a fleet started with ``--replicas 4`` stays at 4 unless asked to scale.
    """
    source = str(config_path) if config_path is not None else ""
    data = merge_overrides(load_yaml(config_path) if config_path is not None else {}, overrides)
    cfg = parse_fleet_config(data, source)
    auto = cfg.autoscaler.model_dump(exclude_unset=True)
    auto.setdefault("min_replicas", cfg.fleet.min_replicas or cfg.fleet.replicas)
    auto.setdefault("max_replicas", cfg.fleet.max_replicas or max(cfg.fleet.replicas, auto["min_replicas"]))
    autoscaler = validate_section(AutoscalerConfig, auto, f"{source}: autoscaler" if source else "autoscaler")
    return UpOptions(config=cfg.model_copy(update={"autoscaler": autoscaler}))


def preflight(opts: UpOptions) -> None:
    """Checks the schema cannot make, before any process starts; :class:`ConfigError` naming the key."""
    if opts.engine == "sim":
        check_sim_engine(opts.sim)
    else:
        _check_vllm(opts.vllm, opts.replicas)
    from llmfleet.routing.factory import build_policy

    build_policy(opts.config.routing, WallClock(), random.Random(0))
    _check_port(opts.host, opts.port)


def check_sim_engine(sim: SimEngineConfig) -> None:
    """The GPU and model exist in the catalog and the model fits (what each replica would check at start-up)."""
    from llmfleet.engines.sim.server import build_engine
    from llmfleet.perfmodel import load_catalog

    catalog = load_catalog()
    for key, lookup, name in (("gpu", catalog.gpu, sim.gpu), ("model", catalog.model, sim.model)):
        try:
            lookup(name)
        except CatalogError as exc:
            raise ConfigError(f"engine.{key}: {exc}") from None
    build_engine(sim)  # sizes the KV cache: "engine: ... does not fit on 1 x L40S ..."


def _check_vllm(vllm: VLLMEngineConfig, replicas: int) -> None:
    if not vllm.model:
        raise ConfigError("vllm.model: give a model directory (e.g. made by `llmfleet demo-model DIR`) or --model")
    need = replicas * vllm.tensor_parallel_size
    if vllm.gpus is not None and len(vllm.gpus) < need:
        raise ConfigError(
            f"vllm.gpus: {replicas} replicas x tensor_parallel_size {vllm.tensor_parallel_size} need {need} GPUs, "
            f"{len(vllm.gpus)} listed"
        )


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"fleet.port: cannot listen on {host}:{port} ({exc.strerror})") from None
