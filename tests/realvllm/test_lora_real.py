"""A LoRA adapter on real vLLM (CPU build) behind the gateway.

The adapter is made here: random ``lora_A``/``lora_B`` (B non-zero, so the output changes) for ``q_proj`` and
``v_proj`` of the demo model, written as PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` by the vLLM
venv's own torch and safetensors. Replica A starts with it (``--enable-lora --lora-modules sql=DIR``), replica B
with runtime adapter loading only. Through the gateway: ``/v1/models`` lists ``sql`` with its base; requests for
``sql`` reach A only (vLLM's own request counters say so) and answer other text than the base model at
temperature 0; base-model requests reach both; once ``/admin/lora/load`` loads ``sql`` on B, ``sql`` spreads over
both under concurrent load; while A runs a long ``sql`` request, the next ones go to A (resident there).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llmfleet import vllm_metrics
from llmfleet.config import VLLMEngineConfig
from llmfleet.engines.vllm import render_command
from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup
from llmfleet.promtext import parse
from tests.gateway.conftest import TOKEN, GatewayThread, start_gateway, wait_until
from tests.realvllm.test_routes_real import _post

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(300)]

RANK = 8
MAKE_ADAPTER = r"""
import json, sys, torch
from pathlib import Path
from safetensors.torch import save_file
model_dir, out, rank = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
cfg = json.loads((model_dir / "config.json").read_text())
hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
head_dim = cfg.get("head_dim") or hidden // heads
outs = {"q_proj": heads * head_dim, "v_proj": cfg.get("num_key_value_heads", heads) * head_dim}
g = torch.Generator().manual_seed(1)
tensors = {}
for layer in range(cfg["num_hidden_layers"]):
    for mod, n_out in outs.items():
        pre = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
        tensors[pre + ".lora_A.weight"] = (torch.randn(rank, hidden, generator=g) * 0.5).to(torch.bfloat16)
        tensors[pre + ".lora_B.weight"] = (torch.randn(n_out, rank, generator=g) * 0.5).to(torch.bfloat16)
out.mkdir(parents=True, exist_ok=True)
save_file(tensors, str(out / "adapter_model.safetensors"))
(out / "adapter_config.json").write_text(json.dumps({
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir), "r": rank,
    "lora_alpha": 2 * rank, "lora_dropout": 0.0, "target_modules": sorted(outs), "bias": "none",
    "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False, "use_dora": False}))
"""


def _replica(runtime: Any, model_dir: Path, log: Path, **lora: Any) -> VLLMReplica:
    rep = VLLMReplica(runtime, model_dir, log)
    cfg = VLLMEngineConfig(model=str(model_dir), max_model_len=4096, max_lora_rank=RANK, **lora)
    rep.argv, rep.env = render_command(cfg, runtime, "127.0.0.1", rep.port)
    return rep


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VLLMReplica, VLLMReplica, GatewayThread, Path]]:
    runtime, model_dir = demo_setup()
    tmp = Path(tmp_path_factory.mktemp("lora"))
    adapter = tmp / "sql"
    subprocess.run([runtime.python, "-c", MAKE_ADAPTER, str(model_dir), str(adapter), str(RANK)], check=True)
    a = _replica(runtime, model_dir, tmp / "a.log", lora_modules={"sql": str(adapter)})
    b = _replica(runtime, model_dir, tmp / "b.log", runtime_lora_updating=True)
    gw: GatewayThread | None = None
    try:
        with ThreadPoolExecutor(2) as pool:  # both engines start at once (each ~1 min on 2 busy cores)
            for f in [pool.submit(a.start), pool.submit(b.start)]:
                f.result()
        gw = start_gateway([a.url, b.url], health={"probe_interval_s": 1.0, "probe_completion": False})
        yield a, b, gw, adapter
    finally:
        if gw is not None:
            gw.stop()
        a.stop()
        b.stop()


def _successes(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return parse(resp.read()).counter(vllm_metrics.REQUEST_SUCCESS) or 0.0


def _complete(gw: GatewayThread, model: str, n: int, concurrency: int) -> set[str]:
    body = {"model": model, "prompt": "SELECT name FROM", "max_tokens": 8, "temperature": 0}

    def one(_: int) -> str:
        status, out = _post(f"{gw.url}/v1/completions", body)
        assert status == 200 and out["model"] == model, out
        return str(out["choices"][0]["text"])

    with ThreadPoolExecutor(concurrency) as pool:
        return set(pool.map(one, range(n)))


def _count(
    a: VLLMReplica, b: VLLMReplica, gw: GatewayThread, model: str, n: int, concurrency: int = 1
) -> tuple[set[str], float, float]:
    """Send ``n`` requests for ``model`` through the gateway: their texts and how many each engine served."""
    before = _successes(a.url), _successes(b.url)
    texts = _complete(gw, model, n, concurrency)
    return texts, _successes(a.url) - before[0], _successes(b.url) - before[1]


def test_adapter_routing_on_real_vllm(fleet: tuple[VLLMReplica, VLLMReplica, GatewayThread, Path]) -> None:
    a, b, gw, adapter = fleet
    base = a.model

    def cards() -> dict[str, dict[str, Any]]:
        with urllib.request.urlopen(f"{gw.url}/v1/models", timeout=10) as resp:
            return {m["id"]: m for m in json.loads(resp.read())["data"]}

    # the prober reads the replicas' model cards (and so the adapter's base) a probe interval after they are up
    wait_until(lambda: cards()["sql"]["parent"] == base, 30, "the gateway to learn the adapter's base")
    got = cards()
    assert got["sql"]["root"] == base and got[base]["parent"] is None, got

    sql_texts, on_a, on_b = _count(a, b, gw, "sql", 6)
    assert (on_a, on_b) == (6, 0)  # only the replica that loaded the adapter
    assert len(sql_texts) == 1  # greedy: the same answer every time
    base_texts, on_a, on_b = _count(a, b, gw, base, 12)
    assert on_a + on_b == 12 and on_a > 0 and on_b > 0, (on_a, on_b)  # the base model on both
    assert sql_texts.isdisjoint(base_texts), (sql_texts, base_texts)  # the adapter changes the output
    print(f"\nbase: {sorted(base_texts)}\nsql:  {sorted(sql_texts)}")

    req = urllib.request.Request(
        f"{gw.url}/admin/lora/load",
        json.dumps({"lora_name": "sql", "lora_path": str(adapter), "replicas": [b.url]}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert json.loads(resp.read())["ok"]
    # Sequential requests stay where the adapter runs (residency breaks ties); concurrent ones spread.
    texts, on_a, on_b = _count(a, b, gw, "sql", 12, concurrency=6)
    assert on_a + on_b == 12 and on_a > 0 and on_b > 0, (on_a, on_b)  # now both hold it
    print(f"after the runtime load: sql on A {on_a:.0f}, on B {on_b:.0f}; texts {sorted(texts)}")
