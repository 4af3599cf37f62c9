"""The KV-cache-event index: stores, removals, clears, chaining by own keys, bounds."""

from __future__ import annotations

import pytest

from llmfleet.routing.kv_index import AllBlocksCleared, BlockRemoved, BlockStored, KvIndex, chain_keys

BS = 4


def _tokens(n_blocks: int, start: int = 0) -> tuple[int, ...]:
    return tuple(range(start, start + n_blocks * BS))


def _stored(hashes: list[int], tokens: tuple[int, ...], parent: int | None = None, **kw: object) -> BlockStored:
    return BlockStored(tuple(hashes), parent, tokens, BS, **kw)  # type: ignore[arg-type]


def test_stored_blocks_match_leading_blocks_of_a_prompt() -> None:
    idx = KvIndex()
    toks = _tokens(3)
    idx.apply("a", [_stored([11, 12, 13], toks)])
    assert idx.matched_blocks((*toks, 999)) == {"a": 3}
    assert idx.matched_blocks(toks[: 2 * BS]) == {"a": 2}
    assert idx.matched_blocks((7, *toks)) == {"a": 0}  # same tokens shifted: no prefix in common
    assert idx.matched_blocks(toks, ["a", "b"]) == {"a": 3, "b": 0}
    assert idx.block_size("a") == BS and idx.held("a") == 3


def test_a_child_event_chains_from_its_parent_by_vllm_hash() -> None:
    idx = KvIndex()
    first, second = _tokens(2), _tokens(2, start=100)
    idx.apply("a", [_stored([1, 2], first)])
    idx.apply("a", [_stored([3, 4], second, parent=2)])
    assert idx.matched_blocks(first + second) == {"a": 4}
    # The same second half after a different first half is a different prefix.
    assert idx.matched_blocks(_tokens(2, start=50) + second) == {"a": 0}


def test_vllm_hashes_do_not_matter_only_tokens_do() -> None:
    """Two engines with different hash seeds hold the same prompt: both match it."""
    idx = KvIndex()
    toks = _tokens(2)
    idx.apply("a", [_stored([1, 2], toks)])
    idx.apply("b", [_stored([901, 902], toks)])
    assert idx.matched_blocks(toks) == {"a": 2, "b": 2}


def test_removal_cuts_the_match_at_the_removed_block() -> None:
    idx = KvIndex()
    toks = _tokens(3)
    idx.apply("a", [_stored([1, 2, 3], toks), BlockRemoved((2,))])
    assert idx.matched_blocks(toks) == {"a": 1}
    idx.apply("a", [BlockRemoved((1,))])
    assert idx.matched_blocks(toks) == {"a": 0}


def test_a_block_stored_again_after_its_parent_was_evicted_still_chains() -> None:
    """vLLM evicts tails first, but a child may be stored again after its parent went: the parent's own key is
    remembered."""
    idx = KvIndex()
    toks = _tokens(2)
    idx.apply("a", [_stored([1, 2], toks), BlockRemoved((1, 2))])
    idx.apply("a", [_stored([1], toks[:BS]), _stored([2], toks[BS:], parent=1)])
    assert idx.matched_blocks(toks) == {"a": 2}


def test_all_blocks_cleared_and_clear_empty_one_replica_only() -> None:
    idx = KvIndex()
    toks = _tokens(2)
    for rid in ("a", "b", "c"):
        idx.apply(rid, [_stored([1, 2], toks)])
    idx.apply("a", [AllBlocksCleared()])
    idx.clear("b")
    assert idx.matched_blocks(toks) == {"a": 0, "b": 0, "c": 2}
    idx.forget("c")
    assert idx.replicas() == ["a", "b"]


def test_unknown_parent_and_malformed_and_non_plain_events_are_skipped() -> None:
    idx = KvIndex()
    toks = _tokens(2)
    idx.apply("a", [_stored([3, 4], toks, parent=77)])  # parent never seen (subscribed late)
    idx.apply("a", [BlockStored((5, 6), None, toks[:-1], BS)])  # one token short
    idx.apply("a", [_stored([7, 8], toks, plain=False)])  # LoRA / multimodal / cache salt
    idx.apply("a", [_stored([9, 10], toks, group_idx=1)])  # second KV cache group of a hybrid model
    assert idx.matched_blocks(toks) == {"a": 0}
    assert (idx.counts.orphans, idx.counts.malformed, idx.counts.not_plain) == (1, 1, 2)


def test_removal_of_an_unknown_hash_is_ignored() -> None:
    idx = KvIndex()
    toks = _tokens(1)
    idx.apply("a", [_stored([1], toks), BlockRemoved((404,))])
    assert idx.matched_blocks(toks) == {"a": 1}


def test_memory_is_bounded_and_prefix_heads_outlive_tails() -> None:
    idx = KvIndex(max_blocks=4)
    system = _tokens(2)
    idx.apply("a", [_stored([1, 2], system)])
    for i in range(5):  # five conversations after the shared first two blocks
        idx.apply("a", [_stored([100 + i], _tokens(1, start=1000 + 10 * i), parent=2)])
    assert idx.held("a") == 4
    assert idx.counts.evicted == 3
    assert idx.matched_blocks(system + _tokens(1, start=1040))["a"] == 3  # the newest conversation is whole
    assert idx.matched_blocks(system + _tokens(1, start=1000))["a"] == 2


def test_a_prompt_is_only_hashed_up_to_max_prompt_blocks() -> None:
    idx = KvIndex(max_prompt_blocks=2)
    toks = _tokens(3)
    idx.apply("a", [_stored([1, 2, 3], toks)])
    assert idx.matched_blocks(toks) == {"a": 2}


def test_chain_keys_only_counts_full_blocks() -> None:
    assert len(chain_keys(range(10), 4, 100)) == 2
    assert chain_keys(range(8), 4, 100)[0] == chain_keys(range(4), 4, 100)[0]


def test_bad_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        KvIndex(max_blocks=0)


def test_prompt_blocks_counts_full_blocks_at_the_announced_block_size() -> None:
    idx = KvIndex()
    assert idx.prompt_blocks(_tokens(5), ["a"]) == 0  # no block size announced yet
    idx.apply("a", [_stored([11], _tokens(1))])
    assert idx.prompt_blocks((*_tokens(5), 1, 2), ["a", "unknown"]) == 5  # the partial last block does not count
