from __future__ import annotations

from llmfleet.engines.sim.kvcache import BlockTable, KVCacheManager


def test_allocate_until_full_then_refuse() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=16, enable_prefix_caching=False)
    t = BlockTable()
    assert kv.allocate(t, 64)
    assert kv.usage == 1.0
    other = BlockTable()
    assert not kv.allocate(other, 1)
    assert other.blocks == []
    kv.free(t)
    assert kv.usage == 0.0 and kv.allocate(other, 1)


def test_prefix_hit_after_commit_and_free() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    tokens = list(range(20))
    a = BlockTable()
    assert kv.allocate(a, 20)
    kv.commit_full_blocks(a, tokens, 20)
    kv.free(a)
    hit = kv.match_prefix(tokens)
    assert len(hit) == 4  # 5 full blocks, but the last token must be recomputed
    assert kv.match_prefix([99, *tokens[1:]]) == []  # a different first block breaks the chain
    b = BlockTable()
    kv.take_cached(b, hit)
    assert kv.usage == 4 / 16


def test_lru_eviction_prefers_oldest_and_tail_blocks() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=2, enable_prefix_caching=True)
    old, new = [1, 2, 3, 4], [5, 6, 7, 8]
    for toks in (old, new):
        t = BlockTable()
        assert kv.allocate(t, 4)
        kv.commit_full_blocks(t, toks, 4)
        kv.free(t)
    t = BlockTable()
    assert kv.allocate(t, 2)  # needs one block: evicts the oldest request's tail block first
    assert len(kv.match_prefix([*new, 0])) == 2
    assert len(kv.match_prefix([*old, 0])) == 1


def test_disabled_prefix_caching_never_hits() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2, enable_prefix_caching=False)
    t = BlockTable()
    kv.allocate(t, 8)
    kv.commit_full_blocks(t, list(range(8)), 8)
    kv.free(t)
    assert kv.match_prefix(list(range(9))) == []
