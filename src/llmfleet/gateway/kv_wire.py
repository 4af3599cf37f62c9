"""The wire format of vLLM's KV-cache events (``vllm/distributed/kv_events.py``), decoded into the index's events.

A published message is ``(topic, 8-byte big-endian sequence number, msgpack payload)``; the payload is an
``EventBatch``, encoded as an array ``[ts, [event, ...], data_parallel_rank]``. Events are tagged structs: maps with a
``"type"`` key (``BlockStored``, ``BlockRemoved``, ``AllBlocksCleared``) since vLLM 0.10, arrays ``[tag, fields...]``
in earlier versions; both are read, unknown kinds are skipped, fields added later are ignored. The replay endpoint
(a ROUTER socket) answers ``(b"", start sequence)`` with ``(b"", topic, sequence, payload)`` per buffered batch and
ends with sequence :data:`END_SEQ`. msgspec and pyzmq are optional (``llmfleet[kvevents]``): :func:`require_modules`
imports them or raises a ConfigError naming the setting that asked for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from llmfleet.errors import ConfigError
from llmfleet.routing.kv_index import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

END_SEQ = -1
"""The sequence number of the replay endpoint's end marker."""


class KvWireError(ValueError):
    """A payload that is not an event batch."""


def require_modules() -> tuple[Any, Any]:
    """(zmq with its asyncio module loaded, msgspec.msgpack), or a ConfigError naming the key that asked for them."""
    try:
        importlib.import_module("zmq.asyncio")
        return importlib.import_module("zmq"), importlib.import_module("msgspec.msgpack")
    except ImportError as exc:
        raise ConfigError(
            f"routing.kv_events.enabled: needs pyzmq and msgspec ({exc.name} is missing): "
            "pip install 'llmfleet[kvevents]'"
        ) from None


def _field(ev: Mapping[str, Any] | list[Any], name: str, pos: int) -> Any:
    if isinstance(ev, Mapping):
        return ev.get(name)
    return ev[pos] if pos < len(ev) else None


def _event(raw: Any) -> KvEvent | None:
    """One decoded event (None: a kind this gateway does not know, skipped)."""
    ev: Mapping[str, Any] | list[Any]
    if isinstance(raw, Mapping):
        tag, ev = raw.get("type"), raw
    elif isinstance(raw, list) and raw:
        tag, ev = raw[0], raw[1:]
    else:
        raise KvWireError(f"event is neither a map nor an array: {type(raw).__name__}")
    if tag == "BlockStored":
        hashes, tokens, size = _field(ev, "block_hashes", 0), _field(ev, "token_ids", 2), _field(ev, "block_size", 3)
        if not isinstance(hashes, list) or not isinstance(tokens, list) or type(size) is not int:
            raise KvWireError("BlockStored without block_hashes, token_ids and block_size")
        extra = _field(ev, "extra_keys", 7) or ()
        plain = _field(ev, "lora_id", 4) is None and _field(ev, "lora_name", 6) is None and not any(extra)
        return BlockStored(
            tuple(hashes), _field(ev, "parent_block_hash", 1), tuple(tokens), size, plain, _field(ev, "group_idx", 8)
        )
    if tag == "BlockRemoved":
        hashes = _field(ev, "block_hashes", 0)
        if not isinstance(hashes, list):
            raise KvWireError("BlockRemoved without block_hashes")
        return BlockRemoved(tuple(hashes), _field(ev, "group_idx", 2))
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    return None


def decode_batch(payload: bytes, decode: Callable[[bytes], Any] | None = None) -> list[KvEvent]:
    """The events of one published batch (``decode``: msgspec's msgpack decoder; imported when not given)."""
    if decode is None:
        decode = require_modules()[1].decode
    try:
        raw = decode(payload)
    except Exception as exc:  # msgspec.DecodeError and friends: a bad payload, whatever the library calls it
        raise KvWireError(f"not msgpack: {exc}") from None
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[1], list):
        raise KvWireError("not an event batch ([ts, [events...], dp_rank])")
    try:
        return [ev for ev in map(_event, raw[1]) if ev is not None]
    except (TypeError, ValueError) as exc:  # a field of the wrong type
        raise KvWireError(f"bad event: {exc}") from None
