"""The L7 tier: rendered nginx/HAProxy configs pass the real tools' checks, and a streamed completion goes
client -> nginx -> `llmfleet gateway` (two processes) -> `llmfleet engine sim`, token by token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmfleet.appthread import free_port
from llmfleet.config import parse_fleet_config
from llmfleet.errors import ConfigError
from llmfleet.render.l7 import render_haproxy, render_nginx

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")


def l7_config(gateways: list[str], port: int = 8088, **l7: object) -> dict[str, object]:
    return {"deploy": {"l7": {"gateways": gateways, "listen_host": "127.0.0.1", "listen_port": port, **l7}}}


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    prefix.mkdir(exist_ok=True)
    cmd = ["nginx", "-t", "-p", str(prefix), "-c", str(conf), "-g", f"pid {prefix}/nginx.pid;"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_nginx_config_has_the_l7_essentials() -> None:
    cfg = parse_fleet_config(l7_config(["10.0.0.1:8080", "10.0.0.2:8080"], max_fails=2, stream_timeout_s=900))
    text = render_nginx(cfg)
    assert "least_conn;" in text
    assert "server 10.0.0.1:8080 max_fails=2 fail_timeout=10s;" in text
    assert "proxy_buffering off;" in text and "proxy_request_buffering off;" in text
    assert "proxy_read_timeout 900s;" in text
    assert f"client_max_body_size {cfg.gateway.max_body_bytes};" in text
    assert "proxy_next_upstream_tries 2;" in text


def test_missing_gateways_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"deploy\.l7\.gateways"):
        render_nginx(parse_fleet_config({}))
    with pytest.raises(ConfigError, match=r"deploy\.l7\.gateways\.?.*not host:port|gateways\[0\]"):
        parse_fleet_config(l7_config(["no-port"]))


@needs_nginx
def test_nginx_t_accepts_the_rendered_file(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(parse_fleet_config(l7_config(["127.0.0.1:18081", "127.0.0.1:18082"]))))
    out = nginx_test(conf, tmp_path / "prefix")
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr


@needs_nginx
def test_nginx_t_catches_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: a corrupted directive is refused."""
    conf = tmp_path / "nginx.conf"
    text = render_nginx(parse_fleet_config(l7_config(["127.0.0.1:18081"])))
    conf.write_text(text.replace("least_conn;", "least_conn"))
    assert nginx_test(conf, tmp_path / "prefix").returncode != 0


@needs_haproxy
def test_haproxy_c_accepts_the_rendered_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "haproxy.cfg"
    text = render_haproxy(parse_fleet_config(l7_config(["127.0.0.1:18081", "127.0.0.1:18082"])))
    assert "balance leastconn" in text and "observe layer7" in text
    cfg_file.write_text(text)
    out = subprocess.run(["haproxy", "-c", "-f", str(cfg_file)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    cfg_file.write_text(text.replace("balance leastconn", "balance fewest"))
    bad = subprocess.run(["haproxy", "-c", "-f", str(cfg_file)], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_render_cli_writes_both_files_into_one_folder(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(l7_config(["127.0.0.1:18081", "127.0.0.1:18082"])))
    out = tmp_path / "out"
    for target in ("nginx", "haproxy"):
        cmd = [sys.executable, "-m", "llmfleet", "render", target, "--config", str(fleet), "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert sorted(p.name for p in out.iterdir()) == ["haproxy.cfg", "nginx.conf"]


def test_render_cli_error_names_the_key(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deploy: {}\n")
    cmd = [sys.executable, "-m", "llmfleet", "render", "nginx", "--config", str(fleet), "--out", str(tmp_path / "o")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "deploy.l7.gateways" in out.stderr and "Traceback" not in out.stderr


# --- end to end: client -> nginx -> 2 gateways -> sim engine ------------------------------------------------------


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def _wait(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not _get_ok(url):
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {url}")
        time.sleep(0.1)


class Processes:
    """Processes this test started; all are stopped (by PID) at the end, also on failure."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def _stream(url: str, max_tokens: int) -> tuple[list[float], list[str], float]:
    """POST a streamed completion; returns the arrival time of each SSE data line, the lines, and the end time."""
    body = {"model": "llama-3.1-8b", "prompt": "hello " * 20, "max_tokens": max_tokens, "stream": True}
    req = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    t0 = time.monotonic()
    times, lines = [], []
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data:"):
                times.append(time.monotonic() - t0)
                lines.append(line)
    return times, lines, time.monotonic() - t0


@needs_nginx
@pytest.mark.slow  # ~25 s: nginx, two gateways and an engine
def test_streamed_request_through_nginx_gateways_and_sim_engine(tmp_path: Path, processes: Processes) -> None:
    llmfleet = [sys.executable, "-m", "llmfleet"]
    sim_port = free_port()
    # time_scale < 1 slows the simulated GPU so the stream lasts long enough to see tokens arrive one by one.
    sim = processes.start([*llmfleet, "engine", "sim", "--port", str(sim_port), "--time-scale", "0.2"])
    gw_ports = [free_port(), free_port()]
    replica = f"http://127.0.0.1:{sim_port}"
    gws = [processes.start([*llmfleet, "gateway", "--port", str(p), "--replica", replica]) for p in gw_ports]
    ngx_port = free_port()
    cfg = parse_fleet_config(l7_config([f"127.0.0.1:{p}" for p in gw_ports], port=ngx_port))
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(cfg))
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    ngx = processes.start(["nginx", "-p", str(prefix), "-c", str(conf), "-g", f"daemon off; pid {prefix}/nginx.pid;"])
    _wait(f"http://127.0.0.1:{sim_port}/health", sim)
    for p, gw in zip(gw_ports, gws, strict=True):
        _wait(f"http://127.0.0.1:{p}/ready", gw)
    _wait(f"http://127.0.0.1:{ngx_port}/l7-health", ngx)
    base = f"http://127.0.0.1:{ngx_port}"

    times, lines, total_s = _stream(base, max_tokens=48)
    assert lines[-1] == "data: [DONE]"
    text = "".join(json.loads(x[5:])["choices"][0]["text"] for x in lines[:-1])
    assert text
    # Unbuffered: the first token arrives long before the stream ends, and tokens keep arriving throughout.
    assert total_s > 0.5, f"stream too short to judge buffering ({total_s:.2f} s)"
    assert times[0] < 0.5 * total_s, f"first chunk at {times[0]:.2f} s of {total_s:.2f} s: buffered?"
    spread = [t for t in times if t < 0.75 * total_s]
    assert len(spread) >= len(times) // 3, f"chunk times {times}"

    # Passive health: one gateway dies; every following request still succeeds through the other one.
    gws[0].kill()
    gws[0].wait()
    for _ in range(6):
        _, lines, _ = _stream(base, max_tokens=4)
        assert lines[-1] == "data: [DONE]"
