"""Paged KV-cache block manager with a hashed-prefix cache and LRU eviction, like vLLM's.

Blocks hold ``block_size`` tokens. A full block's hash chains its parent's hash and its token ids, so equal hashes
mean equal prefixes. Freed blocks keep their contents (and hash) in an LRU free queue until they are reused; a new
request whose prompt starts with cached blocks takes them instead of recomputing (a prefix-cache hit).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class _Block:
    id: int
    ref_count: int = 0
    hash: int | None = None


@dataclass
class BlockTable:
    """The blocks one request holds, in order, and how many of its leading blocks have been hashed."""

    blocks: list[int] = field(default_factory=list)
    num_hashed: int = 0
    last_hash: int | None = None


class KVCacheManager:
    """Allocates KV blocks to requests; optionally shares full prefix blocks across requests."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        # Free blocks in eviction order (least recently used first); cached blocks stay here until reused.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}

    # ---- accounting ------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by running requests (vllm:kv_cache_usage_perc)."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_needed(self, table: BlockTable, num_tokens: int) -> int:
        """Extra blocks ``table`` needs to hold ``num_tokens`` tokens."""
        return max(0, -(-num_tokens // self.block_size) - len(table.blocks))

    # ---- prefix cache ----------------------------------------------------------------------------------
    def _chain_hashes(self, token_ids: Sequence[int], max_blocks: int) -> list[int]:
        hashes: list[int] = []
        parent: int | None = None
        bs = self.block_size
        for b in range(max_blocks):
            parent = hash((parent, tuple(token_ids[b * bs : (b + 1) * bs])))
            hashes.append(parent)
        return hashes

    def match_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Ids of cached blocks matching the longest block-aligned prefix of ``token_ids``.

        At least one token is always left to compute (the last one produces the first output token), as in vLLM.
        """
        if not self.enable_prefix_caching:
            return []
        max_blocks = (len(token_ids) - 1) // self.block_size
        hit: list[int] = []
        for h in self._chain_hashes(token_ids, max_blocks):
            block_id = self._cached.get(h)
            if block_id is None:
                break
            hit.append(block_id)
        return hit

    def take_cached(self, table: BlockTable, block_ids: Sequence[int]) -> None:
        """Give ``table`` the (already matched) cached blocks; they are now in use."""
        for block_id in block_ids:
            block = self._blocks[block_id]
            if block.ref_count == 0:
                self._free.pop(block_id, None)
            block.ref_count += 1
            table.blocks.append(block_id)
        table.num_hashed = len(block_ids)
        table.last_hash = self._blocks[block_ids[-1]].hash if block_ids else None

    # ---- allocation ------------------------------------------------------------------------------------
    def allocate(self, table: BlockTable, num_tokens: int) -> bool:
        """Grow ``table`` to hold ``num_tokens`` tokens; False (and no change) when blocks run out."""
        need = self.blocks_needed(table, num_tokens)
        if need > len(self._free):
            return False
        for _ in range(need):
            block_id, _ = self._free.popitem(last=False)
            block = self._blocks[block_id]
            if block.hash is not None:  # evict its cached contents
                if self._cached.get(block.hash) == block_id:
                    del self._cached[block.hash]
                block.hash = None
            block.ref_count = 1
            table.blocks.append(block_id)
        return True

    def commit_full_blocks(self, table: BlockTable, token_ids: Sequence[int], num_computed: int) -> None:
        """Register the hashes of blocks that became full of computed tokens, so later requests can share them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = min(num_computed // bs, len(table.blocks))
        parent = table.last_hash
        for b in range(table.num_hashed, full):
            parent = hash((parent, tuple(token_ids[b * bs : (b + 1) * bs])))
            block = self._blocks[table.blocks[b]]
            if block.hash is None and parent not in self._cached:
                block.hash = parent
                self._cached[parent] = block.id
        table.num_hashed = max(table.num_hashed, full)
        table.last_hash = parent

    def free(self, table: BlockTable) -> None:
        """Release ``table``'s blocks; tail blocks are queued for eviction before the shared head."""
        for block_id in reversed(table.blocks):
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is None:
                    self._free[block_id] = None
                    self._free.move_to_end(block_id, last=False)  # uncached: reuse first
                else:
                    self._free[block_id] = None
        table.blocks.clear()
        table.num_hashed = 0
        table.last_hash = None
