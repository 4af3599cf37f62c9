"""GPU and model catalogs: data files (``data/*.yaml``) that users can extend or override with their own files."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmfleet.config import load_yaml, validate_section
from llmfleet.errors import CatalogError

Precision = Literal["bf16", "fp8", "int4"]
#: Bytes per weight parameter. INT4 carries group scales/zeros (~4% on top of 0.5 bytes).
WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "int4": 0.52}
#: Bytes per KV-cache element.
KV_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0}


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Entry):
    """USD per GPU-hour, with when and where the figure came from."""

    on_demand_usd_per_hour: float = Field(gt=0)
    spot_usd_per_hour: float | None = Field(None, gt=0)
    reserved_usd_per_hour: float | None = Field(None, gt=0)
    date: str
    source: str


class GPU(_Entry):
    """One accelerator model."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    memory_gib: float = Field(gt=0)
    hbm_bandwidth_tbps: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = Field(None, gt=0)
    price: Price

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.hbm_bandwidth_tbps * 1e12

    def flops(self, precision: str) -> float:
        """Dense FLOP/s for matmuls with weights in ``precision`` (weight-only formats compute in BF16)."""
        if precision == "fp8" and self.fp8_tflops is not None:
            return self.fp8_tflops * 1e12
        return self.bf16_tflops * 1e12


class MoE(_Entry):
    num_experts: int = Field(ge=1)
    experts_per_token: int = Field(ge=1)


class Model(_Entry):
    """One model architecture."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    params_total_b: float = Field(gt=0)
    params_active_b: float = Field(gt=0)
    layers: int = Field(ge=1)
    hidden: int = Field(ge=1)
    heads: int = Field(ge=1)
    kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    vocab: int = Field(ge=1)
    max_context: int = Field(ge=1)
    moe: MoE | None = None

    def weight_bytes(self, precision: str) -> float:
        """Bytes of all weights (MoE: every expert must be resident)."""
        return self.params_total_b * 1e9 * _weight_bytes(precision)

    def kv_bytes_per_token(self, kv_precision: str = "bf16") -> int:
        """2 (K and V) x layers x kv_heads x head_dim x bytes per element, for the whole model (all TP ranks)."""
        if kv_precision not in KV_BYTES:
            raise CatalogError(f"unknown KV precision {kv_precision!r} (choose from {sorted(KV_BYTES)})")
        return int(2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES[kv_precision])


def _weight_bytes(precision: str) -> float:
    if precision not in WEIGHT_BYTES:
        raise CatalogError(f"unknown precision {precision!r} (choose from {sorted(WEIGHT_BYTES)})")
    return WEIGHT_BYTES[precision]


_T = TypeVar("_T", "GPU", "Model")


def _key(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class Catalog:
    """GPUs and models by name (case-insensitive, aliases allowed)."""

    gpus: dict[str, GPU] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)

    def gpu(self, name: str) -> GPU:
        """Look up a GPU; :class:`CatalogError` lists the known names."""
        return _lookup(self.gpus, name, "GPU")

    def model(self, name: str) -> Model:
        """Look up a model; :class:`CatalogError` lists the known names."""
        return _lookup(self.models, name, "model")

    def gpu_names(self) -> list[str]:
        return sorted({g.name for g in self.gpus.values()})

    def model_names(self) -> list[str]:
        return sorted({m.name for m in self.models.values()})


def _lookup(table: dict[str, _T], name: str, what: str) -> _T:
    try:
        return table[_key(name)]
    except KeyError:
        names = sorted({v.name for v in table.values()})
        raise CatalogError(f"unknown {what} {name!r}; known: {', '.join(names)}") from None


def _entries(data: dict[str, Any], section: str, source: str) -> list[dict[str, Any]]:
    items = data.get(section, [])
    if not isinstance(items, list):
        raise CatalogError(f"{source}: {section} must be a list")
    return items


def load_catalog(extra_files: list[str | Path] | None = None) -> Catalog:
    """The bundled catalog, with entries from ``extra_files`` added or overriding by name."""
    gpus: dict[str, GPU] = {}
    models: dict[str, Model] = {}
    sources: list[tuple[str, dict[str, Any]]] = []
    for fname in ("gpus.yaml", "models.yaml"):
        text = resources.files("llmfleet.perfmodel").joinpath("data", fname).read_text()
        sources.append((fname, yaml.safe_load(text)))
    for path in extra_files or []:
        sources.append((str(path), load_yaml(path)))
    for source, data in sources:
        for i, raw in enumerate(_entries(data, "gpus", source)):
            gpu = validate_section(GPU, raw, f"{source}: gpus[{i}]")
            for n in [gpu.name, *gpu.aliases]:
                gpus[_key(n)] = gpu
        for i, raw in enumerate(_entries(data, "models", source)):
            model = validate_section(Model, raw, f"{source}: models[{i}]")
            for n in [model.name, *model.aliases]:
                models[_key(n)] = model
    return Catalog(gpus=gpus, models=models)
