from __future__ import annotations

import itertools
import random

import pytest

from llmfleet.bench.distributions import parse_length
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.spec import BenchRequest
from llmfleet.bench.synthetic import conversations, synthetic
from llmfleet.bench.workloads import user_pauses
from llmfleet.engines.sim.tokenizer import generated_pieces, tokenize
from llmfleet.errors import ConfigError

FIXED_10 = parse_length("10", "--input-tokens")
FIXED_5 = parse_length("5", "--output-tokens")


@pytest.mark.parametrize("n", [1, 7, 300, 70000])
def test_prompts_have_the_asked_token_count(n: int) -> None:
    builder = PromptBuilder(0)
    assert len(tokenize(builder.text(BenchRequest(12, n, 1)))) == n


def test_unkeyed_prompts_differ_from_the_first_token() -> None:
    builder = PromptBuilder(0)
    a, b = builder.text(BenchRequest(1, 50, 1)), builder.text(BenchRequest(2, 50, 1))
    assert tokenize(a)[0] != tokenize(b)[0]


def test_shared_prefix_and_growing_sessions() -> None:
    builder = PromptBuilder(0)
    a = builder.text(BenchRequest(1, 100, 1, prefix_id="p", prefix_tokens=60))
    b = builder.text(BenchRequest(2, 90, 1, prefix_id="p", prefix_tokens=60))
    assert tokenize(a)[:60] == tokenize(b)[:60] and tokenize(a)[60] != tokenize(b)[60]
    t1 = builder.text(BenchRequest(3, 40, 1, session_id="s"))
    t2 = builder.text(BenchRequest(4, 90, 1, session_id="s"))
    assert t2.startswith(t1)
    assert PromptBuilder(0).text(BenchRequest(3, 40, 1, session_id="s")) == t1  # repeatable


def test_synthetic_with_shared_prefixes() -> None:
    reqs = list(itertools.islice(synthetic(FIXED_10, FIXED_5, random.Random(0), prefix_tokens=30, prefixes=3), 300))
    assert {r.prefix_id for r in reqs} == {"0", "1", "2"}
    assert all(r.input_tokens == 40 and r.prefix_tokens == 30 and r.output_tokens == 5 for r in reqs)
    assert [r.index for r in reqs] == list(range(300))


def test_conversations_grow_turn_by_turn() -> None:
    reqs = list(itertools.islice(conversations(FIXED_10, FIXED_5, random.Random(0), 2, 3, prefix_tokens=20), 8))
    assert [r.session_id for r in reqs] == ["c0-0", "c0-1"] * 3 + ["c1-0", "c1-1"]
    s0 = [r.input_tokens for r in reqs if r.session_id == "c0-0"]
    # Turn t holds the system prompt, every earlier message and answer, and the new message.
    assert s0 == [30, 45, 60]
    assert reqs[6].input_tokens == 30  # a new batch of sessions starts fresh


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [({"sessions": 0}, "--sessions"), ({"turns": 0}, "--turns"), ({"prefix_tokens": -1}, "--prefix-tokens")],
)
def test_conversation_options_checked_before_any_request(kwargs: dict[str, int], option: str) -> None:
    args = {"sessions": 1, "turns": 1, "prefix_tokens": 0} | kwargs
    with pytest.raises(ConfigError, match=f"^{option}"):
        conversations(FIXED_10, FIXED_5, random.Random(0), **args)
    with pytest.raises(ConfigError, match=r"^--prefixes"):
        synthetic(FIXED_10, FIXED_5, random.Random(0), prefixes=0)


def test_prompts_are_made_of_the_sim_engines_own_pieces() -> None:
    """One word list: the prompt words are exactly what the simulated engine generates (one token each there)."""
    pieces = tokenize(PromptBuilder(3).text(BenchRequest(12, 5000, 1)))
    assert pieces[0] == "r12" and set(pieces[1:]) == set(generated_pieces())


def test_user_pauses_are_seeded_and_average_the_mean() -> None:
    assert user_pauses(0, seed=1) is None  # a closed loop
    a, b = user_pauses(50, seed=1), user_pauses(50, seed=1)
    assert a is not None and b is not None
    draws = [a() for _ in range(2000)]
    assert draws[:10] == [b() for _ in range(10)]  # the same seed, the same pauses for every front door
    assert all(0 <= d <= 0.1 for d in draws)
    assert sum(draws) / len(draws) == pytest.approx(0.05, rel=0.05)
