"""Generated workloads as endless streams of :class:`BenchRequest` (the load model decides when each is sent).

* :func:`synthetic` — independent requests with lengths drawn from distributions, optionally opening with one of
  ``prefixes`` shared prefixes of ``prefix_tokens`` tokens (a system prompt, few-shot examples);
* :func:`conversations` — multi-turn chats: each turn's prompt is the previous turn's prompt, its answer and a new
  user message, so consecutive turns of a session share a growing prefix (what prefix-cache-aware routing exploits).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from llmfleet.bench.distributions import LengthDistribution
from llmfleet.bench.spec import BenchRequest
from llmfleet.errors import ConfigError


def synthetic(
    input_tokens: LengthDistribution,
    output_tokens: LengthDistribution,
    rng: random.Random,
    prefix_tokens: int = 0,
    prefixes: int = 1,
) -> Iterator[BenchRequest]:
    """Independent requests; with ``prefix_tokens`` each starts with one of ``prefixes`` shared prefixes."""
    if prefix_tokens < 0:
        raise ConfigError(f"--prefix-tokens: {prefix_tokens} must be >= 0")
    if prefixes < 1:
        raise ConfigError(f"--prefixes: {prefixes} must be >= 1")
    return _synthetic(input_tokens, output_tokens, rng, prefix_tokens, prefixes)


def _synthetic(
    input_tokens: LengthDistribution,
    output_tokens: LengthDistribution,
    rng: random.Random,
    prefix_tokens: int,
    prefixes: int,
) -> Iterator[BenchRequest]:
    for i in itertools.count():
        n_in = input_tokens.sample(rng)
        n_out = output_tokens.sample(rng)
        if prefix_tokens:
            pid = str(rng.randrange(prefixes))
            yield BenchRequest(i, prefix_tokens + n_in, n_out, prefix_id=pid, prefix_tokens=prefix_tokens)
        else:
            yield BenchRequest(i, n_in, n_out)


def conversations(
    input_tokens: LengthDistribution,
    output_tokens: LengthDistribution,
    rng: random.Random,
    sessions: int,
    turns: int,
    prefix_tokens: int = 0,
) -> Iterator[BenchRequest]:
    """``sessions`` chats at a time, ``turns`` turns each, turn by turn; then the next ``sessions`` chats.

    ``input_tokens`` is each new user message; the prompt of turn ``t`` also holds every earlier message and answer
    (and the ``prefix_tokens`` system prompt shared by all sessions).
    """
    if sessions < 1:
        raise ConfigError(f"--sessions: {sessions} must be >= 1")
    if turns < 1:
        raise ConfigError(f"--turns: {turns} must be >= 1")
    if prefix_tokens < 0:
        raise ConfigError(f"--prefix-tokens: {prefix_tokens} must be >= 0")
    return _conversations(input_tokens, output_tokens, rng, sessions, turns, prefix_tokens)


def _conversations(
    input_tokens: LengthDistribution,
    output_tokens: LengthDistribution,
    rng: random.Random,
    sessions: int,
    turns: int,
    prefix_tokens: int,
) -> Iterator[BenchRequest]:
    index = itertools.count()
    for batch in itertools.count():
        history = [prefix_tokens] * sessions
        for _turn in range(turns):
            for s in range(sessions):
                n_in = history[s] + input_tokens.sample(rng)
                n_out = output_tokens.sample(rng)
                history[s] = n_in + n_out
                yield BenchRequest(
                    next(index),
                    n_in,
                    n_out,
                    session_id=f"c{batch}-{s}",
                    prefix_id="system" if prefix_tokens else None,
                    prefix_tokens=prefix_tokens,
                )
