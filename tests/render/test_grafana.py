"""``llmfleet render grafana``: valid dashboard JSON, and every panel query accepted by a real Prometheus scraping a
live gateway and simulated engines (and returning data, for the metrics that exist today)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llmfleet.render.alerts import COST_USD_PER_HOUR, COST_USD_PER_MILLION_OUTPUT_TOKENS, GPU_HOURS, AlertSettings
from llmfleet.render.grafana import DASHBOARD_FILE, grafana_files, overview_dashboard, panel_queries

from .live_prometheus import MODEL, PROMETHEUS, LiveFleet, live_fleet

# Series that need a process this test does not run (the control API publishes the autoscaler's).
NOT_SCRAPED_HERE = ("llmfleet_autoscaler_",)


def _not_scraped(query: str) -> bool:
    return any(name in query for name in NOT_SCRAPED_HERE)


def test_dashboard_json_is_well_formed() -> None:
    files = grafana_files()
    dash = json.loads(files[DASHBOARD_FILE])
    assert dash["uid"] == "llmfleet-overview" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in dash["panels"]]
    for wanted in ("Requests per minute", "Tokens per second", "TTFT heatmap (gateway)", "Errors by kind",
                   "Replicas by state", "KV cache usage", "GPU memory used", "Decisions by direction and reason",
                   "USD per hour by pool and capacity type", "USD per 1M output tokens"):  # fmt: skip
        assert wanted in titles
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    heatmaps = [p for p in dash["panels"] if p["type"] == "heatmap"]
    assert heatmaps and all(t["format"] == "heatmap" for p in heatmaps for t in p["targets"])
    assert {v["name"] for v in dash["templating"]["list"]} == {"DS_PROMETHEUS", "model_name"}


def test_cli_writes_the_dashboard(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "llmfleet", "render", "grafana", "--out", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / DASHBOARD_FILE).read_text())["title"] == "llmfleet: fleet overview"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    if PROMETHEUS is None:
        pytest.skip("needs the prometheus server (Debian package prometheus)")
    with live_fleet(tmp_path_factory.mktemp("grafana"), AlertSettings(daily_budget_usd=1000.0)) as fleet:
        yield fleet


async def _traffic(gateway_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
    chats = []
    for i in range(8):
        messages = [{"role": "user", "content": f"hello number {i}"}]
        chats.append(
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, stream=True)  # type: ignore[call-overload]
        )
    for stream in await asyncio.gather(*chats):
        async for _ in stream:
            pass
    await client.completions.create(model=MODEL, prompt="hi", max_tokens=4)
    await client.close()


@pytest.mark.slow  # real Prometheus tier
def test_every_panel_query_runs_against_prometheus(live: LiveFleet) -> None:
    with pytest.raises(AssertionError, match="parse error"):
        live.query("sum(rate(vllm:prompt_tokens_total[30s])")  # the check itself can fail
    asyncio.run(_traffic(live.gateway_url))
    queries = panel_queries(overview_dashboard(rate_interval="30s"))
    queries = [(title, q.replace("$model_name", ".*")) for title, q in queries]

    def missing() -> list[str]:
        return [q for _, q in queries if not _not_scraped(q) and not live.query(q)]

    try:
        live.wait(lambda: not missing(), 20, "every gateway/engine panel to have data")
    except AssertionError as exc:
        raise AssertionError(f"no data: {missing()}") from exc
    empty = []
    for title, q in queries:
        result = live.query(q)  # raises with Prometheus' message on a bad expression
        if not result:
            empty.append((title, q))
    assert all(_not_scraped(q) for _, q in empty), empty
    assert len(empty) < len(queries) / 4
    cost = [
        q for _, q in queries if any(m in q for m in (COST_USD_PER_HOUR, COST_USD_PER_MILLION_OUTPUT_TOKENS, GPU_HOURS))
    ]
    assert len(cost) == 3 and all(live.query(q) for q in cost)  # the cost panels read the gateway's cost metrics
