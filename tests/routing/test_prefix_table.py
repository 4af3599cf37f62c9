from __future__ import annotations

import pytest

from llmfleet.routing.prefix_table import PrefixTable, block_keys


def test_block_keys_chain_and_full_blocks_only() -> None:
    a = block_keys("m", "x" * 40 + "y" * 40 + "z" * 10, 40, 100)
    b = block_keys("m", "x" * 40 + "y" * 40 + "w" * 50, 40, 100)
    assert len(a) == 2 and len(b) == 3  # a partial trailing block does not count
    assert a == b[:2]  # same prefix, same keys
    c = block_keys("m", "q" * 40 + "y" * 40, 40, 100)
    assert c[0] != a[0] and c[1] != a[1]  # block 1 is equal text but a different prefix
    assert block_keys("other", "x" * 80, 40, 100) != a  # the model is part of the key
    assert block_keys("m", "short", 40, 100) == []
    assert len(block_keys("m", "x" * 4000, 40, 7)) == 7


def test_block_keys_are_stable_across_processes() -> None:
    # CRC-based, not Python's randomised hash(): the same text gives the same keys everywhere.
    assert block_keys("m", "a" * 16, 16, 4) == [0x8BD92621]


def test_record_and_lookup() -> None:
    t = PrefixTable(capacity=100, replicas_per_block=2)
    keys = block_keys("m", "abcd" * 40, 16, 100)
    t.record(keys, ("r1", 1))
    assert t.deepest_present(keys) == len(keys) == 10
    assert t.holders(keys[3]) == (("r1", 1),)
    t.record(keys[:4], ("r2", 1))
    t.record(keys[:2], ("r3", 1))
    assert t.holders(keys[0]) == (("r2", 1), ("r3", 1))  # capped at 2, most recent last
    assert t.holders(keys[5]) == (("r1", 1),)
    t.record(keys[:1], ("r2", 1))
    assert t.holders(keys[0]) == (("r3", 1), ("r2", 1))  # re-recording moves to most recent, no duplicate
    longer = block_keys("m", "abcd" * 40 + "e" * 64, 16, 100)
    assert t.deepest_present(longer) == 10


@pytest.mark.parametrize("capacity", [16, 50, 333])
def test_memory_is_bounded_and_presence_stays_prefix_closed(capacity: int) -> None:
    t = PrefixTable(capacity=capacity, replicas_per_block=4)
    prompts = [f"conversation {i % 37} " * (5 + i % 23) for i in range(400)]
    for i, p in enumerate(prompts):
        t.record(block_keys("m", p, 16, 64), (f"r{i % 5}", 1))
        assert len(t) <= capacity
    for p in prompts:
        keys = block_keys("m", p, 16, 64)
        present = [k in dict(t.items()) for k in keys]
        # Eviction removes the tails of prefixes first: present blocks form a prefix.
        assert present == sorted(present, reverse=True)
        assert t.deepest_present(keys) == sum(present)


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PrefixTable(0, 1)


def test_remembers_which_keys_ended_a_prompt() -> None:
    t = PrefixTable(capacity=100, replicas_per_block=2)
    first = block_keys("m", "abcd" * 40, 16, 100)
    t.record(first, ("r1", 1))
    assert t.ends_a_prompt(first[-1]) and not t.ends_a_prompt(first[3])
    nxt = block_keys("m", "abcd" * 40 + "reply and next question " * 4, 16, 100)
    assert t.deepest_present(nxt) == len(first) and t.ends_a_prompt(nxt[len(first) - 1])
    small = PrefixTable(capacity=16, replicas_per_block=1)
    for i in range(40):  # bounded like the table; an evicted key no longer counts
        small.record(block_keys("m", f"{i:04d}" * 8, 16, 100), ("r1", 1))
    assert len(small._ends) <= 16 and not small.ends_a_prompt(block_keys("m", "0000" * 8, 16, 100)[-1])
