"""llmfleet's exception tree. Lower-layer errors are translated into these at module boundaries, and the HTTP
edge maps :class:`ApiError` to OpenAI-style JSON once (see :mod:`llmfleet.api.errors`)."""

from __future__ import annotations


class LLMFleetError(Exception):
    """Base class of every error llmfleet raises on purpose."""


class ConfigError(LLMFleetError):
    """Invalid configuration; the message names the offending key or option."""


class CatalogError(ConfigError):
    """Unknown or malformed GPU/model catalog entry."""


class ApiError(LLMFleetError):
    """An error that becomes an OpenAI-style JSON error response."""

    status: int = 400
    type: str = "BadRequestError"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        """When set, the response carries ``Retry-After`` (whole seconds, at least 1)."""


class InvalidRequestError(ApiError):
    """Malformed or invalid request parameters (HTTP 400)."""


class ModelNotFoundError(ApiError):
    """The requested model is not served here (HTTP 404, as vLLM answers)."""

    status = 404
    type = "NotFoundError"


class PayloadTooLargeError(ApiError):
    """Request body over the configured limit (HTTP 413)."""

    status = 413
    type = "PayloadTooLargeError"


class RequestTimeoutError(ApiError):
    """The client did not send its request body in time (HTTP 408)."""

    status = 408
    type = "RequestTimeoutError"


class OverloadedError(ApiError):
    """The fleet is at capacity: retry after ``Retry-After`` (HTTP 429; OpenAI's type name for it)."""

    status = 429
    type = "RateLimitError"


class RateLimitError(ApiError):
    """Over a key's requests or tokens per minute (HTTP 429 with ``Retry-After``, as OpenAI answers)."""

    status = 429
    type = "RateLimitError"


class ServiceUnavailableError(ApiError):
    """No replica can take the request, or the server is draining (HTTP 503)."""

    status = 503
    type = "ServiceUnavailableError"


class UpstreamError(ApiError):
    """An upstream replica failed and no retry could save the request (HTTP 502)."""

    status = 502
    type = "BadGatewayError"


class GatewayTimeoutError(ApiError):
    """An upstream replica did not answer in time (HTTP 504)."""

    status = 504
    type = "GatewayTimeoutError"


class InternalServerError(ApiError):
    """Injected or unexpected engine failure (HTTP 500)."""

    status = 500
    type = "InternalServerError"
