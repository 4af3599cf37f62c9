"""Trace files: JSON Lines, one request per line — the format ``llmfleet simulate`` reads too.

Fields: ``timestamp`` (seconds from the start, >= 0), ``input_tokens`` and ``output_tokens`` (integers >= 1), and
optionally ``session_id`` and ``prefix_id`` (strings or integers) and ``prefix_tokens`` (the length of the shared
prefix; default half of ``input_tokens`` when ``prefix_id`` is set). Other fields are ignored; blank lines are skipped.
Requests are replayed in timestamp order. Errors name the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmfleet.bench.spec import BenchRequest
from llmfleet.errors import ConfigError


def _int_field(obj: dict[str, Any], key: str, where: str, minimum: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"{where}: {key!r} must be a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: {key!r} must be >= {minimum}, got {value!r}")
    return int(value)


def _id_field(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}: {key!r} must be a string or an integer, got {value!r}")
    return str(value)


def parse_trace_line(line: str, index: int, where: str) -> BenchRequest:
    """One line of a trace; ``where`` (``file:line``) prefixes every error."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    ts = obj.get("timestamp")
    if ts is None:
        raise ConfigError(f"{where}: missing 'timestamp'")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise ConfigError(f"{where}: 'timestamp' must be a number of seconds >= 0, got {ts!r}")
    n_in = _int_field(obj, "input_tokens", where, 1)
    n_out = _int_field(obj, "output_tokens", where, 1)
    prefix_id = _id_field(obj, "prefix_id", where)
    prefix_n = _int_field(obj, "prefix_tokens", where, 0, default=n_in // 2) if prefix_id is not None else 0
    if prefix_n > n_in:
        raise ConfigError(f"{where}: 'prefix_tokens' ({prefix_n}) must be <= 'input_tokens' ({n_in})")
    return BenchRequest(
        index,
        n_in,
        n_out,
        at_s=float(ts),
        session_id=_id_field(obj, "session_id", where),
        prefix_id=prefix_id,
        prefix_tokens=prefix_n,
    )


def load_trace(path: Path) -> list[BenchRequest]:
    """Every request of the trace at ``path``, sorted by timestamp (stable), re-indexed in that order."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--trace: cannot read {path}: {exc.strerror or exc}") from None
    rows: list[BenchRequest] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            rows.append(parse_trace_line(line, len(rows), f"{path}:{lineno}"))
    if not rows:
        raise ConfigError(f"--trace: {path} holds no requests")
    rows.sort(key=lambda r: r.at_s or 0.0)
    return [
        BenchRequest(i, r.input_tokens, r.output_tokens, r.at_s, r.session_id, r.prefix_id, r.prefix_tokens)
        for i, r in enumerate(rows)
    ]
