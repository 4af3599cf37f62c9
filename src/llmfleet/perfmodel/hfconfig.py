"""A model catalog entry from a Hugging Face ``config.json`` (for models the bundled catalog does not list).

Parameters are counted from the architecture of a Llama-like decoder: embeddings (and an untied LM head), per layer
the attention projections (Q and O: hidden x heads x head_dim each; K and V: hidden x kv_heads x head_dim each), a
gated MLP (3 x hidden x intermediate; MoE: per expert) and two norms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmfleet.errors import ConfigError
from llmfleet.perfmodel.catalog import Model


def _int(cfg: dict[str, Any], key: str, source: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{source}: {key}: expected a positive integer, got {value!r}")
    return value


def model_from_hf_config(cfg: dict[str, Any], name: str, source: str = "model config") -> Model:
    """A :class:`Model` from a parsed ``config.json``; :class:`ConfigError` names the missing key."""
    text = cfg.get("text_config")
    if isinstance(text, dict):  # multimodal configs nest the language model's
        cfg = {**cfg, **text}
    hidden = _int(cfg, "hidden_size", source)
    layers = _int(cfg, "num_hidden_layers", source)
    heads = _int(cfg, "num_attention_heads", source)
    kv_heads = _int(cfg, "num_key_value_heads", source, heads)
    head_dim = _int(cfg, "head_dim", source, hidden // heads)
    vocab = _int(cfg, "vocab_size", source)
    inter = _int(cfg, "intermediate_size", source, 4 * hidden)
    max_context = _int(cfg, "max_position_embeddings", source, 4096)
    experts = cfg.get("num_local_experts") or cfg.get("num_experts")
    per_token = cfg.get("num_experts_per_tok")
    moe_inter = cfg.get("moe_intermediate_size") or inter
    attn = hidden * head_dim * (2 * heads + 2 * kv_heads)
    norms = 2 * hidden
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings", False) else 2) + hidden
    if isinstance(experts, int) and experts > 1 and isinstance(per_token, int) and per_token >= 1:
        expert = 3 * hidden * int(moe_inter)
        total = embed + layers * (attn + norms + experts * expert + hidden * experts)
        active = embed + layers * (attn + norms + per_token * expert + hidden * experts)
        moe: dict[str, int] | None = {"num_experts": experts, "experts_per_token": per_token}
    else:
        total = active = embed + layers * (attn + norms + 3 * hidden * inter)
        moe = None
    return Model.model_validate(
        {
            "name": name,
            "params_total_b": total / 1e9,
            "params_active_b": active / 1e9,
            "layers": layers,
            "hidden": hidden,
            "heads": heads,
            "kv_heads": kv_heads,
            "head_dim": head_dim,
            "vocab": vocab,
            "max_context": max_context,
            "moe": moe,
        }
    )


def load_hf_config(path: str | Path, name: str) -> Model:
    """Read ``path`` (a ``config.json``, or a model directory holding one) as a :class:`Model` named ``name``."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--model-config: {p} not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model-config: cannot read {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--model-config: {p} is not a JSON object")
    return model_from_hf_config(data, name, str(p))
