"""Map llmfleet errors to OpenAI-style JSON error responses, once, at the HTTP edge."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from llmfleet.clock import Clock
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


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds (HTTP allows no fractions), at least 1."""
    return str(max(1, math.ceil(seconds)))


def error_response(exc: ApiError) -> web.Response:
    """An aiohttp response for ``exc`` (with ``Retry-After`` when the error carries one)."""
    headers = None if exc.retry_after_s is None else {"Retry-After": retry_after_header(exc.retry_after_s)}
    return web.json_response(error_payload(exc), status=exc.status, headers=headers)


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the offending parameter name from a pydantic error."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


class LogLimiter:
    """At most one log record per ``key`` every ``interval_s`` of ``clock`` time; counts what it held back.

    A hostile client can make every request fail the same way; one traceback per request would flood the log.
    """

    def __init__(self, clock: Clock, interval_s: float = 10.0) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: stay quiet; else log now, and the number of records suppressed since the last one."""
        now = self.clock.now()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._last) > 1024:  # bounded: keys come from exception types and routes
            self._last.clear()
        self._last[key] = now
        return self._suppressed.pop(key, 0)


LOG_LIMITER_KEY = web.AppKey("error_log_limiter", LogLimiter)
"""Set on an application to rate-limit the middleware's logging of unexpected errors."""


def _log_unexpected(request: web.Request, exc: BaseException) -> None:
    limiter = request.app.get(LOG_LIMITER_KEY)
    if limiter is None:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return
    suppressed = limiter.allow(f"{type(exc).__name__}:{request.path}")
    if suppressed is not None:
        log.error(
            "unhandled error serving %s %s (%d similar suppressed)",
            request.method,
            request.path,
            suppressed,
            exc_info=exc,
        )


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
    except RecursionError:
        body = error_body("request is nested too deeply", type_="BadRequestError", status=400)
        return web.json_response(body, status=400)
    except ConnectionResetError:
        # The client went away (e.g. before a stream's headers could be sent): nobody to answer, not a server
        # error. 499 as nginx logs it; aiohttp drops the response on the closed connection.
        log.debug("client went away while %s %s was served", request.method, request.path)
        return web.Response(status=499)
    except Exception as exc:
        _log_unexpected(request, exc)
        body = error_body("internal server error", type_="InternalServerError", status=500)
        return web.json_response(body, status=500)
