"""Prefix-aware routing on real vLLM: llmfleet's policies, nginx least_conn, vllm-router and sglang-router side by side.

Four real vLLM CPU replicas (the demo model, prefix caching on) are started once and shared by every front door;
before each (workload, front door) cell every replica's prefix cache is emptied (``POST /reset_prefix_cache``, served
because the replicas run with ``VLLM_SERVER_DEV_MODE=1``) and each front door is started fresh, so every cell starts
cold. The hit rate is the engines' own: the deltas of ``vllm:prefix_cache_hits_total`` / ``..._queries_total``
summed over the four replicas. Beside the client's TTFT the table shows the engines' own mean TTFT
(``vllm:time_to_first_token_seconds``, from arrival at the engine's API server) and what the front door added to the
mean (client mean - engine mean): routing quality shows in the first, the front door's own cost in the second.
Workloads (seeded, the same requests for every front door):

* ``conversations``: 24 concurrent multi-turn chats, each with its own long system prompt (~960 tokens);
* ``shared_prompt``: 24 concurrent chats that all share one long system prompt;
* ``random``: unrelated single-turn prompts, 24 at a time (no shared prefixes: load balancing only).

The routers come from their own virtualenv (``~/.cache/llmfleet/bench-venv``: ``pip install vllm-router
sglang-router``), never from the project's dependencies; a front door whose binary is missing is skipped with a note.

Front doors run one after another within each workload, forward in even repeats and reversed in odd ones (an A/B
pair of neighbours runs A-B, then B-A), so a drift of the shared machine's load hits them alike. Each repeat records
every replica's engine TTFT and scheduler queue time (``--sample-s`` adds sampled running/waiting gauges);
``--front-doors control`` adds a 1-replica llmfleet control (all work on one engine).
An unrecorded warm-up cell runs first (``--no-warmup`` skips it); each cell also records the CPU seconds its front
door's processes used. ``--front-door-nice -5`` runs every front door ahead of the engines for the CPU (the same for
all): on this box a front door otherwise waits behind four engines' threads for two cores, which multiplies its own
CPU cost per request into queueing (a burst of cold first turns reaches the engines spread over that time).

``--kv-events`` starts the replicas with KV-cache events on and adds the front doors ``llmfleet kv-events`` (the
default policy fed by the engines' events, docs/routing.md; prompts tokenized by a replica's ``/tokenize``) and
``llmfleet kv-events local`` (the same, tokenized in the gateway from the demo model's directory:
``routing.kv_events.tokenizer``). ``--front-doors`` naming either keeps only the named ones.

``--gateway-workers N`` adds ``llmfleet N workers`` (``llmfleet gateway --workers N``, nothing shared between the
workers: misses placed by the hashed placement) and, with ``--kv-events``, ``llmfleet N workers kv-events local`` (every
worker subscribes to every replica's events itself); their routing note sums the decisions of every worker's
``/metrics`` (read over fresh connections). ``--fresh-connections`` gives every request of the multi-turn workloads
its own client connection, for every front door (issue #17's worst case for unshared workers: the kernel picks a
worker per turn).

``--think-ms M``: users pause between a conversation's turns (M ms on average, seeded). The default is a closed
loop, in which load-only routing keeps conversations in place by accident: the replica a turn just left is the
least loaded one when the next turn arrives.

``--kv-blocks N`` caps every replica's KV cache (128-token blocks) so that it holds only part of the conversations
(``--conversations`` moves the working set against it); see "Bounded KV cache" in the results for the sizing.

    .venv/bin/python benchmarks/routing_real.py [--repeats 1] [--front-doors llmfleet,nginx,...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results, wait_http_ok
from _workers import wait_workers, worker_pages

from llmfleet.appthread import free_port
from llmfleet.bench.runner import RunResult, run_conversations, run_prompts
from llmfleet.bench.workloads import Conversation, conversations, random_prompts, user_pauses
from llmfleet.engines.vllm_testing import DEMO_MODEL_DIR, VLLMReplica, demo_setup
from llmfleet.promtext import HistogramTotals, Scrape, parse
from llmfleet.vllm_metrics import (
    REQUEST_QUEUE_TIME,
    TIME_TO_FIRST_TOKEN,
    EngineGauges,
    read_gauges,
    read_prefix_cache,
)

BENCH_VENV = Path.home() / ".cache" / "llmfleet" / "bench-venv"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    replicas: int = 4
    conversations: int = 24
    turns: int = 8
    system_words: int = 600
    user_words: int = 30
    shared_turns: int = 4
    random_requests: int = 96
    random_words: int = 300
    concurrency: int = 24
    max_tokens: int = 16
    think_ms: float = 0.0
    """Mean pause between a conversation's turns (uniform over 0 to twice it, seeded; 0: closed loop)."""
    seed: int = 0


WARMUP = Sizes(conversations=8, turns=2, random_requests=16, shared_turns=2)
"""The unrecorded warm-up cell's sizes."""


@dataclass
class Cell:
    workload: str
    front_door: str
    hit_rate: float
    p50_ttft_s: float
    p90_ttft_s: float
    requests_per_s: float
    wall_s: float
    errors: int
    load_avg: float
    per_replica_queries: list[float] = field(default_factory=list)
    note: str = ""
    client_mean_ttft_s: float = float("nan")
    engine_mean_ttft_s: float = float("nan")
    per_replica_engine_ttft_s: list[float] = field(default_factory=list)
    """Each replica's own mean TTFT over the cell (nan where it served nothing)."""
    per_replica_queue_s: list[float] = field(default_factory=list)
    """Each replica's mean time requests waited in its scheduler queue (``vllm:request_queue_time_seconds``)."""
    per_replica_running: list[float] = field(default_factory=list)
    """Each replica's mean ``vllm:num_requests_running`` over the cell (``--sample-s``; empty when off)."""
    per_replica_waiting: list[float] = field(default_factory=list)
    """Each replica's mean ``vllm:num_requests_waiting`` over the cell (``--sample-s``; empty when off)."""
    front_door_cpu_s: float = float("nan")
    """CPU seconds the front door's processes (its whole session) used while the workload ran."""
    ttfts_s: list[float] = field(default_factory=list)
    """Every request's TTFT (the table's pooled p90 is over all repeats' requests)."""
    first_turn_ttfts_s: list[float] = field(default_factory=list)
    """The TTFT of each conversation's first turn (the cold prefills: the misses)."""


# --- front doors -------------------------------------------------------------------------------------------------


@dataclass
class FrontDoor:
    """A way to start one front door in front of ``urls``; returns (process, base URL)."""

    name: str
    start: Callable[[list[str], Path], tuple[subprocess.Popen[bytes], str]]
    available: Callable[[], str | None] = lambda: None
    """None when it can run here, else why not."""
    replicas: int | None = None
    """Front only the first this many replicas (a control); None: all of them."""
    workers: int = 1
    """Gateway worker processes on its port (``llmfleet gateway --workers``); the routing note sums their pages."""


def _llmfleet(
    routing: dict[str, object], gateway: dict[str, object] | None = None, workers: int = 1
) -> Callable[[list[str], Path], tuple[subprocess.Popen[bytes], str]]:
    def start(urls: list[str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        cfg = tmp / f"fleet-{port}.yaml"
        sections: dict[str, object] = {"routing": routing} if routing else {}
        if gateway:
            sections["gateway"] = gateway
        cfg.write_text(yaml.safe_dump(sections))
        cmd = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(port), "--config", str(cfg)]
        for u in urls:
            cmd += ["--replica", u]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        log = (tmp / f"gateway-{port}.log").open("wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            if workers > 1:  # every worker bound and ready (urllib's fresh connections land on each)
                wait_workers(url, port, workers, 240)
            else:
                wait_http_ok(f"{url}/ready", 240)
        except BaseException:
            _stop(p)
            raise
        return p, url

    return start


def _nginx(urls: list[str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    d = tmp / f"nginx-{port}"
    d.mkdir()
    servers = "".join(f"    server {u.removeprefix('http://')};\n" for u in urls)
    (d / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream vllm {{
    least_conn;
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://vllm; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_read_timeout 600s;
    }}
  }}
}}
"""
    )
    p = subprocess.Popen(
        ["nginx", "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/health", 30)
    return p, url


def _router(argv0: list[str]) -> Callable[[list[str], Path], tuple[subprocess.Popen[bytes], str]]:
    def start(urls: list[str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        cmd = [
            *argv0,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--prometheus-port",  # not the default 29000, which another router on this machine may hold
            str(free_port()),
            "--policy",
            "cache_aware",
            "--worker-urls",
            *urls,
        ]
        log = (tmp / f"router-{port}.log").open("wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http_ok(f"{url}/v1/models", 90)
            _wait_router_workers(url, len(urls), 90)
        except BaseException:
            _stop(p)
            raise
        return p, url

    return start


def _wait_router_workers(url: str, n: int, timeout_s: float) -> None:
    """Wait until the router lists ``n`` healthy workers (sglang-router's ``GET /workers``).

    sglang-router answers requests as soon as one worker is registered and registers the others in the background
    (each after a metadata probe that times out after 10 s on a loaded machine): a cell started then ran entirely on
    one replica. Routers without ``/workers`` (vllm-router waits for every worker before it serves) return at once.
    """
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/workers", timeout=5) as r:
                workers = json.loads(r.read()).get("workers", [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return
            workers = []
        except (OSError, ValueError):
            workers = []
        seen = sum(1 for w in workers if isinstance(w, dict) and w.get("is_healthy"))
        if seen >= n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url}: {seen} of {n} workers healthy after {timeout_s:.0f} s")


def _needs(path: Path) -> Callable[[], str | None]:
    return lambda: None if path.exists() else f"{path} missing (pip install vllm-router sglang-router there)"


FRONT_DOORS = [
    FrontDoor("llmfleet default", _llmfleet({})),
    FrontDoor("llmfleet default, no token ids", _llmfleet({}, {"resume_token_ids": False})),
    FrontDoor("llmfleet load_aware+prefix", _llmfleet({"policy": "load_aware", "weights": {"prefix": 4.0}})),
    FrontDoor("llmfleet least_outstanding", _llmfleet({"policy": "least_outstanding"})),
    FrontDoor("nginx least_conn", _nginx, lambda: None if shutil.which("nginx") else "nginx not installed"),
    FrontDoor("vllm-router cache_aware", _router([str(BENCH_VENV / "bin" / "vllm-router")]), _needs(BENCH_VENV)),
    FrontDoor(
        "sglang-router cache_aware",
        _router([str(BENCH_VENV / "bin" / "python"), "-m", "sglang_router.launch_router"]),
        _needs(BENCH_VENV / "bin" / "python"),
    ),
]


CONTROLS = [
    # All traffic on one engine: on a box where every replica shares the same few cores, this measures what
    # concentrating the fleet's work on one engine does to TTFT, apart from any routing decision.
    FrontDoor("llmfleet default, 1 replica (control)", _llmfleet({}), replicas=1),
]
"""Front doors run only when ``--front-doors`` names them with a string containing "control"."""


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        os.killpg(p.pid, 15)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()


# --- engines -----------------------------------------------------------------------------------------------------


def _scrape(url: str) -> Scrape:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return parse(r.read())


def _engine_ttft(before: list[Scrape], after: list[Scrape], histogram: str = TIME_TO_FIRST_TOKEN) -> float:
    """The engines' mean TTFT over the cell (all replicas together); nan when nothing was observed."""
    total = HistogramTotals()
    for b, a in zip(before, after, strict=True):
        total = total + HistogramTotals.of(a, histogram).since(HistogramTotals.of(b, histogram))
    return total.mean if total.mean is not None else float("nan")


def _per_replica(before: list[Scrape], after: list[Scrape], histogram: str) -> list[float]:
    """Each replica's mean of ``histogram`` over the cell (nan where nothing was observed)."""
    return [_engine_ttft([b], [a], histogram) for b, a in zip(before, after, strict=True)]


class GaugeSampler:
    """Scrapes every replica's running/waiting gauges every ``interval_s`` in a thread while a cell runs."""

    def __init__(self, urls: list[str], interval_s: float) -> None:
        self.urls, self.interval_s = urls, interval_s
        self.samples: list[list[EngineGauges]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GaugeSampler:
        if self.interval_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append([read_gauges(_scrape(u)) for u in self.urls])
            except OSError:
                continue

    def means(self) -> tuple[list[float], list[float]]:
        """Per replica: mean running, mean waiting (empty lists when nothing was sampled)."""
        if not self.samples:
            return [], []
        n = len(self.samples)
        running = [sum(s[i].running for s in self.samples) / n for i in range(len(self.urls))]
        waiting = [sum(s[i].waiting for s in self.samples) / n for i in range(len(self.urls))]
        return running, waiting


def session_cpu_s(sid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of session ``sid`` (Linux ``/proc``)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[3]) == sid:  # fields after the command: state ppid pgrp session ... utime stime
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _reset_prefix_cache(url: str) -> None:
    for _ in range(50):
        req = urllib.request.Request(f"{url}/reset_prefix_cache", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        if b"false" not in body:
            return
        time.sleep(0.2)  # blocks still held by finishing requests
    raise RuntimeError(f"{url}: prefix cache reset kept failing")


def start_replicas(n: int, logs: Path, kv_blocks: int = 0, kv_events: bool = False) -> list[VLLMReplica]:
    """``n`` demo-model vLLM replicas started side by side (dev mode: /reset_prefix_cache is served).

    ``kv_blocks`` > 0 caps each replica's KV cache at that many blocks (``--num-gpu-blocks-override``; the CPU build
    uses 128-token blocks), so that a replica cannot hold every conversation; 0 keeps the 1 GiB default (~2M tokens).
    ``kv_events``: each replica publishes its KV-cache events on ipc sockets in ``logs`` (:func:`kv_events_routing`).
    """
    runtime, model_dir = demo_setup()
    reps = [
        VLLMReplica(runtime, model_dir, logs / f"vllm-{i}.log", max_model_len=4096, ready_timeout_s=900)
        for i in range(n)
    ]
    for r in reps:
        r.env["VLLM_SERVER_DEV_MODE"] = "1"
        if kv_events:
            events = {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": f"ipc://{logs}/{r.port}.pub",
                "replay_endpoint": f"ipc://{logs}/{r.port}.replay",
                "topic": "kv",
            }
            r.argv += ["--kv-events-config", json.dumps(events)]
        if kv_blocks:
            r.argv += ["--num-gpu-blocks-override", str(kv_blocks)]
    errors: list[BaseException] = []

    def go(r: VLLMReplica) -> None:
        try:
            r.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(r,)) for r in reps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for r in reps:
            r.stop()
        raise errors[0]
    return reps


def kv_events_routing(reps: list[VLLMReplica], logs: Path, tokenizer: Path | None = None) -> dict[str, object]:
    """The routing section of an llmfleet front door that follows the events of :func:`start_replicas`
    (``tokenizer``: the model directory the gateway tokenizes prompts with; None: each replica's /tokenize)."""
    events: dict[str, object] = {
        "enabled": True,
        "endpoints": {r.url: f"ipc://{logs}/{r.port}.pub" for r in reps},
        "replay_endpoints": {r.url: f"ipc://{logs}/{r.port}.replay" for r in reps},
    }
    if tokenizer is not None:
        events["tokenizer"] = str(tokenizer)
    return {"kv_events": events}


@dataclass
class _Running:
    """A replica someone else started (``--replica-urls``)."""

    url: str
    model: str = "demo-model"

    def stop(self) -> None:
        return None


# --- workloads ---------------------------------------------------------------------------------------------------


def shared_prompt_conversations(n: int, seed: int, system_words: int, user_words: int) -> list[Conversation]:
    """``n`` conversations that all start with the same long system prompt."""
    base = conversations(n, seed, system_words, user_words)
    system = "[shared] " + base[0].system
    return [Conversation(system, c.rng, c.user_words) for c in base]


async def run_workload(workload: str, url: str, model: str, sz: Sizes, fresh: bool = False) -> RunResult:
    """One workload against ``url``; ``fresh``: a new connection per request for the multi-turn workloads."""
    think = user_pauses(sz.think_ms, sz.seed)
    if workload == "conversations":
        convs = conversations(sz.conversations, sz.seed, sz.system_words, sz.user_words)
        return await run_conversations(
            url, model, convs, sz.turns, sz.max_tokens, fresh_connections=fresh, think_s=think
        )
    if workload == "shared_prompt":
        convs = shared_prompt_conversations(sz.conversations, sz.seed + 1, sz.system_words, sz.user_words)
        return await run_conversations(
            url, model, convs, sz.shared_turns, sz.max_tokens, fresh_connections=fresh, think_s=think
        )
    prompts = random_prompts(sz.random_requests, sz.seed + 2, sz.random_words)
    return await run_prompts(url, model, prompts, sz.concurrency, sz.max_tokens)


def run_cell(
    workload: str,
    fd: FrontDoor,
    reps: list[VLLMReplica] | list[_Running],
    sz: Sizes,
    tmp: Path,
    sample_s: float = 0.0,
    nice: int = 0,
    fresh: bool = False,
) -> Cell:
    urls = [r.url for r in reps]
    for u in urls:
        _reset_prefix_cache(u)
    try:
        proc, url = fd.start(urls[: fd.replicas] if fd.replicas else urls, tmp)
    except (TimeoutError, OSError) as exc:  # a loaded machine: record the cell as not run, go on with the others
        nan = float("nan")
        return Cell(workload, fd.name, nan, nan, nan, nan, nan, 0, os.getloadavg()[0], [0.0], f"not run: {exc}")
    try:
        if nice:  # every thread of the front door's process group, now and (inherited) later
            os.setpriority(os.PRIO_PGRP, proc.pid, nice)
        pages_before = [_scrape(u) for u in urls]
        cpu0 = session_cpu_s(proc.pid)
        t0 = time.monotonic()
        with GaugeSampler(urls, sample_s) as sampler:
            res = asyncio.run(run_workload(workload, url, reps[0].model, sz, fresh))
        wall = time.monotonic() - t0
        cpu = session_cpu_s(proc.pid) - cpu0
        pages_after = [_scrape(u) for u in urls]
        sent = len(res.e2e_s) + res.errors
        note = _gateway_note(url, fd.workers, sent) if fd.name.startswith("llmfleet") else ""
    finally:
        _stop(proc)
    before = [read_prefix_cache(p) for p in pages_before]
    after = [read_prefix_cache(p) for p in pages_after]
    hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    per = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    queries = sum(per)
    return Cell(
        workload,
        fd.name,
        hits / queries if queries else 0.0,
        res.percentile(res.ttft_s, 50),
        res.percentile(res.ttft_s, 90),
        res.requests_per_s,
        wall,
        res.errors,
        os.getloadavg()[0],
        per,
        note,
        sum(res.ttft_s) / len(res.ttft_s) if res.ttft_s else float("nan"),
        _engine_ttft(pages_before, pages_after),
        _per_replica(pages_before, pages_after, TIME_TO_FIRST_TOKEN),
        _per_replica(pages_before, pages_after, REQUEST_QUEUE_TIME),
        *sampler.means(),
        cpu,
        list(res.ttft_s),
        list(res.first_turn_ttft_s),
    )


def _gateway_note(url: str, workers: int = 1, sent: int = 0) -> str:
    """llmfleet's routing decisions by reason and the replicas' health states at the end of a cell.

    With several workers each has its own ``/metrics``: the pages are collected over fresh connections until
    ``workers`` distinct pages whose request counters add up to ``sent`` are seen; decisions are summed over them
    and the states are every worker's (one worker's view each)."""
    if workers > 1:
        pages = worker_pages(url, workers, sent)
    else:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            pages = [parse(r.read())]
    decisions: dict[str, float] = {}
    states = []
    for page in pages:
        for s in page.samples:
            if s.name == "llmfleet_gateway_routing_decisions_total":
                decisions[s.labels["reason"]] = decisions.get(s.labels["reason"], 0.0) + s.value
            elif s.name == "llmfleet_gateway_replica_state" and s.value == 1.0:
                states.append(s.labels["state"])
    reasons = [f"{k} {v:.0f}" for k, v in decisions.items()]
    if workers > 1:  # every worker's view of every replica: counted
        states = [f"{k} x{v}" for k, v in Counter(states).items()]
        states.append(f"{len(pages)} of {workers} workers' pages read")
    return "decisions: " + ", ".join(reasons) + "; states at end: " + ", ".join(states)


# --- report ------------------------------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def _repeat(c: Cell) -> str:
    per = " ".join(f"{t:.2f}/{q:.2f}" for t, q in zip(c.per_replica_engine_ttft_s, c.per_replica_queue_s, strict=True))
    gauges = ""
    if c.per_replica_running:
        gauges = " running/waiting " + " ".join(
            f"{r:.1f}/{w:.1f}" for r, w in zip(c.per_replica_running, c.per_replica_waiting, strict=True)
        )
    mean_q = sum(c.per_replica_queries) / len(c.per_replica_queries) if c.per_replica_queries else 0.0
    spread = max(c.per_replica_queries) / mean_q if mean_q else float("nan")
    first = ""
    if c.first_turn_ttfts_s:
        later = sorted(c.ttfts_s)
        for t in c.first_turn_ttfts_s:
            later.remove(t)
        first = (
            f" first turns p50/p90 {_pct(c.first_turn_ttfts_s, 50):.2f}/{_pct(c.first_turn_ttfts_s, 90):.2f} s,"
            f" later turns p90 {_pct(later, 90):.2f} s"
        )
    return (
        f"{c.hit_rate:.1%} / {c.p90_ttft_s:.2f} s / {c.engine_mean_ttft_s:.2f} s / load {c.load_avg:.1f} [{per}]"
        f"{gauges} max/mean {spread:.2f}{first}"
    )


def _pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values``, as the client's summary computes it (nan when empty)."""
    return RunResult().percentile(values, q)


def report(cells: list[Cell], sz: Sizes, repeats: int, skipped: list[str], started: str, kv: str = "1 GiB") -> str:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.workload, c.front_door), []).append(c)
    lines = [
        f"\n## Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs shared with other "
        f"work; {sz.replicas} vLLM CPU replicas of the demo model, {kv} KV cache each; {repeats} repeat(s), medians; "
        f"{started}; load avg = the machine's 1-minute load average after the cell)\n",
        f"Sizes: {sz.conversations} conversations x {sz.turns} turns ({sz.system_words}-word system prompts, "
        f"{sz.user_words}-word user turns), shared_prompt {sz.conversations} x {sz.shared_turns} turns, random "
        f"{sz.random_requests} x {sz.random_words} words at concurrency {sz.concurrency}; "
        f"max_tokens {sz.max_tokens}"
        + (f"; {sz.think_ms:g} ms mean pause between a conversation's turns" if sz.think_ms else "; closed loop")
        + ".\n",
        "| workload | front door | prefix cache hit rate | TTFT p50 | TTFT p90 | TTFT p90, all repeats pooled | "
        "engine TTFT mean | front door adds (mean) | front door CPU | req/s | wall | errors | load avg (1 min) | "
        "max/mean queried tokens per replica |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (workload, name), cs in groups.items():
        spread = [
            max(c.per_replica_queries) / (sum(c.per_replica_queries) / len(c.per_replica_queries) or 1) for c in cs
        ]
        lines.append(
            f"| {workload} | {name} | {_med([c.hit_rate for c in cs]):.1%} | "
            f"{_med([c.p50_ttft_s for c in cs]):.2f} s | "
            f"{_med([c.p90_ttft_s for c in cs]):.2f} s | {_pct([t for c in cs for t in c.ttfts_s], 90):.2f} s | "
            f"{_med([c.engine_mean_ttft_s for c in cs]):.2f} s | "
            f"{_med([c.client_mean_ttft_s - c.engine_mean_ttft_s for c in cs]):+.2f} s | "
            f"{_med([c.front_door_cpu_s for c in cs]):.2f} s | "
            f"{_med([c.requests_per_s for c in cs]):.2f} | "
            f"{_med([c.wall_s for c in cs]):.0f} s | {sum(c.errors for c in cs)} | "
            f"{_med([c.load_avg for c in cs]):.1f} | {_med(spread):.2f} |"
        )
    if len(cells) > len(groups):
        lines.append(
            "\nEvery repeat (hit rate / TTFT p90 / engine TTFT mean / load avg after the cell; per replica: engine"
            " TTFT mean and scheduler queue time mean, s):\n"
        )
        for (workload, name), cs in groups.items():
            lines.append(f"- {workload}, {name}: " + "; ".join(_repeat(c) for c in cs))
    notes = [f"- {c.workload}, {c.front_door}: {c.note}" for c in cells if c.note]
    if notes:
        lines.append("\nllmfleet gateways (routing decisions by reason; replica health at the end):\n")
        lines.extend(notes)
    for s in skipped:
        lines.append(f"\nSkipped: {s}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--front-doors",
        default="",
        help='Comma-separated substrings of front-door names (default all); "=NAME" matches NAME exactly.',
    )
    ap.add_argument(
        "--kv-blocks",
        type=int,
        default=0,
        help="Cap each started replica's KV cache at this many 128-token blocks (--num-gpu-blocks-override), so it "
        "holds only part of the conversations (0: the 1 GiB default, every conversation fits).",
    )
    ap.add_argument(
        "--kv-events",
        action="store_true",
        help="Started replicas publish KV-cache events; adds the front doors 'llmfleet kv-events' and 'llmfleet "
        "kv-events local' (tokenized in the gateway) that follow them.",
    )
    ap.add_argument("--conversations", type=int, default=0, help="Number of conversations (0: the default, 24).")
    ap.add_argument(
        "--gateway-workers",
        type=int,
        default=0,
        metavar="N",
        help="Adds 'llmfleet N workers' (llmfleet gateway --workers N, nothing shared: hashed miss placement) and, "
        "with --kv-events, 'llmfleet N workers kv-events local' (every worker follows every engine's events).",
    )
    ap.add_argument(
        "--fresh-connections",
        action="store_true",
        help="A new client connection per request (conversations, shared_prompt) for every front door, so that a "
        "conversation's turns reach whichever gateway worker the kernel picks (the worst case for unshared workers).",
    )
    ap.add_argument("--workloads", default="conversations,shared_prompt,random")
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="Mean pause between a conversation's turns (uniform over 0 to twice it, seeded; default 0: closed loop, "
        "where load-only routing keeps conversations in place by accident).",
    )
    ap.add_argument(
        "--llmfleet-routing",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='An extra llmfleet front door with this routing section, e.g. loose=\'{"prefix": {"spill_margin": 64}}\'.',
    )
    ap.add_argument(
        "--llmfleet-gateway",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='An extra llmfleet front door with this gateway section, e.g. lean=\'{"stream_accounting": "lean"}\'.',
    )
    ap.add_argument(
        "--sample-s",
        type=float,
        default=0.0,
        help="Scrape every replica's running/waiting gauges this often during each cell (0: off).",
    )
    ap.add_argument(
        "--front-door-nice",
        type=int,
        default=0,
        help="Run every front door at this nice value (e.g. -5, as root): as if it had its own cores, which it has "
        "in production, instead of queueing behind four CPU engines' threads for the same two cores.",
    )
    ap.add_argument("--quick", action="store_true", help="Smaller workloads (a smoke run).")
    ap.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="Skip the unrecorded warm-up cell before the first."
    )
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "routing_real.md")
    ap.add_argument("--no-record", action="store_true", help="Print the table without appending it to --results.")
    ap.add_argument(
        "--serve-replicas", action="store_true", help="Start the replicas, print their URLs and keep them until killed."
    )
    ap.add_argument("--replica-urls", default="", help="Use these running dev-mode replicas (from --serve-replicas).")
    args = ap.parse_args()
    sz = Sizes(conversations=8, turns=3, random_requests=24, shared_turns=2) if args.quick else Sizes()
    if args.conversations:
        sz = dataclasses.replace(sz, conversations=args.conversations)
    if args.think_ms < 0:
        ap.error("--think-ms: must be 0 or more")
    sz = dataclasses.replace(sz, think_ms=args.think_ms)
    wanted = [w for w in args.front_doors.split(",") if w]

    def chosen(name: str) -> bool:
        return any(name == w[1:] if w.startswith("=") else w in name for w in wanted)

    doors, skipped = [], []
    extra = []
    for spec in args.llmfleet_routing:
        name, _, js = spec.partition("=")
        extra.append(FrontDoor(f"llmfleet {name}", _llmfleet(json.loads(js))))
    for spec in args.llmfleet_gateway:
        name, _, js = spec.partition("=")
        extra.append(FrontDoor(f"llmfleet {name}", _llmfleet({}, json.loads(js))))
    n_workers = args.gateway_workers
    if n_workers > 1:
        extra.append(FrontDoor(f"llmfleet {n_workers} workers", _llmfleet({}, workers=n_workers), workers=n_workers))
    for fd in FRONT_DOORS + extra + CONTROLS:
        if fd in CONTROLS and not any("control" in w and w.lstrip("=") in fd.name for w in wanted):
            continue
        if wanted and not chosen(fd.name):
            continue
        why = fd.available()
        if why:
            skipped.append(f"{fd.name}: {why}")
        else:
            doors.append(fd)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="routing-real-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.monotonic()
        reps: list[VLLMReplica] | list[_Running]
        if args.replica_urls:
            reps = [_Running(u) for u in args.replica_urls.split(",")]
        else:
            reps = start_replicas(sz.replicas, tmp, args.kv_blocks, args.kv_events)
            if args.kv_events:
                named = any("kv-events" in w for w in wanted)  # else both, as before the local one existed
                for name, tokenizer in (("llmfleet kv-events", None), ("llmfleet kv-events local", DEMO_MODEL_DIR)):
                    if not named or chosen(name):
                        doors.append(FrontDoor(name, _llmfleet(kv_events_routing(reps, tmp, tokenizer))))
                if n_workers > 1:  # each worker its own SUB socket on every replica's PUB endpoint
                    name = f"llmfleet {n_workers} workers kv-events local"
                    routing = kv_events_routing(reps, tmp, DEMO_MODEL_DIR)
                    if not wanted or chosen(name):
                        doors.append(FrontDoor(name, _llmfleet(routing, workers=n_workers), workers=n_workers))
                    # Only when named: misses to the least loaded replica (the single process's placement) instead
                    # of the hashed one that `auto` picks for unshared workers, since the events show every worker
                    # where a conversation went.
                    name += ", least_loaded misses"
                    if wanted and chosen(name):
                        routing = {**routing, "prefix": {"miss_placement": "least_loaded"}}
                        doors.append(FrontDoor(name, _llmfleet(routing, workers=n_workers), workers=n_workers))
        started_s = time.monotonic() - t0
        print(f"{len(reps)} replicas ready in {started_s:.0f} s: {','.join(r.url for r in reps)}", flush=True)
        try:
            if args.serve_replicas:
                # SIGTERM as well as Ctrl-C stops the replicas (the finally below): a background job ignores SIGINT.
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                while True:
                    time.sleep(3600)
            if args.warmup and doors:
                # The engines' first requests after start-up are slow (allocation, first forward passes): a cell
                # that is not recorded, so that the first front door of the first repeat does not pay for them.
                w = run_cell(args.workloads.split(",")[0], doors[0], reps, WARMUP, tmp, fresh=args.fresh_connections)
                print(f"warm-up ({doors[0].name}): {w.requests_per_s:.2f} req/s, not recorded", flush=True)
            for rep in range(args.repeats):
                # Rotate the order each repeat and reverse it every other one, so neighbouring front doors (an
                # A/B pair) run A-B then B-A and a drift of the machine's load hits both alike.
                shift = rep // 2 % len(doors)
                order = doors[shift:] + doors[:shift]
                if rep % 2:
                    order.reverse()
                for workload in args.workloads.split(","):
                    for fd in order:
                        c = run_cell(
                            workload, fd, reps, sz, tmp, args.sample_s, args.front_door_nice, args.fresh_connections
                        )
                        print(
                            f"{workload:14} {fd.name:30} hits {c.hit_rate:6.1%}  p50 {c.p50_ttft_s:6.2f} s  "
                            f"p90 {c.p90_ttft_s:6.2f} s  engine mean {c.engine_mean_ttft_s:5.2f} s  client mean "
                            f"{c.client_mean_ttft_s:5.2f} s  {c.requests_per_s:5.2f} req/s  wall {c.wall_s:5.0f} s  "
                            f"errors {c.errors}  load {c.load_avg:.1f}  [{_repeat(c)}]  {c.note}",
                            flush=True,
                        )
                        cells.append(c)
        finally:
            for r in reps:
                r.stop()
    started = "replicas started elsewhere" if args.replica_urls else f"replicas ready in {started_s:.0f} s"
    kv = f"{args.kv_blocks} x 128-token blocks of" if args.kv_blocks else "1 GiB"
    if args.replica_urls:
        kv = "(replicas started elsewhere)"
    text = report(cells, sz, args.repeats, skipped, started, kv)
    print(text)
    if not args.no_record:
        append_results(
            args.results,
            "# Prefix-aware routing on real vLLM\n\nProduced by `benchmarks/routing_real.py` (see its docstring).\n",
            text,
        )


if __name__ == "__main__":
    main()
