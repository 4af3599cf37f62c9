"""The pieces of multi-model fleets on their own: resolving ``models:``, per-model signals, the decision board, the
model-labelled controller metrics and the status grouping."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from llmfleet.autoscaling.pipeline import Decision
from llmfleet.autoscaling.scrape import gateway_totals
from llmfleet.config import model_settings, parse_fleet_config
from llmfleet.errors import ConfigError
from llmfleet.fleet.autoscale import DecisionBoard, ModelLabelled
from llmfleet.fleet.options import UpOptions, build_options, preflight
from llmfleet.fleet.status import group_by_model
from llmfleet.promtext import parse


def test_entries_inherit_the_fleet_sections_and_override_them() -> None:
    cfg = parse_fleet_config(
        {
            "fleet": {"replicas": 2},
            "engine": {"gpu": "L40S", "max_num_seqs": 8},
            "autoscaler": {"target_queue_per_replica": 12, "max_replicas": 5},
            "models": [
                {"name": "chat", "engine": {"model": "qwen3-8b"}, "autoscaler": {"interval_s": 2}},
                {"name": "small", "replicas": 1, "min_replicas": 1, "max_replicas": 2, "pool": "cheap"},
            ],
        }
    )
    chat, small = model_settings(cfg)
    assert (chat.engine.gpu, chat.engine.model, chat.engine.max_num_seqs) == ("L40S", "qwen3-8b", 8)
    assert chat.engine.served_model_name == "chat" and chat.vllm.served_model_name == "chat"
    assert (chat.replicas, chat.autoscaler.min_replicas, chat.autoscaler.max_replicas) == (2, 2, 5)
    assert chat.autoscaler.interval_s == 2 and chat.autoscaler.target_queue_per_replica == 12
    assert (small.replicas, small.autoscaler.min_replicas, small.autoscaler.max_replicas) == (1, 1, 2)
    assert small.pool == "cheap" and small.engine.model == "llama-3.1-8b"


def test_single_model_form_is_the_one_entry_case() -> None:
    opts = build_options(None, {"fleet": {"replicas": 3}})
    assert not opts.multi_model
    (only,) = opts.models
    assert (only.name, only.replicas, only.autoscaler.min_replicas, only.autoscaler.max_replicas) == (
        "llama-3.1-8b",
        3,
        3,
        3,
    )


@pytest.mark.parametrize(
    ("models", "needle"),
    [
        ([{"name": "a"}, {"name": "a"}], "models[1].name: 'a' is already the name of models[0]"),
        ([{"name": "a"}, {"replicas": 1}], "models[1].name: Field required"),
        ([{"name": "a", "bogus": 1}], "models[0].bogus: Extra inputs are not permitted"),
        ([{"name": "a", "engine": {"max_num_seqs": 0}}], "models[0].engine.max_num_seqs:"),
        ([{"name": "a", "engine": {"served_model_name": "b"}}], "models[0].engine.served_model_name:"),
        ([{"name": "a", "engine": {"time_scale": 5}}], "models[0].engine.time_scale:"),
        ([{"name": "a", "min_replicas": 3, "max_replicas": 2}], "models[0].autoscaler: Value error, max_replicas"),
        ([{"name": "a", "replicas": 1, "spot_replicas": 2}], "models[0].spot_replicas:"),
    ],
)
def test_bad_entries_name_the_key(models: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_fleet_config({"models": models}, "fleet.yaml")
    assert f"fleet.yaml: {needle}" in str(err.value)


def test_preflight_names_the_model_entry() -> None:
    opts = UpOptions(config=parse_fleet_config({"models": [{"name": "a"}, {"name": "b", "engine": {"gpu": "Z9"}}]}))
    with pytest.raises(ConfigError, match=r"^models\[1\]\.engine\.gpu: "):
        preflight(opts)
    big = {"name": "big", "engine": {"model": "llama-3.1-70b", "gpu": "L40S"}}
    opts = UpOptions(config=parse_fleet_config({"models": [{"name": "a"}, big]}))
    with pytest.raises(ConfigError, match=r"^models\[1\]\.engine: .*does not fit"):
        preflight(opts)


PAGE = """
llmfleet_gateway_requests_total{route="completions",status="200",model="chat",replica="r0",pool="default"} 10
llmfleet_gateway_requests_total{route="completions",status="503",model="chat",replica="r0",pool="default"} 2
llmfleet_gateway_requests_total{route="completions",status="200",model="small",replica="r1",pool="default"} 5
llmfleet_gateway_request_duration_seconds_bucket{route="completions",model="chat",le="1.0"} 12
llmfleet_gateway_request_duration_seconds_bucket{route="completions",model="chat",le="+Inf"} 12
llmfleet_gateway_request_duration_seconds_sum{route="completions",model="chat"} 6
llmfleet_gateway_request_duration_seconds_count{route="completions",model="chat"} 12
llmfleet_gateway_request_duration_seconds_bucket{route="completions",model="small",le="1.0"} 0
llmfleet_gateway_request_duration_seconds_bucket{route="completions",model="small",le="+Inf"} 5
llmfleet_gateway_request_duration_seconds_sum{route="completions",model="small"} 10
llmfleet_gateway_request_duration_seconds_count{route="completions",model="small"} 5
"""


def test_gateway_totals_of_one_model() -> None:
    scrape = parse(PAGE)
    everything, chat, small = gateway_totals(scrape), gateway_totals(scrape, "chat"), gateway_totals(scrape, "small")
    assert (everything.requests, everything.errors, everything.latency.count) == (17, 2, 17)
    assert (chat.requests, chat.errors, chat.latency.mean) == (12, 2, 0.5)
    assert (small.requests, small.errors, small.latency.mean) == (5, 0, 2.0)


class _Admin:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish_autoscaler(self, decision: dict[str, Any]) -> None:
        self.published.append(decision)


async def test_the_board_shows_every_models_last_decision() -> None:
    admin = _Admin()
    board = DecisionBoard(admin, multi_model=True)  # type: ignore[arg-type]
    await board.publisher("chat")(Decision(3, 1, "queue 24 > 8 per replica", 10.0))
    await board.publisher("small")(Decision(1, 1, "within tolerance", 11.0))
    last = admin.published[-1]
    assert last["model"] == "small" and last["reason"] == "small: within tolerance"
    assert {m: d["replicas"] for m, d in last["models"].items()} == {"chat": 3, "small": 1}
    single = _Admin()
    await DecisionBoard(single, multi_model=False).publisher("x")(Decision(2, 1, "r", 1.0))  # type: ignore[arg-type]
    assert "models" not in single.published[0] and single.published[0]["reason"] == "r"


def test_controller_metrics_are_served_once_per_family_with_a_model_label() -> None:
    labelled = ModelLabelled()
    for model, value in (("chat", 3), ("small", 1)):
        Gauge("llmfleet_autoscaler_desired_replicas", "Replicas.", registry=labelled.registry_for(model)).set(value)
    served = CollectorRegistry()
    served.register(labelled)
    page = generate_latest(served).decode()
    assert page.count("# TYPE llmfleet_autoscaler_desired_replicas gauge") == 1
    assert 'llmfleet_autoscaler_desired_replicas{model="chat"} 3.0' in page
    assert 'llmfleet_autoscaler_desired_replicas{model="small"} 1.0' in page


def test_status_groups_replicas_by_the_models_they_serve() -> None:
    rows = [
        {"name": "chat-r0", "models": ["chat"]},
        {"name": "small-r0", "models": ["small"]},
        {"name": "chat-r1", "models": ["chat"]},
        {"name": "lora-r0", "models": ["base", "sql"]},
        {"name": "new", "models": []},
    ]
    groups = group_by_model(rows)
    assert {k: [r["name"] for r in v] for k, v in groups.items()} == {
        "chat": ["chat-r0", "chat-r1"],
        "small": ["small-r0"],
        "base, sql": ["lora-r0"],
        "-": ["new"],
    }
