"""Workloads as sequences of chat requests, seeded (``random.Random``) so runs are repeatable.

A *conversation* has its own long system prompt and grows turn by turn (each turn appends the previous answer and a
new user message), so consecutive requests of one conversation share a long prefix — what prefix-cache-aware routing
exploits. The *random* workload has no shared prefixes at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "zulu",
)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


@dataclass
class Conversation:
    """One multi-turn chat; :meth:`next_request` gives the messages for the next turn."""

    system: str
    rng: random.Random
    user_words: int
    messages: list[dict[str, str]] = field(default_factory=list)

    def next_request(self) -> list[dict[str, str]]:
        if not self.messages:
            self.messages.append({"role": "system", "content": self.system})
        self.messages.append({"role": "user", "content": _text(self.rng, self.user_words)})
        return list(self.messages)

    def record_answer(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})


def conversations(n: int, seed: int, system_words: int = 800, user_words: int = 30) -> list[Conversation]:
    """``n`` conversations, each with its own ~``system_words``-word system prompt."""
    rng = random.Random(seed)
    return [
        Conversation(f"[conversation {i}] " + _text(rng, system_words), random.Random(rng.random()), user_words)
        for i in range(n)
    ]


def random_prompts(n: int, seed: int, words: int = 400) -> list[list[dict[str, str]]]:
    """``n`` single-turn requests with unrelated prompts."""
    rng = random.Random(seed)
    return [[{"role": "user", "content": f"[{i}] " + _text(rng, words)}] for i in range(n)]


def user_pauses(mean_ms: float, seed: int) -> Callable[[], float] | None:
    """Seconds a user pauses between turns, drawn uniformly from 0 to twice ``mean_ms`` (seeded), for
    ``run_conversations(think_s=...)``; None for 0 (a closed loop: each turn sent when the last one ends)."""
    if not mean_ms:
        return None
    rng = random.Random(seed)
    return lambda: rng.uniform(0, 2 * mean_ms / 1000)
