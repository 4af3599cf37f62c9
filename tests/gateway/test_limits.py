"""Per-key token buckets: the admission rule, refill, settlement, and the Redis script agreeing with the local store."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from llmfleet.api.errors import error_response, retry_after_header
from llmfleet.appthread import free_port
from llmfleet.clock import ManualClock
from llmfleet.errors import RateLimitError
from llmfleet.gateway.auth import AccessControl, Principal
from llmfleet.gateway.keys import KeysFile
from llmfleet.gateway.limits import (
    KeyLimits,
    Limiter,
    LocalLimitStore,
    RedisLimitStore,
    Verdict,
    decide,
)
from llmfleet.gateway.shared_state import SharedState
from tests.gateway.conftest import MODEL, wait_until


@pytest.mark.parametrize(
    ("levels", "costs", "expected"),
    [
        ({"rpm": 1.0, "tpm": 100.0}, {"rpm": 1, "tpm": 100}, Verdict(True)),
        ({"rpm": 0.5, "tpm": 100.0}, {"rpm": 1, "tpm": 10}, Verdict(False, 0.5, "rpm")),  # 60 rpm: 1 s per request
        ({"rpm": 1.0, "tpm": 0.0}, {"rpm": 1, "tpm": 600}, Verdict(False, 60.0, "tpm")),
        ({"rpm": 1.0, "tpm": 600.0}, {"rpm": 1, "tpm": 601}, Verdict(False, 60.0, "tpm", too_large=True)),
    ],
)
def test_decide(levels: dict, costs: dict, expected: Verdict) -> None:
    assert decide(levels, {"rpm": 60, "tpm": 600}, costs) == expected


def test_local_bucket_refills_and_settles() -> None:
    clock = ManualClock()
    store = LocalLimitStore(clock)
    lim = KeyLimits(rpm=2, tpm=100)
    assert store.acquire("k", lim, 50).allowed
    assert store.acquire("k", lim, 50).allowed
    v = store.acquire("k", lim, 1)
    assert not v.allowed and v.limit == "rpm" and v.retry_after_s == pytest.approx(30.0)
    assert retry_after_header(v.retry_after_s) == "30"
    clock.advance(30)
    v = store.acquire("k", lim, 60)  # 30 s gave back 1 request and 50 tokens
    assert not v.allowed and v.limit == "tpm" and v.retry_after_s == pytest.approx(6.0)
    store.adjust_tokens("k", lim, 40)  # a settled request used 10 of its 50
    assert store.acquire("k", lim, 60).allowed


def test_access_control_refuses_with_429_and_settles_on_usage() -> None:
    clock = ManualClock()
    access = AccessControl(None, Limiter(LocalLimitStore(clock)), CollectorRegistry(), assumed_max_tokens=100)
    who = Principal("team", limits=KeyLimits(tpm=300))

    async def go() -> None:
        r1 = await access.admit(who, prompt_tokens=50, max_tokens=None)  # reserves 150
        await access.admit(who, prompt_tokens=50, max_tokens=100)  # 300 reserved
        with pytest.raises(RateLimitError) as exc:
            await access.admit(who, prompt_tokens=10, max_tokens=10)
        resp = error_response(exc.value)
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        await access.finish(who, r1, 200, {"prompt_tokens": 50, "completion_tokens": 10})  # 90 given back
        await access.admit(who, prompt_tokens=10, max_tokens=10)

    asyncio.run(go())


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_script_matches_the_local_rule() -> None:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout == b"PONG\n",
            10,
            "redis",
        )

        async def go() -> None:
            # the script is under test here, not failing fast: the production 0.25 s connect timeout lapsed once on a
            # busy machine
            shared = SharedState(f"redis://127.0.0.1:{port}/0", ManualClock(), CollectorRegistry(), timeout_s=5.0)
            store = RedisLimitStore(shared)
            lim = KeyLimits(rpm=3, tpm=100)
            got = [await store.acquire("k", lim, 30) for _ in range(4)]
            assert [v.allowed for v in got] == [True, True, True, False]
            assert got[3].limit == "rpm" and 19 < got[3].retry_after_s <= 20
            big = await store.acquire("other", lim, 101)
            assert big.too_large and big.limit == "tpm"
            await store.adjust_tokens("k", lim, -50)  # used more than reserved
            assert await shared.client.exists(shared.key("limit", "tpm", "k")) == 1
            await shared.close()

        asyncio.run(go())
    finally:
        proc.kill()
        proc.wait()


def _stream(url: str, key: str, body: dict[str, Any]) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    req = urllib.request.Request(f"{url}/v1/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_streamed_request_settles_with_its_real_usage(fleet: Callable[..., Any], tmp_path: Path) -> None:
    keys = KeysFile(tmp_path / "keys.json")
    key, _ = keys.add("team", None, 300, 0)
    gw, _ = fleet(
        1, gateway={"auth": {"keys_file": str(keys.path)}, "health": {"probe_completion": False}}, time_scale=20.0
    )
    # Reserves ~250 of the 300 tokens per minute; the stop string ends the answer after a few tokens.
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 250, "stop": [" "], "stream": True}
    status, data = _stream(gw.url, key, body)
    assert status == 200 and data.rstrip().endswith(b"data: [DONE]")
    usage = [json.loads(ln[6:]) for ln in data.decode().splitlines() if ln.startswith("data: {")]
    assert usage and usage[-1]["choices"][0]["finish_reason"] == "stop"
    # Settled with the few tokens used, the budget has room for a second such reservation (not with max_tokens).
    status, data = _stream(gw.url, key, body)
    assert status == 200, data
    # One that generates its whole max_tokens is charged all of it: the next reservation no longer fits.
    status, data = _stream(gw.url, key, {**body, "stop": []})
    assert status == 200, data
    status, data = _stream(gw.url, key, body)
    assert status == 429 and json.loads(data)["error"]["code"] == "rate_limit_exceeded"
    reg = gw.gateway.metrics.registry
    completion = reg.get_sample_value("llmfleet_gateway_key_tokens_total", {"key": "team", "direction": "completion"})
    assert completion is not None and 250 < completion < 290
