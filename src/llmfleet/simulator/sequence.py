"""Engine settings (:class:`EngineSpec`) and one request's state inside it (:class:`Seq`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3
"""A sequence's state: queued, computing its prompt, decoding, out of the replica."""


@dataclass(frozen=True)
class EngineSpec:
    """The engine settings the replica model needs (from ``engine`` in fleet.yaml and the performance model)."""

    kv_capacity_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    enable_prefix_caching: bool = True


class Seq:
    """One request's state inside a replica. ``job`` is the caller's object, handed back in callbacks."""

    __slots__ = (
        "cached_tokens",
        "d_end",
        "emitted",
        "held",
        "job",
        "join_ctx",
        "join_d",
        "pinned",
        "prefill_left",
        "prefix_key",
        "prefix_tokens",
        "prompt",
        "remaining",
        "session_key",
        "state",
    )

    def __init__(
        self,
        job: Any,
        prompt_tokens: int,
        output_tokens: int,
        prefix_key: str | None = None,
        prefix_tokens: int = 0,
        session_key: str | None = None,
    ) -> None:
        self.job = job
        self.prompt = prompt_tokens
        self.remaining = output_tokens
        self.prefix_key = prefix_key
        self.prefix_tokens = prefix_tokens
        self.session_key = session_key
        self.state = WAITING
        self.prefill_left = prompt_tokens
        self.held = 0
        self.pinned = 0
        self.join_d = 0
        self.join_ctx = 0
        self.d_end = 0
        self.emitted = False
        self.cached_tokens = 0
