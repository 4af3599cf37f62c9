"""Render a :class:`BenchRequest` into prompt text of about ``input_tokens`` tokens, cheaply and repeatably.

Text is a stream of short common English words, each one token for the simulated engine's tokenizer and for the
usual BPE tokenizers (so counts are close, not exact: chat templates add a few tokens; the server's ``usage`` says
what it really saw). A *keyed* stream (a ``prefix_id`` or ``session_id``) is the same text every time, so requests
sharing a key share a prefix; other requests start with their own index and a random offset, so they share nothing.
"""

from __future__ import annotations

import random
import zlib

from llmfleet.bench.spec import BenchRequest

_TEXT = (
    "the of and to in is it you that he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each she do how will up other about out many then "
    "them so some her would make like him into time has look two more go see way could no my than been call who "
    "its now find long down day did get come made may part over new take only know work live year back give most "
    "very good man our just name form much line turn move same tell boy set end does why ask went men read need "
    "land home us hand high kind near add food four tree city keep eye last door sea draw left late run test"
)
_WORDS = tuple(w for w in _TEXT.split() if len(w) <= 4)
"""Words of at most 4 letters: one token each for the simulated engine (and for common BPE vocabularies)."""
POOL_WORDS = 1 << 16


class PromptBuilder:
    """Prompts for one run; ``seed`` fixes the word pool and the offsets of unkeyed requests."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._pool = [" " + rng.choice(_WORDS) for _ in range(POOL_WORDS)]
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
