"""Deterministic text embeddings and a reverse vocabulary for the simulated engine.

An embedding is the normalised sum of one fixed pseudo-random unit vector per token (seeded by the token id), so
the same text always gives the same vector and texts sharing tokens point in similar directions: cosine similarity
is a usable stand-in for relevance in ``/v1/score`` and ``/v1/rerank``. Token ids are hashes (see
:mod:`llmfleet.engines.sim.tokenizer`), so detokenizing needs a table of the pieces seen: :class:`Vocabulary`
knows every piece the sim generates and learns the pieces of each text it tokenizes (bounded).
"""

from __future__ import annotations

import base64
import math
import random
import struct
from collections import OrderedDict
from collections.abc import Sequence

from llmfleet.engines.sim.tokenizer import generated_pieces, piece_id, tokenize

EMBEDDING_DIMS = 64
"""Length of the sim's embeddings (``dimensions`` in a request may ask for fewer)."""


def _token_vector(token: int, dims: int) -> list[float]:
    rng = random.Random(token * 7919 + dims)
    return [rng.gauss(0.0, 1.0) for _ in range(dims)]


def embed_ids(ids: Sequence[int], dims: int = EMBEDDING_DIMS) -> list[float]:
    """The unit-length embedding of a token-id sequence (all zeros for an empty one)."""
    acc = [0.0] * dims
    for t in ids:
        for i, x in enumerate(_token_vector(t, dims)):
            acc[i] += x
    norm = math.sqrt(sum(x * x for x in acc))
    return [x / norm for x in acc] if norm else acc


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is zero)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def encode_base64(vector: Sequence[float]) -> str:
    """``encoding_format: base64``: little-endian float32, as the OpenAI API (and the openai SDK's default)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class Vocabulary:
    """Token id -> piece, for ``/detokenize``: the generated pieces, plus up to ``max_learned`` pieces learned from
    tokenized text (oldest forgotten first). An unknown id detokenizes to ``<|id|>``."""

    def __init__(self, max_learned: int = 100_000) -> None:
        self._fixed = {piece_id(p): p for p in generated_pieces()}
        self._learned: OrderedDict[int, str] = OrderedDict()
        self._max = max_learned

    def learn(self, text: str) -> None:
        """Remember the pieces of ``text``."""
        for p in tokenize(text):
            pid = piece_id(p)
            if pid in self._fixed:
                continue
            self._learned[pid] = p
            self._learned.move_to_end(pid)
            if len(self._learned) > self._max:
                self._learned.popitem(last=False)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""
        out = []
        for t in ids:
            piece = self._fixed.get(t)
            if piece is None:
                piece = self._learned.get(t, f"<|{t}|>")
            out.append(piece)
        return "".join(out)
