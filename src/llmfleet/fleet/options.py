"""What `llmfleet up` runs, resolved once from fleet.yaml and the command line, and checked before anything starts.

:func:`build_options` merges command-line options into the file and validates the whole document with the root
:class:`~llmfleet.config.FleetConfig`; :func:`preflight` then checks what the schema cannot (catalog names, whether
the model fits the GPU, the routing policy, the gateway port), so a mistake is one line naming the key before any
process is started.

A fleet serves one model (the ``engine``/``vllm`` sections) or several (``models:``); either way
:attr:`UpOptions.models` lists them resolved (:class:`~llmfleet.config.ModelSettings`), a single model being the
one-entry case.
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
    ModelSettings,
    SimEngineConfig,
    VLLMEngineConfig,
    load_yaml,
    merge_overrides,
    model_settings,
    parse_fleet_config,
    validate_section,
)
from llmfleet.errors import CatalogError, ConfigError


@dataclass
class UpOptions:
    """Everything `llmfleet up` needs: the validated fleet.yaml (CLI options applied) and the run's admin token."""

    config: FleetConfig = field(default_factory=FleetConfig)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    models: list[ModelSettings] = field(default_factory=list)
    """The models the fleet serves, resolved (default: from ``config``; one entry for a single-model fleet)."""

    def __post_init__(self) -> None:
        if not self.models:
            self.models = model_settings(self.config) or [self._single_model()]

    def _single_model(self) -> ModelSettings:
        cfg = self.config
        if self.engine == "sim":
            name = cfg.engine.served_model_name or cfg.engine.model
        else:
            from llmfleet.engines.vllm import served_name

            name = served_name(cfg.vllm) if cfg.vllm.model else cfg.vllm.served_model_name or "-"
        return ModelSettings(
            name, cfg.fleet.replicas, self.spot_replicas, "default", cfg.engine, cfg.vllm, cfg.autoscaler
        )

    @property
    def multi_model(self) -> bool:
        """Whether fleet.yaml declares ``models:`` (each model gets its own replicas, controller and log folder)."""
        return bool(self.config.models)

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
    if cfg.models:  # each model has its own bounds (model_settings); the autoscaler section stays as written
        return UpOptions(config=cfg, models=model_settings(cfg, source))
    auto = cfg.autoscaler.model_dump(exclude_unset=True)
    auto.setdefault("min_replicas", cfg.fleet.min_replicas or cfg.fleet.replicas)
    auto.setdefault("max_replicas", cfg.fleet.max_replicas or max(cfg.fleet.replicas, auto["min_replicas"]))
    autoscaler = validate_section(AutoscalerConfig, auto, f"{source}: autoscaler" if source else "autoscaler")
    return UpOptions(config=cfg.model_copy(update={"autoscaler": autoscaler}))


def preflight(opts: UpOptions) -> None:
    """Checks the schema cannot make, before any process starts; :class:`ConfigError` naming the key."""
    for i, m in enumerate(opts.models):
        key = f"models[{i}]." if opts.multi_model else ""
        if opts.engine == "sim":
            check_sim_engine(m.engine, f"{key}engine")
        else:
            _check_vllm(m.vllm, m.replicas, f"{key}vllm")
    if opts.engine == "vllm" and opts.multi_model:
        _check_gpus_disjoint(opts.models)
    from llmfleet.routing.factory import build_policy

    build_policy(opts.config.routing, WallClock(), random.Random(0))
    _check_port(opts.host, opts.port)


def check_sim_engine(sim: SimEngineConfig, key: str = "engine") -> None:
    """The GPU and model exist in the catalog and the model fits (what each replica would check at start-up);
    errors name the key under ``key`` (the section: ``engine``, ``models[1].engine``)."""
    from llmfleet.engines.sim.server import build_engine
    from llmfleet.perfmodel import load_catalog

    catalog = load_catalog()
    for field_, lookup, name in (("gpu", catalog.gpu, sim.gpu), ("model", catalog.model, sim.model)):
        try:
            lookup(name)
        except CatalogError as exc:
            raise ConfigError(f"{key}.{field_}: {exc}") from None
    try:
        build_engine(sim)  # sizes the KV cache: "engine: ... does not fit on 1 x L40S ..."
    except ConfigError as exc:
        if key == "engine":
            raise
        raise ConfigError(f"{key}{str(exc).removeprefix('engine')}") from None


def _check_vllm(vllm: VLLMEngineConfig, replicas: int, key: str = "vllm") -> None:
    if not vllm.model:
        raise ConfigError(f"{key}.model: give a model directory (e.g. made by `llmfleet demo-model DIR`) or --model")
    need = replicas * vllm.tensor_parallel_size
    if vllm.gpus is not None and len(vllm.gpus) < need:
        raise ConfigError(
            f"{key}.gpus: {replicas} replicas x tensor_parallel_size {vllm.tensor_parallel_size} need {need} GPUs, "
            f"{len(vllm.gpus)} listed"
        )


def _check_gpus_disjoint(models: list[ModelSettings]) -> None:
    """Two models' vLLM replicas must not be given the same GPU."""
    owner: dict[int, int] = {}
    for i, m in enumerate(models):
        for gpu in m.vllm.gpus or []:
            if owner.setdefault(gpu, i) != i:
                raise ConfigError(f"models[{i}].vllm.gpus: GPU {gpu} is also models[{owner[gpu]}]'s")


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"fleet.port: cannot listen on {host}:{port} ({exc.strerror})") from None
