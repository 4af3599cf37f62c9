"""A streamed cache miss streams live (first token long before the last) and fills the cache for the next request."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from llmfleet.gateway.cache import HEADER
from tests.gateway.conftest import MODEL
from tests.gateway.test_cache import _engine_requests, post


def stream_timed(url: str, path: str, body: dict[str, Any]) -> tuple[dict[str, str], list[tuple[float, str]]]:
    """POST a streamed request; the response headers and each ``data:`` line with the seconds it arrived after
    the request was sent."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        t0 = time.monotonic()
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        lines = []
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                lines.append((time.monotonic() - t0, line[6:].decode().strip()))
        return {k.lower(): v for k, v in resp.getheaders()}, lines
    finally:
        conn.close()


def _text(route: str, lines: list[tuple[float, str]]) -> str:
    chunks = [json.loads(data) for _, data in lines if data != "[DONE]"]
    if route == "chat":
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"])


def test_streamed_miss_streams_live_then_hits(fleet: Callable[..., Any]) -> None:
    # time_scale 0.25: a 40-token answer takes well over a second, one token every few tens of milliseconds.
    gw, sims = fleet(1, gateway={"cache": "memory", "health": {"probe_completion": False}}, time_scale=0.25)
    for route, path, extra in (
        ("completions", "/v1/completions", {"prompt": "tell me a story"}),
        ("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "tell me a story"}]}),
    ):
        body = {"model": MODEL, "max_tokens": 40, "temperature": 0, "stream": True, **extra}
        before = _engine_requests(sims[0])
        headers, lines = stream_timed(gw.url, path, body)
        assert headers[HEADER] == "miss" and lines[-1][1] == "[DONE]"
        first_token = next(t for t, data in lines if data != "[DONE]" and _text(route, [(t, data)]))
        last = lines[-1][0]
        assert last > 0.5, f"{route}: the answer came too fast ({last:.2f} s) to tell live from replayed"
        assert first_token < last / 3, f"{route}: first token at {first_token:.2f} s, last at {last:.2f} s"
        text = _text(route, lines)
        assert text

        # The identical request again, streamed and not: hits with the same text; the engine sees neither.
        headers2, lines2 = stream_timed(gw.url, path, body)
        assert headers2[HEADER] == "hit" and _text(route, lines2) == text
        again = post(f"{gw.url}{path}", {**body, "stream": False})
        assert again.headers[HEADER] == "hit"
        choice = again.json()["choices"][0]
        assert (choice["message"]["content"] if route == "chat" else choice["text"]) == text
        assert choice["finish_reason"] == "length" and again.json()["usage"]["completion_tokens"] == 40
        assert _engine_requests(sims[0]) == before + 1


def test_streamed_miss_coalesces_waiters_onto_the_live_stream(fleet: Callable[..., Any]) -> None:
    gw, sims = fleet(1, gateway={"cache": "memory", "health": {"probe_completion": False}}, time_scale=0.5)
    body = {"model": MODEL, "prompt": "many at once", "max_tokens": 20, "seed": 3, "stream": True}
    before = _engine_requests(sims[0])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: stream_timed(gw.url, "/v1/completions", body), range(4)))
    assert sorted(h[HEADER] for h, _ in got) == ["hit"] * 3 + ["miss"]
    assert len({_text("completions", lines) for _, lines in got}) == 1
    assert _engine_requests(sims[0]) == before + 1
