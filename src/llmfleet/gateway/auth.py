"""Who is calling and may they go now: API key authentication, per-key limits and per-key metrics.

:class:`AccessControl` is what the request path uses: :meth:`~AccessControl.authenticate` (401 without a valid key
when a keys file is configured), :meth:`~AccessControl.admit` (429 with ``Retry-After`` over a limit) and
:meth:`~AccessControl.finish` (settles the token reservation with the real usage and counts the request under the
key's *name*; the key itself never appears in metrics or logs). Without a keys file every caller is the anonymous
principal, unlimited, and the OpenAI routes stay open as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.errors import ApiError, RateLimitError
from llmfleet.gateway.keys import KeyRing
from llmfleet.gateway.limits import KeyLimits, Limiter, Reservation, Verdict
from llmfleet.gateway.metrics import LeanCounter

ANONYMOUS = "anonymous"
_USAGE_RE = re.compile(rb'"(prompt_tokens|completion_tokens)"\s*:\s*(\d+)')


class AuthenticationError(ApiError):
    """No key, or not a valid one (HTTP 401, as OpenAI answers)."""

    status = 401
    type = "AuthenticationError"


@dataclass(frozen=True)
class Principal:
    """The caller a request is accounted to."""

    name: str
    """The key's name (``anonymous`` without keys); the ``key`` label of per-key metrics."""
    priority: int = 0
    """Overload shedding order: lower priorities are shed first."""
    limits: KeyLimits = field(default_factory=KeyLimits)


class AccessMetrics:
    """Per-key counters on the gateway's registry, labelled by key name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = LeanCounter(
            "llmfleet_gateway_key_requests",
            "Requests by API key name and HTTP status (429: refused by the key's limits).",
            ["key", "status"],
            registry=registry,
        )
        self.tokens = LeanCounter(
            "llmfleet_gateway_key_tokens",
            "Tokens generated for each API key name, by direction (prompt, completion), from usage.",
            ["key", "direction"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "llmfleet_gateway_key_rate_limited",
            "Requests refused by a key's limit (rpm, tpm).",
            ["key", "limit"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "llmfleet_gateway_auth_failures",
            "Requests refused for want of a valid API key (missing, invalid).",
            ["reason"],
            registry=registry,
        )


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), or None."""
    value = headers.get("Authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def estimate_prompt_tokens(prompt_text: str, token_ids: int | None = None) -> int:
    """Prompt tokens for the tpm reservation before the engine counts them: the ids when the prompt is token ids,
    else ~4 UTF-8 bytes per token (the gateway has no tokenizer; the real usage settles the difference)."""
    if token_ids is not None:
        return token_ids
    return len(prompt_text.encode("utf-8")) // 4 + 1


def usage_from_body(data: bytes) -> dict[str, int] | None:
    """``prompt_tokens``/``completion_tokens`` of a JSON completion response (a regex: the usage sits at the end)."""
    found = _USAGE_RE.findall(data[-512:]) or _USAGE_RE.findall(data)
    return {k.decode(): int(v) for k, v in found} if found else None


class AccessControl:
    """API keys, per-key limits and per-key metrics; see the module docstring."""

    def __init__(
        self, keyring: KeyRing | None, limiter: Limiter, registry: CollectorRegistry, assumed_max_tokens: int = 256
    ) -> None:
        self.keyring = keyring
        self.limiter = limiter
        self.assumed_max_tokens = assumed_max_tokens
        self.metrics = AccessMetrics(registry)
        self._anonymous = Principal(ANONYMOUS)
        """Every caller without keys (frozen: one object, not a new one per request)."""
        if keyring is not None:
            ring = keyring

            def loaded() -> float:  # a scrape also looks for a changed keys file, like a request does
                ring.maybe_reload()
                return float(len(ring))

            Gauge(
                "llmfleet_gateway_keys_loaded",
                "Active API keys the gateway holds (re-read from the keys file when it changes).",
                registry=registry,
            ).set_function(loaded)

    @property
    def enabled(self) -> bool:
        """Whether keys are required."""
        return self.keyring is not None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller's principal; :class:`AuthenticationError` when keys are required and none valid is given."""
        if self.keyring is None:
            return self._anonymous
        token = bearer_token(headers)
        if token is None:
            self.metrics.auth_failures.labels("missing").inc()
            raise AuthenticationError(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.", code="missing_api_key"
            )
        rec = self.keyring.lookup(token)
        if rec is None:
            self.metrics.auth_failures.labels("invalid").inc()
            raise AuthenticationError("Incorrect or revoked API key provided.", code="invalid_api_key")
        return Principal(rec.name, rec.priority, KeyLimits(rec.rpm, rec.tpm))

    def reserve_tokens(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """Tokens a request reserves against tpm: its prompt plus its ``max_tokens`` (or the assumed default)."""
        return prompt_tokens + (max_tokens if max_tokens is not None else self.assumed_max_tokens)

    async def admit(self, who: Principal, prompt_tokens: int, max_tokens: int | None) -> Reservation:
        """Take the request from ``who``'s limits, or raise :class:`RateLimitError`."""
        verdict, reservation = await self.limiter.acquire(
            who.name, who.limits, self.reserve_tokens(prompt_tokens, max_tokens)
        )
        if not verdict.allowed:
            self.metrics.rate_limited.labels(who.name, verdict.limit or "unknown").inc()
            self.metrics.requests.labels(who.name, "429").inc()
            raise _refusal(who, verdict)
        return reservation

    async def finish(
        self,
        who: Principal,
        reservation: Reservation | None,
        status: int,
        usage: Mapping[str, Any] | None,
        *,
        generated: bool = True,
    ) -> None:
        """Account a finished request: count it, settle its reservation with ``usage`` (unknown usage keeps the
        reservation), and count its tokens when the fleet ``generated`` them (not for a cache hit)."""
        self.metrics.requests.labels(who.name, str(status)).inc()
        used: int | None = None
        if usage is not None:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            used = prompt + completion if generated else 0
            if generated:
                self.metrics.tokens.labels(who.name, "prompt").inc(prompt)
                self.metrics.tokens.labels(who.name, "completion").inc(completion)
        elif status != 200 or not generated:
            used = 0  # nothing was generated: give the reservation back
        if reservation is not None:
            await self.limiter.settle(reservation, used)


def _refusal(who: Principal, verdict: Verdict) -> RateLimitError:
    limit = verdict.limit or "rpm"
    value = who.limits.rpm if limit == "rpm" else who.limits.tpm
    unit = "requests" if limit == "rpm" else "tokens"
    if verdict.too_large:
        return RateLimitError(
            f"Request too large for key `{who.name}`: it needs more {unit} than its whole limit of {value} {unit} "
            "per minute. Lower max_tokens or the prompt.",
            code="request_too_large",
            retry_after_s=verdict.retry_after_s,
        )
    return RateLimitError(
        f"Rate limit reached for key `{who.name}`: {value} {unit} per minute. "
        f"Please try again in {math.ceil(verdict.retry_after_s * 1000)} ms.",
        code="rate_limit_exceeded",
        retry_after_s=verdict.retry_after_s,
    )
