"""OpenAI-compatible request types (the subset vLLM serves), validated with pydantic.

Unknown fields are kept (``extra="allow"``) so that vLLM-specific parameters pass through a gateway untouched.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmfleet.api.errors import validation_message
from llmfleet.errors import InvalidRequestError

_M = TypeVar("_M", bound=BaseModel)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    user: str | None = None
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        return [v] if isinstance(v, str) else v

    @property
    def stop_list(self) -> list[str]:
        stop = self.stop
        return [stop] if isinstance(stop, str) else list(stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingRequest):
    """``POST /v1/completions``."""

    prompt: str | list[int] | list[str]

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: str | list[int] | list[str]) -> str | list[int] | list[str]:
        if isinstance(v, list) and len(v) == 0:
            raise ValueError("prompt must not be empty")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (text parts of multi-part content, joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class ChatCompletionRequest(_SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    continue_final_message: bool = False
    add_generation_prompt: bool = True

    @property
    def effective_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_request(model: type[_M], payload: object) -> _M:
    """Validate ``payload`` as ``model``; raise :class:`InvalidRequestError` naming the parameter."""
    if not isinstance(payload, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        msg, param = validation_message(exc)
        raise InvalidRequestError(msg, param=param) from None
