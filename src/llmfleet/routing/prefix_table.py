"""Where prompt prefixes were sent: chained block hashes over the prompt text and a bounded LRU table.

The prompt is UTF-8 encoded and cut into fixed-size byte blocks; block *i*'s key hashes blocks 0..i (a running
CRC-32 seeded with the model name, plus the block index), so equal keys mean equal prefixes, as with vLLM's KV
block hashes. Only full blocks count (an engine only reuses full KV blocks too). CRC-32 is stable across
processes (tests and simulations are reproducible); a rare collision only costs a routing hint.

The table maps a block key to the few replicas it was last sent to. Recording a prompt touches its blocks from
the deepest to the first, so a prefix's first blocks are always at least as recent as its later ones: eviction
removes the tails of prefixes first, and "present" is closed under taking prefixes, which lets
:meth:`PrefixTable.deepest_present` binary-search the longest remembered prefix.

The table also remembers which keys *ended* a recorded prompt (:meth:`PrefixTable.ends_a_prompt`): a prompt whose
longest remembered prefix ends exactly there extends an earlier prompt as a whole -- the next turn of a
conversation -- rather than sharing only its beginning (a system prompt) with other prompts.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence

_INDEX_SHIFT = 32


def block_keys(model: str, text: str, block_bytes: int, max_blocks: int) -> list[int]:
    """Chained keys of the full ``block_bytes``-sized blocks of ``text`` (at most ``max_blocks``)."""
    data = text.encode("utf-8")
    n = min(len(data) // block_bytes, max_blocks)
    if n == 0:
        return []
    crc = zlib.crc32(model.encode("utf-8"))
    view = memoryview(data)
    keys = []
    for i in range(n):
        crc = zlib.crc32(view[i * block_bytes : (i + 1) * block_bytes], crc)
        keys.append((i << _INDEX_SHIFT) | crc)
    return keys


Holder = tuple[str, int]
"""(replica id, generation of that replica when recorded)."""


class PrefixTable:
    """Bounded LRU: block key -> the (up to ``replicas_per_block``) replicas it was sent to, most recent last."""

    def __init__(self, capacity: int, replicas_per_block: int) -> None:
        if capacity < 1 or replicas_per_block < 1:
            raise ValueError("capacity and replicas_per_block must be >= 1")
        self.capacity = capacity
        self.replicas_per_block = replicas_per_block
        self._table: OrderedDict[int, tuple[Holder, ...]] = OrderedDict()
        self._ends: OrderedDict[int, None] = OrderedDict()
        """Keys that were the last block of a recorded prompt (bounded like the table)."""

    def __len__(self) -> int:
        return len(self._table)

    def holders(self, key: int) -> tuple[Holder, ...]:
        """The replicas ``key`` was sent to (oldest first); empty when unknown. Does not touch recency."""
        return self._table.get(key, ())

    def deepest_present(self, keys: Sequence[int]) -> int:
        """How many leading ``keys`` are in the table (binary search; relies on prefix-closed presence)."""
        table = self._table
        lo, hi = 0, len(keys)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if keys[mid - 1] in table:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def ends_a_prompt(self, key: int) -> bool:
        """Whether ``key`` was the last block of a prompt recorded (and not yet evicted)."""
        return key in self._ends and key in self._table

    def record(self, keys: Sequence[int], holder: Holder) -> None:
        """Remember that the prefix ``keys`` now lives on ``holder`` (deepest block first, see module doc)."""
        table = self._table
        if keys:
            ends = self._ends
            ends[keys[-1]] = None
            ends.move_to_end(keys[-1])
            while len(ends) > self.capacity:
                ends.popitem(last=False)
        cap = self.replicas_per_block
        rid = holder[0]
        for key in reversed(keys):
            old = table.get(key)
            if old is None:
                table[key] = (holder,)
                continue
            table.move_to_end(key)
            if old[-1] == holder:
                continue
            kept = tuple(h for h in old if h[0] != rid)
            if len(kept) >= cap:
                kept = kept[len(kept) - cap + 1 :]
            table[key] = (*kept, holder)
        while len(table) > self.capacity:
            table.popitem(last=False)

    def items(self) -> Iterator[tuple[int, tuple[Holder, ...]]]:
        """All entries, least recently used first (for tests and debugging)."""
        return iter(self._table.items())
