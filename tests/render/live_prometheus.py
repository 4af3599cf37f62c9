"""A real Prometheus (Debian's ``prometheus`` binary) scraping a small live fleet on 127.0.0.1: simulated engines
and a gateway in background threads, found through the rendered config's file_sd target file. Everything started
here is stopped on exit, also on failure."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import FleetConfig, GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.app import create_app
from llmfleet.render.alerts import JOB_ENGINE, JOB_GATEWAY, AlertSettings
from llmfleet.render.prometheus import ScrapeSettings, ScrapeTarget, file_sd_path, prometheus_files, write_file_sd

PROMETHEUS = shutil.which("prometheus")
MODEL = "llama-3.1-8b"
GPU = "H100"
ADMIN_TOKEN = "t"


def _admin_post(gateway_url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"{gateway_url}/admin/replicas",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201


@dataclass
class LiveFleet:
    prometheus_url: str
    gateway_url: str
    sims: list[SimServerThread]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            return json.loads(exc.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises with Prometheus' error message when the expression is rejected."""
        body = self.api("query", query=expr)
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait(self, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
        """Poll ``predicate`` until it is truthy; on time-out, fail showing its last value and Prometheus' log."""
        deadline = time.monotonic() + timeout_s
        while not (last := predicate()):
            if time.monotonic() > deadline:
                log = self.log.read_text()[-3000:]
                raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r}); log:\n{log}")
            time.sleep(0.2)

    def firing(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]


@contextlib.contextmanager
def live_fleet(tmp: Path, alerts: AlertSettings, n_sims: int = 2) -> Iterator[LiveFleet]:
    """Engines + gateway + Prometheus (1 s scrapes and rule evaluations), ready once every target is up."""
    assert PROMETHEUS is not None
    started: list[AppThread] = []
    proc: subprocess.Popen[bytes] | None = None
    log = tmp / "prometheus.log"
    try:
        sims = [SimServerThread(SimEngineConfig(time_scale=1.0, seed=i)).start() for i in range(n_sims)]
        started += sims
        gw_cfg = GatewayConfig.model_validate(
            {
                "admin_token": ADMIN_TOKEN,
                "health": {"probe_interval_s": 0.5, "scrape_interval_s": 0.5, "probe_completion": False},
            }
        )
        gateway = AppThread(lambda: create_app(gw_cfg, RoutingConfig())).start()
        started.append(gateway)
        for i, sim in enumerate(sims):  # as `up` registers them: named and priced (the cost metrics need the GPU)
            _admin_post(gateway.url, {"url": sim.url, "name": f"r{i}", "gpu": GPU, "gpus": 1})

        prom_dir = tmp / "prometheus"
        scrape = ScrapeSettings(discovery="file", scrape_interval="1s", evaluation_interval="1s")
        for name, text in prometheus_files(FleetConfig(), scrape, alerts).items():
            (prom_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (prom_dir / name).write_text(text)
        targets = [ScrapeTarget(JOB_GATEWAY, gateway.url)]
        targets += [ScrapeTarget(JOB_ENGINE, s.url, {"replica": f"r{i}"}) for i, s in enumerate(sims)]
        write_file_sd(file_sd_path(prom_dir), targets)

        port = free_port()
        with log.open("wb") as logf:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={prom_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        live = LiveFleet(f"http://127.0.0.1:{port}", gateway.url, sims, log)

        def all_up() -> bool:
            with contextlib.suppress(OSError, KeyError, AssertionError, ValueError):  # 503 text while starting
                ups = live.query("up")
                return len(ups) == len(targets) and all(r["value"][1] == "1" for r in ups)
            return False

        live.wait(all_up, 30, "Prometheus to scrape every target")
        yield live
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for t in reversed(started):
            t.stop()
