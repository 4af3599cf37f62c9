"""Two gateway processes sharing one real redis-server: keys, limits in total, the shared cache, Redis loss, revoke."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmfleet.appthread import free_port
from llmfleet.gateway.local_process import LocalGateway
from llmfleet.promtext import Sample, parse
from tests.gateway.conftest import MODEL, SimProcess, wait_until

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (Debian package)")


class RedisServer:
    """redis-server on a free 127.0.0.1 port, no persistence; stopped by PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._pong, 10, f"redis-server on {self.port}")

    def _pong(self) -> bool:
        r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return r.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def post(url: str, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{url}/v1/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def metric(url: str, name: str) -> list[Sample]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        scrape = parse(r.read())
    return [s for s in scrape.samples if s.name == name]


def keys_loaded(g1: Any, g2: Any, n: int) -> None:
    """Wait (bounded) until both gateways hold ``n`` active keys: they re-read the keys file by themselves."""
    for g in (g1, g2):
        wait_until(
            lambda g=g: [s.value for s in metric(g.url, "llmfleet_gateway_keys_loaded")] == [float(n)],
            10,
            f"{g.url} to load {n} key(s)",
        )


def engine_requests(url: str) -> float:
    return sum(s.value for s in metric(url, "vllm:request_success_total"))


def add_key(keys: Path, name: str, *opts: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "llmfleet", "keys", "add", name, "--keys-file", str(keys), *opts],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def shared_fleet(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def make(**gateway: Any) -> tuple[RedisServer, SimProcess, list[LocalGateway], Path]:
        redis = RedisServer()
        started.append(redis)
        sim = SimProcess("--time-scale", "50")
        started.append(sim)
        keys = tmp_path / "keys.json"
        add_key(keys, "bootstrap")
        cfg = {
            "replicas": [{"url": sim.url}],
            "redis_url": redis.url,
            "redis_retry_interval_s": 0.5,
            "auth": {"keys_file": str(keys), "reload_interval_s": 0.2},
            "health": {"probe_completion": False, "probe_interval_s": 0.5},
            **gateway,
        }
        gws = []
        for _ in range(2):
            gws.append(LocalGateway({"gateway": cfg}, tmp_path / f"gateway-{len(gws)}.log"))
            started.append(gws[-1])
        return redis, sim, gws, keys

    try:
        yield make
    finally:
        for p in reversed(started):
            p.stop()


BODY = {"model": MODEL, "prompt": "hello there", "max_tokens": 4}


@pytest.mark.slow  # ~20-35 s: two gateways and redis-server; the Lua limits and shared prefix tests stay fast
def test_keys_limits_cache_and_redis_loss(shared_fleet: Callable[..., Any]) -> None:
    redis, sim, (g1, g2), keys = shared_fleet(cache="redis")
    key = add_key(keys, "team-a", "--rpm", "6")
    assert key not in keys.read_text()  # the file holds only hashes
    keys_loaded(g1, g2, 2)  # both gateways pick the new key up (beside the bootstrap one) without a restart

    status, _, body = post(g1.url, BODY, None)
    assert status == 401, body
    assert json.loads(body)["error"]["code"] == "missing_api_key"
    assert post(g1.url, BODY, "llmf-not-a-key")[0] == 401

    # One key, two gateways, one Redis: 6 requests per minute in total, not per gateway.
    statuses = [post(g.url, BODY, key)[0] for _ in range(5) for g in (g1, g2)]
    assert 5 <= statuses.count(200) <= 7, statuses
    assert statuses.count(429) == len(statuses) - statuses.count(200)
    status, headers, body = post(g2.url, BODY, key)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    err = json.loads(body)["error"]
    assert err["type"] == "RateLimitError" and err["code"] == "rate_limit_exceeded"
    limited = {s.labels["key"]: s.value for s in metric(g1.url, "llmfleet_gateway_key_rate_limited_total")}
    assert set(limited) == {"team-a"}  # labelled by the key's name, never the key

    # A deterministic request repeated through the other gateway is a hit the engine never sees.
    cache_key = add_key(keys, "team-b")
    roomy = add_key(keys, "team-c", "--rpm", "1000", "--tpm", "100000")
    keys_loaded(g1, g2, 4)
    det = {**BODY, "prompt": "the cached one", "temperature": 0}
    before = engine_requests(sim.url)
    s1, h1, b1 = post(g1.url, det, cache_key)
    assert s1 == 200 and h1["x-llmfleet-cache"] == "miss"
    wait_until(lambda: engine_requests(sim.url) == before + 1, 5, "the engine to count the miss")
    s2, h2, b2 = post(g2.url, det, cache_key)
    assert s2 == 200 and h2["x-llmfleet-cache"] == "hit"
    assert json.loads(b2)["choices"] == json.loads(b1)["choices"]
    assert json.loads(b2)["usage"] == json.loads(b1)["usage"]
    time.sleep(0.3)
    assert engine_requests(sim.url) == before + 1

    # Redis killed mid-test: requests still succeed, on local state, and the gateway says so.
    redis.stop()
    for i in range(4):
        s, _, b = post(g1.url, {**BODY, "prompt": f"after redis {i}"}, roomy)
        assert s == 200, b
    s, h, _ = post(g2.url, {**det, "prompt": "local cache now"}, cache_key)
    assert s == 200 and h["x-llmfleet-cache"] == "miss"
    for g in (g1, g2):  # g1 lost it in the limits, g2 in the cache
        assert [x.value for x in metric(g.url, "llmfleet_gateway_shared_state_up")] == [0.0]
        assert "serving with local state" in g.log()

    # A revoked key is refused within seconds, without a restart.
    subprocess.run([sys.executable, "-m", "llmfleet", "keys", "revoke", "team-b", "--keys-file", str(keys)], check=True)
    took = wait_until(lambda: post(g2.url, BODY, cache_key)[0] == 401, 5, "the revoked key to be refused")
    assert took < 3
