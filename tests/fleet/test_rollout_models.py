"""Which model a rollout replaces, through the control API over real HTTP with the real
:class:`~llmfleet.fleet.actions.FleetActions` (supervisors and the gateway stubbed at their interfaces, no process
started): a multi-model fleet must name the model, the patch is checked against that model's own engine settings,
and only that model's supervisor, settings and autoscaler are touched."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.signals import FleetSample
from llmfleet.clock import WallClock
from llmfleet.config import AutoscalerConfig, model_settings, parse_fleet_config
from llmfleet.engines.launch import EngineLauncher
from llmfleet.fleet.actions import FleetActions, SupervisorFactory
from llmfleet.fleet.control import create_control_app
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.model_fleet import ModelFleet
from llmfleet.fleet.options import UpOptions
from llmfleet.fleet.supervisor import Supervisor
from tests.fleet.fakes import TOKEN, CountingProvider, serve

TWO_MODELS = {
    "fleet": {"rollout_verify_s": 0},
    "engine": {"gpu": "L40S", "time_scale": 10},
    "models": [
        {"name": "chat", "engine": {"model": "llama-3.1-8b"}, "pool": "cheap"},
        {"name": "big", "engine": {"model": "llama-3.1-70b", "gpu": "H200", "tensor_parallel_size": 2}},
    ],
}


class _Idle:
    async def sample(self, now: float) -> FleetSample:
        return FleetSample(t=now, ready_replicas=1, waiting=0.0, running=0.0)


class _Listener:
    async def replica_ready(self, replica: Any) -> None: ...

    async def replica_gone(self, replica: Any) -> None: ...


class _Registrar:
    gpu: str | None = "L40S"
    gpus = 1


class _Gateway:
    """The gateway's admin API as a rollout of an empty generation sees it: nothing registered."""

    async def replicas(self) -> list[dict[str, Any]]:
        return []


class _Setup:
    """A fleet of ``doc`` whose models each have a (not started, empty) supervisor and a real, idle controller."""

    def __init__(self, doc: dict[str, Any], tmp: Path) -> None:
        cfg = parse_fleet_config(doc)
        self.opts = UpOptions(config=cfg, models=model_settings(cfg)) if cfg.models else UpOptions(config=cfg)
        self.made: list[tuple[EngineLauncher, str, dict[str, str | None]]] = []
        clock = WallClock()
        multi = self.opts.multi_model
        self.models = [
            ModelFleet(
                m,
                Supervisor(
                    SimLauncher(m.engine, tmp / m.name),
                    _Listener(),
                    clock,
                    random.Random(0),
                    tmp / "logs" / (f"{m.name}/gen-0" if multi else "gen-0"),
                    name_prefix=f"{m.name}-gen-0-r" if multi else "gen-0-r",
                    model=m.name if multi else "",
                    pool=m.pool,
                ),
                _Registrar(),  # type: ignore[arg-type]
                controller=Controller(_Idle(), CountingProvider(), AutoscalerConfig(), clock),
            )
            for m in self.opts.models
        ]

        def factory(m: ModelFleet) -> SupervisorFactory:
            """Like up's: the model's own listener, log folder and replica names, from the generation's tag."""

            async def make(launcher: EngineLauncher, tag: str) -> Supervisor:
                paused = {u.name: u.controller.paused if u.controller else None for u in self.models}
                self.made.append((launcher, tag, paused))
                log, prefix = (
                    (tmp / "logs" / m.name / tag, f"{m.name}-{tag}-r") if multi else (tmp / "logs" / tag, f"{tag}-r")
                )
                sup = m.sup  # the first generation's, made as up makes it
                return Supervisor(
                    launcher,
                    sup.listener,
                    clock,
                    random.Random(0),
                    log,
                    name_prefix=prefix,
                    model=sup.model,
                    pool=sup.pool,
                )

            return make

        self.actions = FleetActions(
            self.opts,
            self.models,
            {m.name: factory(m) for m in self.models},
            _Gateway(),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            tmp,
            clock,
        )


async def _post(s: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with s.post(f"{url}/rollout", json=body) as r:
        return r.status, await r.json()


async def _done(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    for _ in range(200):
        async with s.get(f"{url}/rollout") as r:
            st: dict[str, Any] = await r.json()
        if st["state"] in ("done", "rolled_back"):
            return st
        await asyncio.sleep(0.01)
    raise AssertionError(f"rollout did not end: {st}")


@pytest.fixture
async def client() -> Any:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        yield s


async def test_a_multi_model_rollout_names_its_model_and_is_checked_against_it(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    fleet = _Setup(TWO_MODELS, tmp_path)
    listeners = [m.sup.listener for m in fleet.models]
    async with serve(create_control_app(fleet.actions, TOKEN)) as url:
        for body, param, needle in [
            ({"engine": {"gpu": "H100"}}, "model", "model: this fleet serves several models, name the one to roll"),
            ({"model": "chatt", "engine": {"gpu": "H100"}}, "model", "model: no model 'chatt' in this fleet"),
            ({"model": 3, "engine": {"gpu": "H100"}}, "model", 'as {"model": "<name>"}'),
            ({"model": "chat"}, "engine", 'give the new engine settings as {"engine": {...}}'),
            # fits chat (an 8B model on L40S) but not big's own settings (a 70B model at tensor parallel 2)
            (
                {"model": "big", "engine": {"gpu": "L40S"}},
                "engine",
                "engine: llama-3.1-70b (bf16) does not fit on 2 x L40S",
            ),
            ({"model": "big", "engine": {"max_num_seqs": 0}}, "engine.max_num_seqs", "greater than or equal to 1"),
            ({"model": "chat", "engine": {"time_scale": 1}}, "engine.time_scale", "every model runs on the fleet"),
            ({"model": "chat", "engine": {"served_model_name": "x"}}, "engine.served_model_name", "('chat') is served"),
        ]:
            status, doc = await _post(client, url, body)
            assert status == 400, (body, doc)
            assert needle in doc["error"]["message"] and doc["error"]["param"] == param, (body, doc)
        status, doc = await _post(client, url, {"engine": {"gpu": "H100"}})
        assert "('chat', 'big')" in doc["error"]["message"], doc  # the models there are
        assert fleet.made == []  # nothing was started by a refused rollout

        status, doc = await _post(client, url, {"model": "big", "engine": {"gpu": "B200"}})
        assert status == 202 and doc["model"] == "big", doc
        st = await _done(client, url)
        assert st["state"] == "done" and st["model"] == "big", st

    [(launcher, tag, paused)] = fleet.made
    assert tag == "gen-1" and paused == {"chat": None, "big": "rollout in progress"}
    assert isinstance(launcher, SimLauncher)
    new = launcher.config  # big's own settings with the patch: its model, tensor parallel size and name kept
    assert (new.gpu, new.model, new.tensor_parallel_size, new.served_model_name) == ("B200", "llama-3.1-70b", 2, "big")
    chat, big = fleet.models
    assert big.sup.model == "big" and big.sup.pool == big.settings.pool
    assert big.sup.name_prefix == "big-gen-1-r" and big.sup.log_dir == tmp_path / "logs" / "big" / "gen-1"
    assert big.sup.listener is listeners[1] and chat.sup.listener is listeners[0]  # big's gateway registration
    assert big.settings.engine == new and fleet.opts.models[1].engine == new
    assert chat.sup.name_prefix == "chat-gen-0-r" and chat.settings.engine.gpu == "L40S"
    assert fleet.opts.config.engine.gpu == "L40S"  # the fleet-wide section is not big's
    assert big.controller is not None and big.controller.paused is None  # resumed
    assert big.registrar.gpu == "B200" and chat.registrar.gpu == "L40S"


async def test_a_single_model_fleet_rolls_without_naming_its_model(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    fleet = _Setup({"engine": {"gpu": "L40S", "model": "llama-3.1-8b"}, "fleet": {"rollout_verify_s": 0}}, tmp_path)
    async with serve(create_control_app(fleet.actions, TOKEN)) as url:
        status, doc = await _post(client, url, {"model": "other", "engine": {"gpu": "H100"}})
        assert status == 400 and doc["error"]["param"] == "model" and "'llama-3.1-8b'" in doc["error"]["message"]
        for n, body in enumerate(
            [{"engine": {"gpu": "H100"}}, {"model": "llama-3.1-8b", "engine": {"max_num_seqs": 32}}], start=1
        ):
            status, doc = await _post(client, url, body)
            assert status == 202, doc
            assert (await _done(client, url))["state"] == "done"
            assert fleet.made[-1][1] == f"gen-{n}" and fleet.models[0].sup.name_prefix == f"gen-{n}-r"
    engine = fleet.opts.config.engine  # both patches applied, in order
    assert (engine.gpu, engine.max_num_seqs, fleet.opts.models[0].engine) == ("H100", 32, engine)
