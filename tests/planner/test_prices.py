"""A user's price file overrides the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.errors import ConfigError
from llmfleet.perfmodel import load_catalog
from llmfleet.planner.prices import apply_price_file


def test_price_file_overrides_by_name_or_alias(tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text('prices:\n  h100-sxm: {on_demand_usd_per_hour: 2.2, date: "2026-12", source: contract}\n'
                 "  L40S: {spot_usd_per_hour: 0.2}\n")  # fmt: skip
    cat = apply_price_file(load_catalog(), f)
    h100 = cat.gpu("H100").price
    assert (h100.on_demand_usd_per_hour, h100.spot_usd_per_hour, h100.date, h100.source) == (
        2.2, 1.08, "2026-12", "contract"
    )  # fmt: skip
    assert cat.gpu("h100-sxm5").price.on_demand_usd_per_hour == 2.2  # every alias sees it
    l40s = cat.gpu("L40S").price
    assert (l40s.spot_usd_per_hour, l40s.on_demand_usd_per_hour, l40s.source) == (0.2, 0.86, str(f))
    assert load_catalog().gpu("H100").price.on_demand_usd_per_hour == 2.69  # the bundled catalog is untouched


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("prices:\n  TPU9: {on_demand_usd_per_hour: 1}\n", "prices.TPU9: unknown GPU"),
        ("prices:\n  H100: {on_demand_usd_per_hour: -1}\n", "prices.H100.on_demand_usd_per_hour"),
        ("prices:\n  H100: {price: 1}\n", "prices.H100.price"),
        ("gpus: []\n", "expected a 'prices' mapping"),
    ],
)
def test_bad_price_file(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        apply_price_file(load_catalog(), f)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--price-file"):
        apply_price_file(load_catalog(), tmp_path / "nope.yaml")
