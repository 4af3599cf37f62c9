"""What a relayed stream delivered: the per-chunk accounting behind resumption and a truthful final usage.

:func:`track_chunk` (exact, ``gateway.stream_accounting: exact``; pure apart from the state) parses every upstream
chunk and keeps what reached the client — the text, the tokens (from the engine's ``token_ids`` and per-chunk usage,
else one per text chunk), the first ``id``/``created``, the prompt and the final usage — and strips what the gateway
asked for and the client did not. After a resume it rewrites what the resumed segment sends so the client sees one
stream. Lean accounting (``gateway.stream_accounting: lean``) forwards a first segment's mid-stream chunks as they
came after a bytes check (:func:`plain_line`) and keeps their lines; :func:`fold` accounts them, as
:func:`track_chunk` would, only when the stream must be resumed, its text is read, or it ended without a final usage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmfleet.gateway.chunkscan import dumps, loads
from llmfleet.gateway.resume import Echo, drop_echo

log = logging.getLogger(__name__)
DONE = b"data: [DONE]\n\n"
"""The SSE event that ends a stream."""


def sse(payload: bytes) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + payload + b"\n\n"


@dataclass
class StreamState:
    """What has reached the client so far, for resumption and a consistent final usage."""

    include_usage: bool
    """The client asked for the usage chunk (the gateway always asks upstream, and hides it otherwise)."""
    chat: bool
    want_token_ids: bool = False
    """The client itself asked for ``return_token_ids`` (else the ids the gateway asked for are stripped)."""
    want_continuous_usage: bool = False
    """The client itself asked for usage on every chunk (else it is stripped)."""
    id: str | None = None
    created: int | None = None
    texts: list[str] = field(default_factory=list)
    """Text delivered, chunk by chunk, as far as it is accounted (lean: up to the kept lines; see :attr:`parts`)."""
    lean: bool = False
    """Lean accounting (``gateway.stream_accounting``): the first segment's chunks are forwarded untouched and
    kept in :attr:`raw`, accounted (:func:`fold`) only when the stream is resumed, its text is read, it ended
    without a final usage, or :data:`LEAN_KEEP_LINES` are kept."""
    raw: list[bytes] = field(default_factory=list)
    """Lean: the ``data:`` lines relayed and not accounted yet, in order."""
    delivered: int = 0
    """Tokens delivered: exact when the engine reported token ids or usage per chunk (``exact``), else the
    content chunks (corrected with the engine's ``/tokenize`` before a resume)."""
    exact: bool = True
    token_ids: list[int] | None = field(default_factory=list)
    """The generated token ids delivered, in order; None once a token-bearing chunk came without them."""
    prompt_ids: list[int] | None = None
    """The client's prompt as token ids, when the first segment reported them."""
    prompt_tokens: int | None = None
    """The client's prompt length in tokens, from the first segment."""
    delivered_before_segment: int = 0
    """``delivered`` when the current (resumed) segment began."""
    segment_reported: int = 0
    """``completion_tokens`` of the current segment's last per-chunk usage."""
    finished: bool = False
    """A chunk carried a ``finish_reason`` or an error: the stream may end."""
    resumed: bool = False
    resumes: int = 0
    echo: Echo | None = None
    """What the resumed segment's first text will repeat (:class:`~llmfleet.gateway.resume.Echo`): dropped."""
    usage: dict[str, Any] | None = None
    first_at: float | None = None
    last_at: float | None = None
    itl_s: list[float] = field(default_factory=list)
    """Gaps between token-bearing chunks, observed in one batch when the stream ends (not one metric update each)."""
    finish_reason: str | None = None
    """The ``finish_reason`` the (last) segment ended with."""
    completed: bool = False
    """The stream reached ``[DONE]`` after a finish (not ended by a failure, a synthetic finish or the client)."""

    @property
    def parts(self) -> list[str]:
        """Text delivered, chunk by chunk (lean: the kept lines are accounted first)."""
        if self.raw:
            fold(self)
        return self.texts


@dataclass(slots=True)
class Chunk:
    """What one upstream ``data:`` payload amounts to (made once per chunk: not frozen, whose ``__init__`` costs
    ~0.5 us more through ``object.__setattr__``; nothing changes one after it is made)."""

    out: bytes | None
    """The event to send to the client; None: drop it."""
    tokens: int = 0
    """Generated tokens it carried (vLLM packs several into one chunk under load)."""
    usage: dict[str, Any] | None = None
    """The final usage it carried, as sent to the client (rewritten after a resume)."""

    @property
    def token(self) -> bool:
        """It carried at least one generated token."""
        return self.tokens > 0


def upstream_stream_body(body: dict[str, Any], token_ids: bool = True, lean: bool = False) -> dict[str, Any]:
    """The body sent upstream for a client stream: the gateway always asks for the final usage and per-chunk usage
    (vLLM's ``continuous_usage_stats``), and for the token ids (``return_token_ids``) unless ``token_ids`` is
    false (``gateway.resume_token_ids``); engines that ignore them are counted by text and ``/tokenize``. What the
    client did not ask for is stripped from its stream.

    ``lean`` (``gateway.stream_accounting: lean``): only the final usage (one chunk per stream, for the token
    metrics, the key's token settlement and the response cache; dropped when the client did not ask for it), so
    every other chunk reaches the client as the engine wrote it."""
    opts = body.get("stream_options")
    if lean:
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return body
        return {**body, "stream_options": {**(opts if isinstance(opts, dict) else {}), "include_usage": True}}
    out = dict(body)
    out["stream_options"] = {
        **(opts if isinstance(opts, dict) else {}),
        "include_usage": True,
        "continuous_usage_stats": True,
    }
    if token_ids:
        out["return_token_ids"] = True
    return out


def new_state(body: dict[str, Any], chat: bool, include_usage: bool, lean: bool = False) -> StreamState:
    """The state of a fresh client stream for request ``body`` (``lean``: ``gateway.stream_accounting: lean``)."""
    opts = body.get("stream_options")
    continuous = bool(opts.get("continuous_usage_stats")) if isinstance(opts, dict) else False
    return StreamState(
        include_usage=include_usage,
        chat=chat,
        want_token_ids=bool(body.get("return_token_ids")),
        want_continuous_usage=continuous,
        lean=lean,
    )


def track_chunk(payload: bytes, st: StreamState) -> Chunk:
    """Account for one upstream SSE payload in ``st`` and say what to send the client. Pure apart from ``st``.

    Mid-stream content chunks (nearly all of them) take :func:`_content_chunk`'s short path; the rest the general
    one. A chunk is forwarded as it came unless something in it must be stripped or rewritten."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            obj = loads(payload)  # json's verdict on what orjson refuses (chunkscan.loads)
        except ValueError:
            return Chunk(sse(payload))
    if not isinstance(obj, dict):
        return Chunk(sse(payload))
    if st.id is not None and not st.resumed:
        chunk = _content_chunk(obj, payload, st)
        if chunk is not None:
            return chunk
    if "error" in obj:
        st.finished = True
        return Chunk(sse(payload))
    if st.id is None:
        st.id, st.created = obj.get("id"), obj.get("created")
    changed = st.resumed
    if st.resumed:
        obj["id"], obj["created"] = st.id, st.created
    choices = obj.get("choices")
    if not choices:
        usage = obj.get("usage")
        if usage:
            usage = _stream_usage(usage, st)
            obj["usage"] = usage
            st.usage = usage
            changed = True
        return Chunk(_encode(obj, payload, changed) if st.include_usage else None, usage=usage or None)
    choice = choices[0]
    if not st.resumed:
        _note_prompt(obj, choice, st)
    if st.chat:
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if st.resumed and "role" in delta and not text and not choice.get("finish_reason"):
            return Chunk(None)  # the resumed segment's opening role chunk: the client already had one
    else:
        text = choice.get("text")
    if st.echo is not None and text and isinstance(text, str):
        text = _without_echo(text, choice, st)
    usage = obj.get("usage")
    n = _count(choice.get("token_ids"), usage if isinstance(usage, dict) else None, text, st)
    if text:
        st.texts.append(text)
    st.delivered += n
    if choice.get("finish_reason"):
        st.finished = True
        st.finish_reason = choice["finish_reason"]
    changed = _strip(obj, choice, st) or changed
    return Chunk(_encode(obj, payload, changed), tokens=n)


def _content_chunk(obj: dict[str, Any], payload: bytes, st: StreamState) -> Chunk | None:
    """The full parse's common case in few steps: a mid-stream content chunk of one choice with no finish, role,
    error or prompt ids (vLLM's, with ``token_ids`` and per-chunk ``usage``); None for anything else. Parsing with
    orjson and reading the dict costs less CPU than any bytes scan written in Python (see docs/gateway.md)."""
    choices = obj.get("choices")
    if type(choices) is not list or len(choices) != 1 or "error" in obj or "prompt_token_ids" in obj:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None or "prompt_token_ids" in choice:
        return None
    if st.chat:
        delta = choice.get("delta")
        if type(delta) is not dict or "role" in delta:
            return None
        text = delta.get("content")
    else:
        text = choice.get("text")
    if text is not None and type(text) is not str:
        return None
    usage = obj.get("usage")
    if usage is not None and type(usage) is not dict:
        return None
    ids = choice.get("token_ids")
    if usage is not None and st.prompt_tokens is None and isinstance(usage.get("prompt_tokens"), int):
        st.prompt_tokens = usage["prompt_tokens"]
    n = _count(ids, usage, text, st)
    if text:
        st.texts.append(text)
    st.delivered += n
    changed = False
    if ids is not None and not st.want_token_ids:
        del choice["token_ids"]
        changed = True
    if usage is not None and not st.want_continuous_usage:
        del obj["usage"]
        changed = True
    return Chunk(sse(dumps(obj)) if changed else sse(payload), tokens=n)


LEAN_KEEP_LINES = 2048
"""Lean: lines kept unaccounted before they are folded in (bounds a long stream's kept bytes to ~0.5 MB)."""


def plain_line(line: bytes) -> bool:
    """Lean: ``line`` (an upstream ``data:`` line) is a mid-stream chunk that may go to the client as it is: it
    has a ``"finish_reason":null`` and no other finish reason. A JSON string cannot hold an unescaped ``"``, so
    these bytes are keys, never text; a chunk written with spaces (``"finish_reason": null``) is parsed instead."""
    return b'"finish_reason":null' in line and b'"finish_reason":"' not in line


def lean_chunk(payload: bytes, line: bytes, st: StreamState) -> Chunk:
    """Lean accounting of a first segment's payload that is not :func:`plain_line` (the opening chunk, the finish,
    the final usage, an error, anything not compact): parsed for what the relay needs now (``id``, finish, error,
    usage) and forwarded unchanged; its ``line`` is kept in ``st.raw`` for :func:`fold`."""
    try:
        obj = loads(payload)
    except ValueError:
        return Chunk(sse(payload))
    if not isinstance(obj, dict):
        return Chunk(sse(payload))
    if "error" in obj:
        st.finished = True
        return Chunk(sse(payload))
    if st.id is None:
        st.id, st.created = obj.get("id"), obj.get("created")
    choices = obj.get("choices")
    if not choices:
        usage = obj.get("usage")
        if isinstance(usage, dict) and usage:
            st.usage = usage
            return Chunk(sse(payload) if st.include_usage else None, usage=usage)
        return Chunk(sse(payload) if st.include_usage else None)
    st.raw.append(line)
    choice = choices[0] if type(choices) is list else None
    if type(choice) is not dict:
        return Chunk(sse(payload))
    if choice.get("finish_reason"):
        st.finished = True
        st.finish_reason = choice["finish_reason"]
    delta = choice.get("delta") if st.chat else choice
    text = delta.get("content") if st.chat and type(delta) is dict else choice.get("text")
    return Chunk(sse(payload), tokens=1 if text else 0)


def fold(st: StreamState) -> None:
    """Lean: account the kept lines in ``st`` as exact mode would have (text, tokens, ids, prompt) and drop them.
    They carry only what the client asked for, so the count is by text chunk unless it asked for ids or per-chunk
    usage (:func:`_count`); a resume corrects it with ``/tokenize``."""
    raw, st.raw = st.raw, []
    usage = st.usage
    for line in raw:
        track_chunk(line[5:].strip(), st)
    st.usage = usage


def _without_echo(text: str, choice: dict[str, Any], st: StreamState) -> str:
    """The resumed segment's first text without the echo of what the client already had (vLLM #48853)."""
    echo, st.echo = st.echo, None
    assert echo is not None
    kept = drop_echo(text, echo)
    if kept != text:
        log.info("dropped a resumed segment's echo of %d characters (vLLM #48853)", len(text) - len(kept))
        if st.chat:
            choice["delta"]["content"] = kept
        else:
            choice["text"] = kept
    return kept


def _note_prompt(obj: dict[str, Any], choice: dict[str, Any], st: StreamState) -> None:
    """The client's prompt (ids and length) from the first segment's chunks."""
    ids = obj.get("prompt_token_ids") if st.chat else choice.get("prompt_token_ids")
    if isinstance(ids, list) and st.prompt_ids is None:
        st.prompt_ids = ids
        st.prompt_tokens = len(ids)
    usage = obj.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int) and st.prompt_tokens is None:
        st.prompt_tokens = usage["prompt_tokens"]


def _count(ids: Any, usage: dict[str, Any] | None, text: str | None, st: StreamState) -> int:
    """Tokens in one chunk from its ``token_ids`` and per-chunk ``usage``: by the engine's cumulative usage, else
    the ids, else 1 per text chunk (inexact: vLLM packs tokens into one chunk under load and some tokens decode to
    no text)."""
    reported = usage.get("completion_tokens") if usage is not None else None
    if isinstance(reported, int):
        n = max(0, reported - st.segment_reported)
        st.segment_reported = max(reported, st.segment_reported)
    elif isinstance(ids, list):
        n = len(ids)
    else:
        n = 1 if text else 0
        if n:
            st.exact = False
    if st.token_ids is not None:
        if isinstance(ids, list) and len(ids) == n:
            st.token_ids.extend(ids)
        elif n:
            st.token_ids = None
    return n


def _strip(obj: dict[str, Any], choice: dict[str, Any], st: StreamState) -> bool:
    """Remove what the gateway asked for and the client did not; rewrite per-chunk usage after a resume."""
    changed = False
    if not st.want_token_ids:
        for holder, key in ((choice, "token_ids"), (choice, "prompt_token_ids"), (obj, "prompt_token_ids")):
            if key in holder:
                del holder[key]
                changed = True
    elif st.resumed:  # the resumed segment's prompt is the gateway's continuation: the client had its own once
        for holder in (choice, obj):
            if "prompt_token_ids" in holder:
                del holder["prompt_token_ids"]
                changed = True
    if "usage" in obj:
        if not st.want_continuous_usage:
            del obj["usage"]
            changed = True
        elif st.resumed and isinstance(obj["usage"], dict):
            obj["usage"] = _stream_usage(obj["usage"], st)
            changed = True
    return changed


def _stream_usage(usage: dict[str, Any], st: StreamState) -> dict[str, Any]:
    """Usage as the client must see it: its own prompt, and every token it was sent over all segments."""
    if not st.resumed:
        return usage
    out = dict(usage)
    segment = out.get("completion_tokens") or 0
    prompt = st.prompt_tokens
    if prompt is None:  # the first segment never said: the resumed prompt held the delivered tokens
        prompt = max(0, (out.get("prompt_tokens") or 0) - st.delivered_before_segment)
    out["prompt_tokens"] = prompt
    out["completion_tokens"] = segment + st.delivered_before_segment
    out["total_tokens"] = prompt + out["completion_tokens"]
    return out


def _encode(obj: dict[str, Any], payload: bytes, changed: bool) -> bytes:
    """The upstream payload as is, or re-encoded (keeping the stream's first ``id``/``created``) when changed."""
    if not changed:
        return sse(payload)
    return sse(dumps(obj))
