"""Write results: ``--out`` JSON (one run, or ``{"runs": [...]}`` for a sweep) and ``--csv`` (one row per run)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from llmfleet.errors import ConfigError

LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
_SCALARS = (
    "completed",
    "failed",
    "duration_s",
    "requests_per_s",
    "output_tokens_per_s",
    "input_tokens_per_s",
)


def _clean(obj: Any) -> Any:
    """JSON has no NaN: nan and inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def results_document(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``--out`` document: the run itself when there is one, ``{"runs": [...]}`` for a sweep."""
    return _clean(summaries[0]) if len(summaries) == 1 else {"runs": _clean(summaries)}  # type: ignore[no-any-return]


def csv_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One flat row: the load, the scalar figures and ``<latency>_<stat>`` columns."""
    row: dict[str, Any] = {"load": summary["load"]["label"]}
    row.update({k: summary[k] for k in _SCALARS})
    row["goodput_requests_per_s"] = summary["goodput"]["requests_per_s"]
    for name in LATENCIES:
        for stat, value in summary[name].items():
            row[f"{name}_{stat}"] = "" if value is None else value
    row["errors"] = ";".join(f"{k}={v}" for k, v in summary["errors"].items())
    row["client_cpu_fraction"] = summary["client"]["cpu_fraction"]
    return row


def _write(path: Path, option: str, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write {path}: {exc.strerror or exc}") from None


def write_json(path: Path, summaries: list[dict[str, Any]]) -> None:
    """Write the ``--out`` document."""
    _write(path, "--out", json.dumps(results_document(summaries), indent=2) + "\n")


def write_csv(path: Path, summaries: list[dict[str, Any]]) -> None:
    """Write one CSV row per run."""
    rows = [csv_row(s) for s in summaries]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _write(path, "--csv", buf.getvalue())
