"""The ``fleet`` and ``models`` sections, the root :class:`FleetConfig`, and loading a whole fleet.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError

from llmfleet.config._base import _Section, format_validation_error, load_yaml, validate_section
from llmfleet.config.autoscaling import AutoscalerConfig, KubernetesProviderConfig
from llmfleet.config.deploy import DeployConfig
from llmfleet.config.engine import SimEngineConfig, VLLMEngineConfig
from llmfleet.config.gateway import GatewayConfig
from llmfleet.config.routing import RoutingConfig
from llmfleet.config.validation import ValidateConfig
from llmfleet.errors import ConfigError


class FleetSection(_Section):
    """`llmfleet up`: how many replicas of which engine, and where the gateway listens (section ``fleet``)."""

    replicas: int = Field(2, ge=1, le=64, description="Replicas to start.")
    engine: Literal["sim", "vllm"] = Field("sim", description="Simulated engines or real vLLM.")
    host: str = Field("127.0.0.1", description="Address the gateway and replicas bind.")
    port: int = Field(8080, ge=1, le=65535, description="Gateway port (the API clients use).")
    ready_timeout_s: float = Field(120.0, gt=0, description="How long a replica may take to answer /health.")
    run_dir: str = Field(".llmfleet", description="Where run logs go (one folder per run).")
    min_replicas: int | None = Field(None, ge=1, description="Autoscaler floor (default: replicas).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaler ceiling (default: replicas).")
    spot_replicas: int = Field(0, ge=0, description="How many of the initial replicas run as spot capacity.")
    rollout_verify_s: float = Field(5.0, ge=0, description="A rollout watches the new replicas this long.")


class ModelConfig(_Section):
    """One model of a multi-model fleet (an entry of ``models:``; see docs/multi-model.md).

    ``engine``, ``vllm`` and ``autoscaler`` hold only what differs from the fleet-wide sections of the same names;
    the rest is inherited. Replica counts and bounds default to the ``fleet`` section's.
    """

    name: str = Field(min_length=1, description="Served model name: what clients send as ``model``.")
    replicas: int | None = Field(None, ge=1, le=64, description="Replicas to start (default: fleet.replicas).")
    min_replicas: int | None = Field(
        None, ge=1, description="Autoscaler floor (default: fleet.min_replicas, replicas)."
    )
    max_replicas: int | None = Field(None, ge=1, description="Autoscaler ceiling (default: fleet.max_replicas, ...).")
    spot_replicas: int = Field(0, ge=0, description="How many of the initial replicas run as spot capacity.")
    pool: str = Field("default", min_length=1, description="Pool of this model's replicas (tiered routing, cost).")
    engine: dict[str, Any] = Field(
        default_factory=dict, description="Simulated engine settings over the ``engine`` section (gpu, model, ...)."
    )
    vllm: dict[str, Any] = Field(default_factory=dict, description="vLLM settings over the ``vllm`` section.")
    autoscaler: dict[str, Any] = Field(
        default_factory=dict, description="Autoscaler settings over the ``autoscaler`` section (policies, targets)."
    )


class FleetConfig(_Section):
    """The root of ``fleet.yaml``: every section, validated once. Unknown sections and keys are errors naming them.

    Every command that reads a config file (``up``, ``gateway``, ``engine sim``, ``engine vllm``, ``render``...)
    loads it with :func:`load_fleet_config` and takes the sections it needs, so a file valid for one is valid for all.
    """

    fleet: FleetSection = Field(default_factory=FleetSection)
    engine: SimEngineConfig = Field(default_factory=SimEngineConfig)
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    autoscaler: AutoscalerConfig = Field(default_factory=AutoscalerConfig)
    kubernetes: KubernetesProviderConfig | None = Field(None, description="Only when the fleet runs on Kubernetes.")
    deploy: DeployConfig = Field(
        default_factory=DeployConfig, description="Kubernetes manifests and the L7 tier (`llmfleet render`)."
    )
    validation: ValidateConfig = Field(
        default_factory=ValidateConfig,
        # Written ``validate:`` in fleet.yaml; the attribute has another name because BaseModel.validate exists.
        validation_alias=AliasChoices("validate", "validation"),
        serialization_alias="validate",
        description="Pre-production checks and their targets (section ``validate``; `llmfleet validate`).",
    )
    models: list[ModelConfig] = Field(
        default_factory=list,
        description="Several models in one `llmfleet up` fleet, each with its own replicas and autoscaler (empty: "
        "the one model of the engine/vllm sections).",
    )


def parse_fleet_config(data: dict[str, Any], source: str = "") -> FleetConfig:
    """Validate a fleet.yaml mapping; errors name the dotted key (prefixed by ``source`` when given)."""
    try:
        cfg = FleetConfig.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc)
        raise ConfigError(f"{source}: {msg}" if source else msg) from None
    model_settings(cfg, source)  # each entry's merged sections, checked once for every command
    return cfg


@dataclass(frozen=True)
class ModelSettings:
    """One model of a fleet with everything resolved: its entry's overrides merged over the fleet-wide sections."""

    name: str
    """Served model name."""
    replicas: int
    spot_replicas: int
    pool: str
    engine: SimEngineConfig
    """Its simulated engine (``served_model_name`` is ``name``)."""
    vllm: VLLMEngineConfig
    """Its vLLM settings (``served_model_name`` is ``name``)."""
    autoscaler: AutoscalerConfig
    """Its controller; ``min_replicas``/``max_replicas`` are the entry's bounds."""


def model_settings(cfg: FleetConfig, source: str = "") -> list[ModelSettings]:
    """The entries of ``models:`` resolved (empty for a single-model fleet); :class:`ConfigError` naming the key
    (``models[1].engine.max_num_seqs: ...``).

    Bounds: an entry's ``autoscaler.min_replicas`` wins over its ``min_replicas``, then the ``autoscaler`` section's,
    then ``fleet.min_replicas``, then its ``replicas`` (the same order for ``max_replicas``, which is at least
    ``replicas``).
    """
    where = f"{source}: " if source else ""
    out: list[ModelSettings] = []
    seen: dict[str, int] = {}
    auto_top = cfg.autoscaler.model_dump(exclude_unset=True)
    for i, m in enumerate(cfg.models):
        key = f"models[{i}]"
        if m.name in seen:
            raise ConfigError(f"{where}{key}.name: {m.name!r} is already the name of models[{seen[m.name]}]")
        seen[m.name] = i
        for section, named in (
            ("engine", m.engine.get("served_model_name")),
            ("vllm", m.vllm.get("served_model_name")),
        ):
            if named is not None and named != m.name:
                raise ConfigError(f"{where}{key}.{section}.served_model_name: the entry's name ({m.name!r}) is served")
        if m.engine.get("time_scale", cfg.engine.time_scale) != cfg.engine.time_scale:
            raise ConfigError(
                f"{where}{key}.engine.time_scale: every model runs on the fleet's clock; set engine.time_scale"
            )
        engine = validate_section(
            SimEngineConfig,
            merge_overrides(cfg.engine.model_dump(), {**m.engine, "served_model_name": m.name}),
            f"{where}{key}.engine",
        )
        vllm = validate_section(
            VLLMEngineConfig,
            merge_overrides(cfg.vllm.model_dump(), {**m.vllm, "served_model_name": m.name}),
            f"{where}{key}.vllm",
        )
        replicas = m.replicas or cfg.fleet.replicas
        auto = merge_overrides(auto_top, m.autoscaler)
        for bound, entry, fleet in (
            ("min_replicas", m.min_replicas, cfg.fleet.min_replicas),
            ("max_replicas", m.max_replicas, cfg.fleet.max_replicas),
        ):
            if bound not in m.autoscaler and entry is not None:
                auto[bound] = entry
            auto.setdefault(bound, fleet)
            if auto[bound] is None:
                del auto[bound]
        auto.setdefault("min_replicas", replicas)
        auto.setdefault("max_replicas", max(replicas, auto["min_replicas"]))
        autoscaler = validate_section(AutoscalerConfig, auto, f"{where}{key}.autoscaler")
        if m.spot_replicas > replicas:
            raise ConfigError(f"{where}{key}.spot_replicas: {m.spot_replicas} is more than its {replicas} replicas")
        out.append(ModelSettings(m.name, replicas, m.spot_replicas, m.pool, engine, vllm, autoscaler))
    return out


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, mapping by mapping; ``None`` in ``overrides`` means "not given".

    CLI options are passed as ``{"fleet": {"replicas": None, "port": 9000}, ...}``: unset options keep the file's
    value, nested mappings (``engine.faults``) are merged key by key rather than replaced.
    """
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge_overrides(current, value)
        elif isinstance(value, Mapping):
            out[key] = merge_overrides({}, value)
        else:
            out[key] = value
    return out


def dotted_to_nested(items: Mapping[str, Any]) -> dict[str, Any]:
    """``{"engine.faults.error_rate": 1.0}`` -> ``{"engine": {"faults": {"error_rate": 1.0}}}`` (``--set`` options)."""
    out: dict[str, Any] = {}
    for dotted, value in items.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: {part} is set both as a value and as a section")
            node = child
        node[leaf] = merge_overrides(node[leaf], value) if isinstance(node.get(leaf), dict) else value
    return out


def load_fleet_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> FleetConfig:
    """Read and validate a whole fleet.yaml (defaults for everything when ``path`` is None).

    ``overrides`` (command-line options, see :func:`merge_overrides`) are applied before validation, so a bad
    option and a bad file key are reported the same way, naming the dotted key.
    """
    data = load_yaml(path) if path is not None else {}
    if overrides:
        data = merge_overrides(data, overrides)
    return parse_fleet_config(data, str(path) if path is not None else "")
