"""JSON for the relay's per-chunk path: :func:`loads`/:func:`dumps` are orjson's, with :mod:`json` behind them for
what orjson refuses.

Measured (issue #17, second pass): parsing a chunk with orjson (~1 us for parse and re-encode of a 300-byte chunk)
and reading the few keys the relay needs from the dict costs less CPU than any scan of the bytes written in Python
(a few C-speed ``bytes`` searches and regexes still cost ~0.2 us of interpreter overhead each, and a scan that is
*safe* — one that never misreads a key inside a string — needs a dozen or more). So the relay parses every chunk
and keeps its common case short (:func:`llmfleet.gateway.accounting.track_chunk`); see docs/gateway.md.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes) -> Any:
    """Parse JSON: orjson, and :mod:`json` for what orjson refuses but json accepts (NaN, huge integers, escaped
    lone surrogates), so the result is json's wherever json succeeds; raises ``ValueError`` on invalid input."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes: orjson (UTF-8), or :mod:`json` for what orjson cannot encode (lone surrogates)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()
