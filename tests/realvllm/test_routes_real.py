"""Every pass-through route through the gateway against one real vLLM (CPU build, demo model).

The demo model is generative: vLLM serves tokenize/detokenize (and the Responses API in recent versions) for it,
but not embeddings, score or rerank (those need a pooling model). For each route the gateway must answer exactly
what vLLM answers directly (status, and the body for the deterministic routes); routes vLLM does not serve for
this model are reported as skipped with vLLM's own answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup
from tests.gateway.conftest import GatewayThread, start_gateway

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(600)]  # an engine start-up on 2 busy cores takes minutes


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VLLMReplica, GatewayThread]]:
    runtime, model_dir = demo_setup()
    rep = VLLMReplica(runtime, model_dir, Path(tmp_path_factory.mktemp("routes")) / "vllm.log")
    rep.start()
    gw = start_gateway([rep.url], health={"probe_interval_s": 1.0, "probe_completion": False})
    try:
        yield rep, gw
    finally:
        gw.stop()
        rep.stop()


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def _bodies(model: str) -> dict[str, dict[str, Any]]:
    return {
        "/tokenize": {"model": model, "prompt": "Hello, fleet"},
        "/v1/embeddings": {"model": model, "input": "Hello, fleet"},
        "/v1/score": {"model": model, "text_1": "red", "text_2": ["red", "blue"]},
        "/v1/rerank": {"model": model, "query": "red", "documents": ["red", "blue"]},
        "/v1/responses": {"model": model, "input": "Hello", "max_output_tokens": 4, "temperature": 0},
    }


@pytest.mark.parametrize("path", list(_bodies("m")))
def test_gateway_answers_what_vllm_answers(setup: tuple[VLLMReplica, GatewayThread], path: str) -> None:
    rep, gw = setup
    body = _bodies(rep.model)[path]
    direct_status, direct = _post(rep.url + path, body)
    status, through = _post(gw.url + path, body)
    if direct_status == 200:
        assert status == 200, through
        if path == "/tokenize":
            assert through["tokens"] == direct["tokens"]
            s, detok = _post(gw.url + "/detokenize", {"model": rep.model, "tokens": direct["tokens"]})
            assert s == 200 and "fleet" in detok["prompt"]
        return
    assert status == direct_status, (through, direct)
    pytest.skip(f"vLLM does not serve {path} for the demo model: HTTP {direct_status} {str(direct)[:160]}")
