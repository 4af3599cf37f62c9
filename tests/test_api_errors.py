"""The error middleware on a real aiohttp app on 127.0.0.1: JSON errors, and no error logged for a client that went
away."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest
from aiohttp import web

from llmfleet.api.errors import error_middleware
from llmfleet.appthread import AppThread


def _app() -> web.Application:
    async def gone(_: web.Request) -> web.Response:
        raise ConnectionResetError("Cannot write to closing transport")  # as StreamResponse.prepare raises it

    async def broken(_: web.Request) -> web.Response:
        raise ValueError("a bug")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/gone", gone)
    app.router.add_get("/broken", broken)
    return app


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_client_that_went_away_is_not_a_server_error(caplog: pytest.LogCaptureFixture) -> None:
    with AppThread(_app) as t, caplog.at_level(logging.INFO, logger="llmfleet"):
        assert _status(f"{t.url}/gone") == 499
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert _status(f"{t.url}/broken") == 500
        assert [r for r in caplog.records if r.levelno >= logging.ERROR]  # a real bug is still logged
