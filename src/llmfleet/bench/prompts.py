"""Render a :class:`BenchRequest` into prompt text of about ``input_tokens`` tokens, cheaply and repeatably.

Text is a stream of short common English words (the simulated engine's own generated pieces), each one token for
its tokenizer and for the usual BPE tokenizers (so counts are close, not exact: chat templates add a few tokens; the
server's ``usage`` says what it really saw). A *keyed* stream (a ``prefix_id`` or ``session_id``) is the same text
every time, so requests sharing a key share a prefix; other requests start with their own index and a random
offset, so they share nothing.
"""

from __future__ import annotations

import random
import zlib

from llmfleet.bench.spec import BenchRequest
from llmfleet.engines.sim.tokenizer import generated_pieces

_PIECES = generated_pieces()
"""The simulated engine's own output pieces (``" " + word`` of at most 4 letters): one token each for it (and for
common BPE vocabularies)."""
POOL_WORDS = 1 << 16


class PromptBuilder:
    """Prompts for one run; ``seed`` fixes the word pool and the offsets of unkeyed requests."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._pool = [rng.choice(_PIECES) for _ in range(POOL_WORDS)]
        self._rng = random.Random(rng.random())

    def _words(self, offset: int, n: int) -> str:
        pool, size = self._pool, len(self._pool)
        offset %= size
        parts: list[str] = []
        while n > 0:
            take = min(n, size - offset)
            parts.append("".join(pool[offset : offset + take]))
            n -= take
            offset = 0
        return "".join(parts)

    def _keyed(self, key: str, n: int) -> str:
        return self._words(zlib.crc32(key.encode()), n)

    def text(self, req: BenchRequest) -> str:
        """The prompt of ``req``: shared prefix, then the session's stream or the request's own words."""
        prefix_n = min(req.prefix_tokens, req.input_tokens) if req.prefix_id is not None else 0
        rest = req.input_tokens - prefix_n
        parts = [self._keyed(f"prefix:{req.prefix_id}", prefix_n)] if prefix_n else []
        if rest > 0:
            if req.session_id is not None:
                parts.append(self._keyed(f"session:{req.session_id}", rest))
            else:
                # The index first, so no two unkeyed prompts share even their first block.
                parts.append(f" r{req.index}" + self._words(self._rng.randrange(POOL_WORDS), rest - 1))
        return "".join(parts).lstrip()
