"""The relay's interfaces: the upstream response it reads (:class:`UpstreamBody`, one :class:`Segment` each), who
opens segments for it (:class:`Upstream`: the proxy's attempt loop), what it knows of the client's request
(:class:`StreamRequest`) and who is told how a stream ended (:class:`StreamSink`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from llmfleet.gateway.accounting import StreamState
from llmfleet.gateway.registry import Attempt, Outcome


class _Readable(Protocol):
    async def readany(self) -> bytes: ...


class UpstreamBody(Protocol):
    """An upstream response as the relay and the proxy read it: aiohttp's ``ClientResponse`` (pass-through routes)
    or the lean client's :class:`~llmfleet.gateway.upstream_http.UpstreamResponse` (completions and chat, the only
    ones the relay carries: its ``readany`` enforces the idle timeout itself)."""

    @property
    def status(self) -> int: ...

    @property
    def content(self) -> _Readable: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Segment:
    """One upstream stream: the attempt it belongs to, the open response and its first bytes (at least one
    complete line that is not blank, with whatever came in the same reads)."""

    attempt: Attempt
    response: UpstreamBody
    first: bytes


class Upstream(Protocol):
    """How the relay reaches replicas for one client stream (implemented by the proxy's attempt loop)."""

    async def open(self, body: bytes) -> Segment:
        """A new segment on a replica not tried yet for this stream; raises :class:`ServiceUnavailableError`,
        :class:`UpstreamError` or :class:`GatewayTimeoutError` when none starts it."""
        ...

    def end(self, segment: Segment, outcome: Outcome) -> None:
        """Settle ``segment``'s attempt (registry feedback and request metrics)."""
        ...

    async def tokenize(self, payload: dict[str, Any]) -> list[int] | None:
        """Token ids of ``payload`` (a ``/tokenize`` body) from a live replica of the model; None when none can."""
        ...

    async def detokenize(self, payload: dict[str, Any]) -> str | None:
        """Text of ``payload`` (a ``/detokenize`` body) from a live replica of the model; None when none can."""
        ...


class StreamRequest(Protocol):
    """What the relay needs to know about the client's request."""

    @property
    def route(self) -> str: ...

    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def started(self) -> float:
        """Clock time the request arrived."""
        ...

    @property
    def max_tokens(self) -> int | None: ...

    @property
    def include_usage(self) -> bool: ...


class StreamSink(Protocol):
    """Someone told how a relayed stream ended (the front door: token settlement and the response cache)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Extra headers for the client's stream response."""
        ...

    def stream_ended(self, st: StreamState) -> None:
        """The stream is over (completed or not: see ``st.completed``); ``st`` is not used after this."""
        ...
