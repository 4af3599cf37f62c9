"""A deterministic local tokenizer and text generator, so token counts need no tokenizer download.

Rule (documented in docs/sim-engine.md): text is split left to right into pieces, each one of
  * an optional single whitespace character followed by 1-4 ASCII letters/digits  (``" Hell"``, ``"o"``),
  * an optional single whitespace character followed by one other non-space character  (``" ,"``, ``"é"``),
  * otherwise, a maximal run of whitespace (``"  "`` in ``"a  b"``).
Each piece is one token; its id is ``crc32(piece) % vocab_size``. English text averages ~3.5-4 characters per token,
close to real BPE tokenizers. Generated text is made of pieces ``" " + word`` with words of at most 4 letters, so
concatenated output re-tokenizes to exactly the same number of tokens (a gateway can resume a stream by appending
the text already sent to the prompt).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence

from llmfleet.api.types import ChatMessage

_PIECE = re.compile(r"\s?[A-Za-z0-9]{1,4}|\s?[^\sA-Za-z0-9]|\s+")
VOCAB_SIZE = 32000
_WORD_TEXT = (
    "the of and to in is it you that he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each she do how will up other about out many then "
    "them so some her would make like him into time has look two more go see way could no my than been call who "
    "its now find long down day did get come made may part over new take only know work live year back give most "
    "very good man our just name form much line turn move same tell boy set end does why ask went men read need "
    "land home us hand high kind near add food four tree city keep eye last door sea draw left late run test"
)
_WORDS = tuple(w for w in _WORD_TEXT.split() if len(w) <= 4)
CHAT_ROLE_PREFIX = "<|{role}|>\n"
CHAT_MESSAGE_END = "\n"


def tokenize(text: str) -> list[str]:
    """Split ``text`` into token pieces (see the module docstring for the rule)."""
    return _PIECE.findall(text)


def token_ids(text: str) -> list[int]:
    """Token ids of ``text``."""
    return [zlib.crc32(p.encode()) % VOCAB_SIZE for p in _PIECE.findall(text)]


def piece_id(piece: str) -> int:
    return zlib.crc32(piece.encode()) % VOCAB_SIZE


def generated_pieces() -> tuple[str, ...]:
    """Every piece :class:`TextGenerator` may produce."""
    return tuple(" " + w for w in _WORDS)


def render_chat(messages: Sequence[ChatMessage], add_generation_prompt: bool, continue_final_message: bool) -> str:
    """A simple chat template: ``<|role|>\\ncontent\\n`` per message, then ``<|assistant|>\\n`` to generate.

    With ``continue_final_message`` the last (assistant) message is left open so generation continues it.
    """
    parts: list[str] = []
    last = len(messages) - 1
    for i, m in enumerate(messages):
        parts.append(CHAT_ROLE_PREFIX.format(role=m.role) + m.text())
        if not (continue_final_message and i == last):
            parts.append(CHAT_MESSAGE_END)
    if add_generation_prompt and not continue_final_message:
        parts.append(CHAT_ROLE_PREFIX.format(role="assistant"))
    return "".join(parts)


class TextGenerator:
    """Produces output token pieces from a seeded generator (the same prompt and seed give the same text)."""

    def __init__(self, seed: int, prompt_ids: Sequence[int]) -> None:
        self._rng = random.Random(zlib.crc32(repr((seed, len(prompt_ids), tuple(prompt_ids[-64:]))).encode()))

    def next_piece(self) -> str:
        return " " + self._rng.choice(_WORDS)
