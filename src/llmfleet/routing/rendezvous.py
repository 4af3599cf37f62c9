"""Rendezvous (highest-random-weight) hashing: an order of replicas for a key that any process computes alike.

Every process that knows the same replica ids ranks them the same way for the same key, with nothing shared: the
hash is BLAKE2b over the key and the replica id (never Python's ``hash()``, which is salted per process). Removing
a replica moves only the keys that ranked it first; adding one takes about ``1/n`` of the keys. Weighted: a replica
of weight ``w`` ranks first for a share of keys proportional to ``w`` (score ``w / -ln(u)``, ``u`` uniform in (0, 1)
from the hash; Schindelhauer and Schomaker's logarithmic method).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from llmfleet.routing.candidates import weight_of
from llmfleet.routing.views import ReplicaView

_SCALE = float(1 << 64)


def score(key: int, replica_id: str, weight: float = 1.0) -> float:
    """The rendezvous score of ``replica_id`` for ``key`` (a non-negative int below 2**64); higher ranks first."""
    digest = hashlib.blake2b(replica_id.encode("utf-8"), digest_size=8, key=key.to_bytes(8, "big")).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _SCALE  # in (0, 1): never log(0)
    return weight / -math.log(u)


def rank(key: int, replicas: Sequence[ReplicaView]) -> list[ReplicaView]:
    """``replicas`` in rendezvous order for ``key`` (by weight; ties, vanishingly rare, by id)."""
    return sorted(replicas, key=lambda r: (-score(key, r.id, weight_of(r)), r.id))
