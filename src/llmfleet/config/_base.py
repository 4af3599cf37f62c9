"""The base of every config section and the helpers that read YAML and name keys in errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmfleet.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_INDEXED_LISTS = frozenset({"models"})
"""Lists whose errors name entries as ``models[1].replicas`` (older lists keep ``deploy.pools.0.name``, quoted by
tests and docs)."""


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] in _INDEXED_LISTS:
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the full dotted key."""
    lines = []
    for err in exc.errors():
        key = _dotted(tuple(err.get("loc", ())))
        full = f"{prefix}.{key}" if prefix and key else (prefix or key)
        lines.append(f"{full}: {err.get('msg', 'invalid value')}")
    return "; ".join(lines)


def validate_section(model: type[_M], data: dict[str, Any], prefix: str = "") -> _M:
    """Validate ``data`` as ``model``, raising :class:`ConfigError` that names the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    return data
