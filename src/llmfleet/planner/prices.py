"""A user's price file (``--price-file``) overriding the catalog's GPU prices.

Format::

    prices:
      H100: {on_demand_usd_per_hour: 2.20, spot_usd_per_hour: 0.95, date: "2026-12", source: "our contract"}
      A100-80G: {on_demand_usd_per_hour: 1.20}

Fields left out keep the catalog's value; ``date`` and ``source`` default to ``user`` and the file's path.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.config import load_yaml, validate_section
from llmfleet.errors import CatalogError, ConfigError
from llmfleet.perfmodel import Catalog, Price


class PriceOverride(BaseModel):
    """Any subset of :class:`llmfleet.perfmodel.Price`."""

    model_config = ConfigDict(extra="forbid")

    on_demand_usd_per_hour: float | None = Field(None, gt=0)
    spot_usd_per_hour: float | None = Field(None, gt=0)
    reserved_usd_per_hour: float | None = Field(None, gt=0)
    date: str | None = None
    source: str | None = None


def apply_price_file(catalog: Catalog, path: str | Path) -> Catalog:
    """A copy of ``catalog`` with the prices in ``path`` applied (errors name the file and key)."""
    where = f"--price-file {path}"
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"--price-file: {exc}") from None
    prices = data.get("prices")
    if not isinstance(prices, dict):
        raise ConfigError(f"{where}: expected a 'prices' mapping of GPU name -> price fields")
    replaced: dict[str, Price] = {}
    for name, raw in prices.items():
        try:
            gpu = catalog.gpu(str(name))
        except CatalogError as exc:
            raise CatalogError(f"{where}: prices.{name}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: prices.{name} must be a mapping of price fields")
        override = validate_section(PriceOverride, raw, f"{where}: prices.{name}")
        fields = {k: v for k, v in override.model_dump().items() if v is not None}
        fields.setdefault("date", "user")
        fields.setdefault("source", str(path))
        replaced[gpu.name] = gpu.price.model_copy(update=fields)
    gpus = {
        key: gpu.model_copy(update={"price": replaced[gpu.name]}) if gpu.name in replaced else gpu
        for key, gpu in catalog.gpus.items()
    }
    return Catalog(gpus=gpus, models=dict(catalog.models))
