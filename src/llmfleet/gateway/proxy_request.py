"""One client request as the proxy carries it: parsed once, with what routing needs and what its answer told."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmfleet.api.types import ChatCompletionRequest, CompletionRequest
from llmfleet.gateway.relay_api import StreamSink
from llmfleet.routing.base import RouteRequest

if TYPE_CHECKING:
    from llmfleet.gateway.routes import AuxiliaryRequest


@dataclass
class ProxyRequest:
    """One client request, parsed once."""

    route: str
    """``completions``, ``chat``, or a pass-through route's name (:data:`llmfleet.gateway.routes.AUX_ROUTES`)."""
    path: str
    body: dict[str, Any]
    raw: bytes
    typed: CompletionRequest | ChatCompletionRequest | AuxiliaryRequest
    route_request: RouteRequest
    started: float
    """Gateway clock time the request was parsed (end-to-end latency and TTFT are measured from here)."""
    stream_sink: StreamSink | None = None
    """Told how a relayed stream ended (the front door settles tokens and fills the cache from it)."""
    usage: dict[str, int] | None = None
    """``prompt_tokens``/``completion_tokens`` of a non-streamed 200 answer, read once by the proxy (its token
    metrics) for the front door too (the key's tokens), instead of a second scan of the body."""

    @property
    def max_tokens(self) -> int | None:
        t = self.typed
        # type(...) is: isinstance on a pydantic model class goes through ABCMeta's Python __instancecheck__
        return t.effective_max_tokens if type(t) is ChatCompletionRequest else t.max_tokens

    @property
    def include_usage(self) -> bool:
        """The client asked for a usage chunk at the end of its stream."""
        return self.typed.include_usage
