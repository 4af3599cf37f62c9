"""One request's attempts on replicas: how an attempt failed, the verdict over suspect failures, the deadline.

:func:`upstream_failure` is the one mapping from an upstream error to a failure reason (a metric label);
:func:`fault_kind` says whose fault it is (*replica*: connect errors, resets, timeouts, 502/503/504; *suspect*:
another 5xx, maybe the request's own fault); :class:`Verdicts` settles suspects once other replicas answered (see
:mod:`llmfleet.gateway.proxy`); :class:`Deadline` is the request's one timer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import aiohttp

from llmfleet.gateway.registry import Attempt, Outcome, Registry
from llmfleet.gateway.upstream_http import UpstreamError as HttpUpstreamError

_REPLICA_STATUSES = frozenset({502, 503, 504})
"""5xx statuses that say the replica (or something in front of it), not the request, failed."""


class AttemptFailed(Exception):
    """One attempt on a replica failed in a way another replica may not: ``reason`` is the metric label."""

    def __init__(self, reason: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


UPSTREAM_ERRORS = (AttemptFailed, TimeoutError, aiohttp.ClientError, HttpUpstreamError)
"""What an attempt may fail with before the client has seen anything; :func:`upstream_failure` maps each."""


def upstream_failure(
    exc: BaseException | None = None, *, status: int | None = None, body: bytes = b""
) -> AttemptFailed:
    """The one mapping from an upstream error (an exception, or an HTTP ``status`` >= 500) to a failure reason:
    ``timeout``, ``connect``, ``http_<status>``, or the aiohttp exception's class name (the lean client's errors
    carry the same names)."""
    if isinstance(exc, AttemptFailed):
        return exc
    if isinstance(exc, HttpUpstreamError):
        return AttemptFailed(exc.reason)
    if exc is None:
        return AttemptFailed(f"http_{status}", status, body)
    if isinstance(exc, TimeoutError):  # before ClientError: aiohttp's timeouts are both
        return AttemptFailed("timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return AttemptFailed("connect")
    return AttemptFailed(type(exc).__name__)


def fault_kind(exc: AttemptFailed) -> Literal["replica", "suspect"]:
    """``replica``: a connect error, reset, timeout or 502/503/504 — the replica's fault; ``suspect``: another 5xx,
    which may be the request's fault until another replica answers differently."""
    if exc.status is None or exc.status in _REPLICA_STATUSES:
        return "replica"
    return "suspect"


def is_timeout(exc: AttemptFailed) -> bool:
    """The attempt timed out (no answer in time, or a body that went idle)."""
    return exc.reason in ("timeout", "idle_timeout")


class Verdicts:
    """Suspect attempts of one request awaiting a verdict (see the module docstring)."""

    __slots__ = ("pending", "registry", "repeated", "request_fault")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.pending: list[tuple[Attempt, AttemptFailed]] = []
        self.request_fault: AttemptFailed | None = None
        self.repeated: AttemptFailed | None = None
        """The same error came from two replicas: the request's fault unless a third replica, if one is left to
        try, answers (then the two were broken alike, e.g. a bad rollout's new replicas)."""

    def suspect(self, attempt: Attempt, exc: AttemptFailed) -> None:
        """A suspect failure: the same error on three replicas (or on two when no third is tried) -> the request's
        fault; different errors -> each replica's own."""
        same = sum(1 for _a, prev in self.pending if prev.status == exc.status and prev.body == exc.body)
        self.pending.append((attempt, exc))
        if same >= 2:
            self.request_fault = exc
            self.close(blame=False)
        elif same == 1:
            self.repeated = exc
        elif len(self.pending) > 1:  # different errors on two replicas: each replica's own
            self.close(blame=True)

    def verdict(self) -> AttemptFailed | None:
        """After the last attempt: the error that makes this the request's fault, if any."""
        return self.request_fault or self.repeated

    def close(self, *, blame: bool) -> None:
        """Settle pending suspects: as replica faults (``blame``), or with no verdict on the replica."""
        if blame:
            self.repeated = None
        for attempt, exc in self.pending:
            self.registry.judge(attempt, Outcome.failure(exc.reason) if blame else Outcome.abandoned())
        self.pending.clear()

    @property
    def may_retry(self) -> bool:
        return self.request_fault is None


class Deadline:
    """A request's deadline: one timer handle that cancels the task when it fires (what ``asyncio.timeout`` does,
    without its context manager's five calls per request); the caller turns that cancellation into a timeout."""

    __slots__ = ("cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()
