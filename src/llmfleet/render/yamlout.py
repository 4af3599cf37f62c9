"""Readable YAML for rendered artefacts: block style, keys in the order built, multi-line strings as ``|`` blocks.

:func:`write_rendered` writes one file per concern into a folder and removes files a previous render wrote that
this one no longer produces (a deleted pool must not linger for ``kubectl apply -f DIR``). Only files matching the
target's own pattern and starting with the header line are removed, so targets can share a folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from llmfleet.errors import ConfigError

HEADER = "# Rendered by llmfleet from fleet.yaml; edit fleet.yaml and render again rather than this file.\n"


class _Dumper(yaml.SafeDumper):
    """SafeDumper without anchors/aliases, and with block scalars for multi-line strings."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(doc: Any) -> str:
    """One YAML document, readable (keys in insertion order, wide lines)."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def dump_documents(docs: Iterable[Mapping[str, Any]]) -> str:
    """Several documents separated by ``---``, preceded by the rendered-file header."""
    return HEADER + "".join(f"---\n{dump_yaml(dict(d))}" for d in docs)


def write_rendered(out_dir: Path, files: Mapping[str, str], stale_glob: str | None = None) -> list[Path]:
    """Write ``files`` (name -> text) into ``out_dir``; remove rendered ``stale_glob`` files not in ``files``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(out_dir.glob(stale_glob)) if stale_glob else []:
            if old.is_file() and old.name not in files:
                with old.open() as f:
                    first = f.readline()
                if first == HEADER:
                    old.unlink()
        written = []
        for name, text in files.items():
            path = out_dir / name
            path.write_text(text)
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out_dir}: {exc}") from None
    return written
