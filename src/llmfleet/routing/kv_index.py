"""Which token blocks each replica's engine holds, from its KV-cache events: an exact prefix-residency source.

vLLM publishes, per engine, a stream of events about its prefix cache (``--kv-events-config``; decoded by
:mod:`llmfleet.gateway.kv_events`): :class:`BlockStored` (full blocks of ``block_size`` tokens became reusable,
chained to a parent block), :class:`BlockRemoved` (evicted) and :class:`AllBlocksCleared` (e.g. ``POST
/reset_prefix_cache``). :class:`KvIndex` applies them and answers, for a prompt's token ids, how many *leading*
blocks of it each replica holds (:meth:`KvIndex.matched_blocks`), which is how many blocks its engine would reuse.

Blocks are keyed by the gateway's *own* chained hash of the token ids (block *i*'s key hashes block *i*'s tokens
with block *i-1*'s key), computed the same way for events and for prompts, so vLLM's hash function and seed
(``PYTHONHASHSEED``, sha256 seeds) never matter; vLLM's block hashes only map a removal (or a child's parent) back
to an own key, per replica. Blocks hashed with more than their tokens (a LoRA adapter, multimodal inputs, a
``cache_salt``: vLLM's ``lora_name``/``extra_keys``) and groups other than the first of hybrid models are not
indexed: a plain prompt could not reuse them anyway, so they fall back to the text prefix table.

Pure and synchronous, no I/O. Memory is bounded per replica: ``max_blocks`` held blocks (set it above the engine's
number of KV blocks, so the bound never drops what the engine holds; beyond it the least recently stored go first)
and twice that many vLLM-hash mappings; a replica's state goes with :meth:`KvIndex.forget`.
A block stored twice under the same hash in two physical blocks and evicted from one is taken as gone: the index
may under-report, never invent a block the engine never stored.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BlockHash = int | bytes
"""vLLM's external block hash (an int, or bytes unless ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``)."""

_ROOT = 0
"""The own key a first block chains from."""


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Blocks ``block_hashes`` (their tokens: ``token_ids``, ``block_size`` per block) are cached, chained after
    ``parent_block_hash`` (None: they start a prompt)."""

    block_hashes: tuple[BlockHash, ...]
    parent_block_hash: BlockHash | None
    token_ids: tuple[int, ...]
    block_size: int
    plain: bool = True
    """False when the blocks were hashed with more than their tokens (LoRA, multimodal, cache salt)."""
    group_idx: int | None = None
    """KV cache group (hybrid models have several); None: not reported."""


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Blocks ``block_hashes`` were evicted."""

    block_hashes: tuple[BlockHash, ...]
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The engine emptied its prefix cache."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


def chain_keys(token_ids: Sequence[int], block_size: int, max_blocks: int, parent: int = _ROOT) -> list[int]:
    """Own chained keys of the full ``block_size``-token blocks of ``token_ids`` (at most ``max_blocks``)."""
    n = min(len(token_ids) // block_size, max_blocks)
    keys = []
    for i in range(n):
        parent = hash((parent, tuple(token_ids[i * block_size : (i + 1) * block_size])))
        keys.append(parent)
    return keys


class _Residency:
    """One replica's held blocks."""

    __slots__ = ("block_size", "held", "own_of")

    def __init__(self) -> None:
        self.block_size: int | None = None
        """Tokens per block of this engine's full blocks (from its events)."""
        self.held: OrderedDict[int, int] = OrderedDict()
        """Own key of each block the engine holds -> its parent's own key, least recently stored first."""
        self.own_of: OrderedDict[BlockHash, int] = OrderedDict()
        """vLLM block hash -> own key (kept after a removal: a later child may chain from it)."""


@dataclass
class IndexCounts:
    """What the index skipped, for logs and tests."""

    not_plain: int = 0
    """Stored events not indexed: hashed with more than tokens, or not the first KV cache group."""
    orphans: int = 0
    """Stored events whose parent block was never seen (events missed before subscribing)."""
    malformed: int = 0
    """Stored events whose token count is not ``len(block_hashes) x block_size``."""
    evicted: int = 0
    """Held blocks dropped by the memory bound."""


class KvIndex:
    """Per replica, the token blocks its engine holds; see the module docstring."""

    def __init__(self, max_blocks: int = 65536, max_prompt_blocks: int = 1024) -> None:
        if max_blocks < 1 or max_prompt_blocks < 1:
            raise ValueError("max_blocks and max_prompt_blocks must be >= 1")
        self.max_blocks = max_blocks
        self.max_prompt_blocks = max_prompt_blocks
        self.counts = IndexCounts()
        self._replicas: dict[str, _Residency] = {}

    def replicas(self) -> list[str]:
        """Replica ids the index has state for."""
        return list(self._replicas)

    def held(self, replica_id: str) -> int:
        """How many blocks ``replica_id`` holds (0 when unknown)."""
        r = self._replicas.get(replica_id)
        return len(r.held) if r is not None else 0

    def block_size(self, replica_id: str) -> int | None:
        """Tokens per block of ``replica_id``'s engine, once one of its events said so."""
        r = self._replicas.get(replica_id)
        return r.block_size if r is not None else None

    def apply(self, replica_id: str, events: Iterable[KvEvent]) -> None:
        """Apply ``replica_id``'s events, in the order its engine published them."""
        r = self._replicas.get(replica_id)
        if r is None:
            r = self._replicas[replica_id] = _Residency()
        for ev in events:
            if isinstance(ev, BlockStored):
                self._store(r, ev)
            elif isinstance(ev, BlockRemoved):
                if ev.group_idx:
                    continue
                for h in ev.block_hashes:
                    own = r.own_of.get(h)
                    if own is not None:
                        r.held.pop(own, None)
            else:
                r.held.clear()

    def _store(self, r: _Residency, ev: BlockStored) -> None:
        counts = self.counts
        size = ev.block_size
        if not ev.plain or ev.group_idx:
            counts.not_plain += 1
            return
        if size < 1 or len(ev.token_ids) != size * len(ev.block_hashes):
            counts.malformed += 1
            return
        if ev.parent_block_hash is None:
            parent = _ROOT
        else:
            found = r.own_of.get(ev.parent_block_hash)
            if found is None:
                counts.orphans += 1
                return
            parent = found
        if r.block_size is None or size > r.block_size:
            r.block_size = size  # partial entries (finer-grained hash blocks) are smaller than the full blocks
        keys = chain_keys(ev.token_ids, size, len(ev.block_hashes), parent)
        held, own_of = r.held, r.own_of
        # Deepest block first, then the held ancestors, so the memory bound drops the tails of prefixes before
        # their heads (a shared system prompt stays longest).
        parents = [parent, *keys[:-1]]
        for h, key, up in zip(reversed(ev.block_hashes), reversed(keys), reversed(parents), strict=True):
            own_of[h] = key
            own_of.move_to_end(h)
            held[key] = up
            held.move_to_end(key)
        up = parent
        for _ in range(len(held)):  # bounded: a hash collision could make a cycle
            if up == _ROOT or up not in held:
                break
            held.move_to_end(up)
            up = held[up]
        while len(held) > self.max_blocks:
            held.popitem(last=False)
            counts.evicted += 1
        while len(own_of) > 2 * self.max_blocks:
            own_of.popitem(last=False)

    def clear(self, replica_id: str) -> None:
        """Forget what ``replica_id`` holds (its cache was emptied, or events were missed): it holds nothing until
        new events say otherwise."""
        r = self._replicas.get(replica_id)
        if r is not None:
            r.held.clear()
            r.own_of.clear()

    def forget(self, replica_id: str) -> None:
        """Drop every trace of ``replica_id`` (removed from the fleet)."""
        self._replicas.pop(replica_id, None)

    def prompt_blocks(self, token_ids: Sequence[int], replica_ids: Iterable[str]) -> int:
        """How many full blocks ``token_ids`` make at the smallest block size the replicas announced (0: none yet)."""
        sizes = [r.block_size for rid in replica_ids if (r := self._replicas.get(rid)) is not None and r.block_size]
        return min(len(token_ids) // min(sizes), self.max_prompt_blocks) if sizes else 0

    def matched_blocks(self, token_ids: Sequence[int], replica_ids: Iterable[str] | None = None) -> dict[str, int]:
        """For each replica (``replica_ids``, default every one known), how many leading full blocks of
        ``token_ids`` its engine holds (0 also for a replica never heard of)."""
        wanted = list(self._replicas) if replica_ids is None else list(replica_ids)
        keys_by_size: dict[int, list[int]] = {}
        out: dict[str, int] = {}
        for rid in wanted:
            r = self._replicas.get(rid)
            if r is None or r.block_size is None or not r.held:
                out[rid] = 0
                continue
            keys = keys_by_size.get(r.block_size)
            if keys is None:
                keys = keys_by_size[r.block_size] = chain_keys(token_ids, r.block_size, self.max_prompt_blocks)
            n = 0
            held = r.held
            for key in keys:
                if key not in held:
                    break
                n += 1
            out[rid] = n
        return out
