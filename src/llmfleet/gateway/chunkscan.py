"""What the relay needs from one SSE chunk, read off its bytes without parsing it (the per-token fast path).

Most chunks of a stream are alike: one choice, some text, ``finish_reason: null``, nothing the gateway must strip or
rewrite. For those the relay needs only the text (kept for a resume) and whether it is a token, and forwards the
bytes as they came. :func:`scan_plain` says so with a few C-speed ``bytes`` searches and one regex; any chunk that
is not plainly such a chunk (usage, token ids, an error, a role, several choices, a finish, escapes it cannot
see through) returns None and is parsed in full by :func:`llmfleet.gateway.relay.track_chunk` — the fast path
never guesses.

:func:`loads`/:func:`dumps` are orjson's (several times faster than :mod:`json` on chunk-sized objects).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_NOT_PLAIN = (b'"usage"', b'"token_ids"', b'"error"', b'"role"')
"""Keys whose presence means the chunk needs the full parse (accounting, stripping or rewriting)."""
_FINISH = b'"finish_reason"'
_TEXT = {
    False: (b'"text"', re.compile(rb'"text"\s*:\s*"((?:[^"\\]|\\.)*)"')),
    True: (b'"content"', re.compile(rb'"content"\s*:\s*"((?:[^"\\]|\\.)*)"')),
}
_FINISH_NULL = re.compile(rb'"finish_reason"\s*:\s*null')


def scan_plain(payload: bytes, chat: bool) -> str | None:
    """The text of a plain content chunk (``""`` for a chunk without text), or None when the chunk is not plain
    and must be parsed. A plain chunk has exactly one choice, ``finish_reason: null``, at most one text field
    (``text``; ``content`` for chat) holding a JSON string, and none of :data:`_NOT_PLAIN`."""
    if payload.count(_FINISH) != 1 or not _FINISH_NULL.search(payload):
        return None
    for key in _NOT_PLAIN:
        if key in payload:
            return None
    key, pattern = _TEXT[chat]
    n = payload.count(key)
    if n == 0:
        return ""
    if n > 1:
        return None
    m = pattern.search(payload)
    if m is None:  # ``"content": null`` or not a string: left to the full parse
        return None
    raw = m.group(1)
    if b"\\" in raw:
        try:
            text = orjson.loads(b'"' + raw + b'"')
        except orjson.JSONDecodeError:
            return None
        return text if isinstance(text, str) else None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


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
