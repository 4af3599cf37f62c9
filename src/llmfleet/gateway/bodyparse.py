"""Bounded reading and parsing of request bodies: one client must not be able to freeze the event loop.

Everything that costs time in proportion to a hostile body is bounded *before* :func:`json.loads` runs, with
byte counts done in C (``bytes.count``/``translate``): a body with 250,000 keys is refused in a few milliseconds
instead of costing a second of parse and validation. What can only be seen after parsing (nesting depth, lone
surrogates, prompt sizes) is checked on the parsed value with work bounded by the pre-checks.

Each error is an :class:`~llmfleet.errors.InvalidRequestError` naming the field or limit (HTTP 400), a
:class:`~llmfleet.errors.RequestTimeoutError` for a body that does not arrive in time (408); never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from llmfleet.errors import InvalidRequestError, RequestTimeoutError

_WS = b" \t\r\n"
_KEY_END = re.compile(rb'(?<!\\)(?:\\\\)*":')
"""A key's closing quote and colon (whitespace removed): the quote is not escaped."""
_PROMPT_ARRAY = re.compile(rb'(?<!\\)"prompt"\s*:\s*\[')
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""An escaped surrogate, or one encoded as (invalid) UTF-8, which :func:`json.loads` lets through."""


@dataclass(frozen=True)
class BodyLimits:
    """Bounds on one JSON request body (from :class:`~llmfleet.config.GatewayConfig`)."""

    max_depth: int = 32
    max_keys: int = 4096
    max_prompt_tokens: int = 131_072
    max_prompt_chars: int = 1_000_000
    read_timeout_s: float = 30.0


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The request body, or 408 when it does not arrive within ``timeout_s`` (trickled or cut short), 400 when its
    ``Content-Encoding`` does not decode. Size limits (413) are aiohttp's ``client_max_size``."""
    try:
        if request.content.is_eof():  # the whole body came with the headers: nothing to wait for, no timer
            return await request.read()
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s", code="body_read_timeout"
        ) from None
    except (HttpProcessingError, RequestPayloadError) as exc:
        cause = exc.__cause__ or exc
        raise InvalidRequestError(f"the request body could not be decoded: {cause}", code="bad_body") from None


def precheck(raw: bytes, limits: BodyLimits) -> None:
    """Refuse, before parsing, a body with too many keys or a token-id ``prompt`` longer than allowed.

    Counting colons bounds the keys from above. ``":`` not preceded by a backslash is always a key's end, so its
    count bounds them from below: a hostile body is refused after two ``bytes.count`` calls. Only a body between
    the bounds (keys written ``"k" :``, or many escaped quotes before colons) costs an exact count (a regex).
    """
    if raw.count(b":") > limits.max_keys:
        keys = raw.count(b'":') - raw.count(b'\\":')
        if keys <= limits.max_keys:
            keys = len(_KEY_END.findall(raw.translate(None, _WS)))
        if keys > limits.max_keys:
            raise InvalidRequestError(
                f"request body has more than {limits.max_keys} keys (gateway.max_json_keys)", code="too_many_keys"
            )
    m = _PROMPT_ARRAY.search(raw)
    if m is not None:
        end = raw.find(b"]", m.end())
        items = raw.count(b",", m.end(), end if end >= 0 else len(raw)) + 1
        if items > limits.max_prompt_tokens:
            raise InvalidRequestError(
                f"prompt: more than {limits.max_prompt_tokens} items (gateway.max_prompt_tokens)",
                param="prompt",
                code="prompt_too_long",
            )


def parse_json(raw: bytes, limits: BodyLimits) -> Any:
    """Parse a request body within ``limits``: keys and prompt size first (:func:`precheck`), then JSON, then
    nesting depth and well-formed Unicode (a lone surrogate such as ``"\\ud800"`` is refused naming its field)."""
    precheck(raw, limits)
    try:
        body = orjson.loads(raw)  # the fast parse; what it refuses is parsed again by json for json's own errors
    except orjson.JSONDecodeError:
        body = _json_loads(raw, limits)
    if raw.count(b"{") + raw.count(b"[") > limits.max_depth:
        check_depth(body, limits.max_depth)
    if _SURROGATE.search(raw):
        check_unicode(body)
    return body


def _json_loads(raw: bytes, limits: BodyLimits) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidRequestError(
            f"request body is nested deeper than {limits.max_depth} levels", code="too_deep"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"Invalid JSON in request body: {exc}") from None


def check_depth(value: Any, max_depth: int) -> None:
    """400 when containers nest deeper than ``max_depth`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > max_depth:
            raise InvalidRequestError(f"request body is nested deeper than {max_depth} levels", code="too_deep")
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def check_unicode(value: Any) -> None:
    """400 naming the field of the first string (or key) that is not valid Unicode (a lone surrogate)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            _check_str(v, path or "body")
        elif isinstance(v, dict):
            for k, c in v.items():
                where = f"{path}.{k}" if path else str(k)
                _check_str(k, where)
                stack.append((c, where))
        elif isinstance(v, list):
            stack.extend((c, f"{path}.{i}") for i, c in enumerate(v) if isinstance(c, str | dict | list))


def _check_str(s: str, where: str) -> None:
    if s.isascii():
        return
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{where}: invalid Unicode (lone surrogate at position {exc.start})",
            param=where,
            code="invalid_unicode",
        ) from None


def check_prompt_text(text_len: int, limits: BodyLimits, param: str) -> None:
    """400 when a prompt's text is longer than ``limits.max_prompt_chars``."""
    if text_len > limits.max_prompt_chars:
        raise InvalidRequestError(
            f"{param}: longer than {limits.max_prompt_chars} characters (gateway.max_prompt_chars)",
            param=param,
            code="prompt_too_long",
        )


def check_token_ids(ids: list[int], vocab_size: int | None, limits: BodyLimits) -> None:
    """400 for a token-id prompt that is too long, negative, or outside a known vocabulary."""
    if len(ids) > limits.max_prompt_tokens:
        raise InvalidRequestError(
            f"prompt: more than {limits.max_prompt_tokens} tokens", param="prompt", code="prompt_too_long"
        )
    lo, hi = min(ids), max(ids)
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        bad = lo if lo < 0 else hi
        bound = f"[0, {vocab_size})" if vocab_size is not None else "non-negative"
        raise InvalidRequestError(
            f"prompt: token id {bad} out of range (must be {bound})", param="prompt", code="token_out_of_range"
        )
