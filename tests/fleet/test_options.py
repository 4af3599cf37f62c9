"""`llmfleet up`'s options: fleet.yaml plus command-line options as one validated document, checked before start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from llmfleet.config import parse_fleet_config
from llmfleet.errors import ConfigError
from llmfleet.fleet.options import UpOptions, build_options, preflight


def _opts(tmp: Path, text: str, **overrides: dict[str, object]) -> UpOptions:
    f = tmp / "fleet.yaml"
    f.write_text(text)
    return build_options(f, dict(overrides))


def test_cli_options_override_the_file_and_autoscaler_bounds_follow_the_fleet(tmp_path: Path) -> None:
    opts = _opts(tmp_path, "fleet: {replicas: 2, max_replicas: 5}\nengine: {gpu: L40S}\n", fleet={"replicas": 3})
    assert (opts.replicas, opts.sim.gpu) == (3, "L40S")
    assert (opts.autoscaler.min_replicas, opts.autoscaler.max_replicas) == (3, 5)
    pinned = _opts(tmp_path, "fleet: {replicas: 2}\nautoscaler: {min_replicas: 1, max_replicas: 4}\n")
    assert (pinned.autoscaler.min_replicas, pinned.autoscaler.max_replicas) == (1, 4)
    with pytest.raises(ConfigError, match=r"fleet.yaml: autoscaler: Value error, max_replicas \(2\)"):
        _opts(tmp_path, "fleet: {replicas: 2}\nautoscaler: {min_replicas: 3, max_replicas: 2}\n")


def test_the_gateway_gets_exactly_what_up_validated(tmp_path: Path) -> None:
    opts = _opts(tmp_path, "fleet: {port: 9100}\nrouting: {policy: round_robin}\n", routing={"policy": "power_of_two"})
    doc = opts.gateway_document()
    again = parse_fleet_config(yaml.safe_load(yaml.safe_dump(doc)))
    assert (again.gateway.port, again.routing.policy) == (9100, "power_of_two")
    assert again == opts.config.model_copy(update={"gateway": again.gateway})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("engine: {gpu: H1000}\n", "engine.gpu: unknown GPU 'H1000'"),
        ("engine: {model: llama-9}\n", "engine.model: unknown model 'llama-9'"),
        ("engine: {gpu: L40S, model: qwen3-32b}\n", "engine: qwen3-32b (bf16) does not fit on 1 x L40S"),
        ("fleet: {engine: vllm}\n", "vllm.model: give a model directory"),
        ("fleet: {engine: vllm, replicas: 2}\nvllm: {model: m, gpus: [0]}\n", "vllm.gpus: 2 replicas"),
        ("routing: {policy: tiered, tiered: {inner_policy: round_robin}}\n", None),
    ],
)
def test_preflight_names_the_key(tmp_path: Path, text: str, message: str | None) -> None:
    opts = _opts(tmp_path, text)
    opts.config.fleet.port = _free_port()  # the default 8080 may be taken on this machine
    if message is None:
        preflight(opts)
        return
    with pytest.raises(ConfigError) as err:
        preflight(opts)
    assert str(err.value).startswith(message), str(err.value)


def test_preflight_refuses_a_busy_gateway_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        opts = _opts(tmp_path, f"fleet: {{port: {busy.getsockname()[1]}}}\n")
        with pytest.raises(ConfigError, match=r"^fleet.port: cannot listen on 127.0.0.1:\d+"):
            preflight(opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
