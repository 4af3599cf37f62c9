"""Map llmfleet errors to OpenAI-style JSON error responses, once, at the HTTP edge."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from llmfleet.errors import ApiError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(
    message: str, *, type_: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """The JSON body vLLM and OpenAI use for errors."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code if code else status}}


def error_payload(exc: ApiError) -> dict[str, object]:
    """The JSON body for ``exc`` (an HTTP error response, or an SSE error event once a stream has started)."""
    return error_body(exc.message, type_=exc.type, status=exc.status, param=exc.param, code=exc.code)


def error_response(exc: ApiError) -> web.Response:
    """An aiohttp response for ``exc``."""
    return web.json_response(error_payload(exc), status=exc.status)


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the offending parameter name from a pydantic error."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`ApiError` and stray exceptions into JSON errors; never leak a stack trace to clients."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status == 413 and exc.text else (exc.reason or "error")
        body = error_body(message, type_=type(exc).__name__, status=exc.status)
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return web.json_response(body, status=exc.status, headers=headers)
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        body = error_body("internal server error", type_="InternalServerError", status=500)
        return web.json_response(body, status=500)
