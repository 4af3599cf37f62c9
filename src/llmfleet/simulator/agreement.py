"""The same policies, two clocks: one trace replayed through the live gateway over simulated engines (real HTTP, real
time) and through ``llmfleet simulate`` (simulated time), compared on prefix-cache hit rate and TTFT.

The trace is a conversation workload: ``sessions`` conversations, each opening with one of ``prefixes`` shared
system prompts and growing by a user message per turn, turns ``turn_gap_s`` apart (long enough that a turn never
waits for the previous one, so the open-loop simulator and the session-ordered bench client send at the same times).
The live side is ``replicas`` ``llmfleet engine sim`` processes with prefix caching behind ``llmfleet gateway``,
driven by ``llmfleet bench --trace`` (completions API, exact output lengths); its hit rate is the engines' own
``vllm:prefix_cache_hits/queries`` counters over the run. The simulator runs the same trace with the same engine
settings and routing policy (``seeds`` times: its tie-breaks draw from another rng than the live gateway's).

Known differences, small by construction: the bench client renders a session's next turn as the previous prompt
plus new words (no assistant reply in it), the simulator caches the reply too (at most ``output_tokens`` more hit
tokens per turn).

Two live TTFTs: the client's (what ``llmfleet bench`` sees: the HTTP hops client -> gateway -> engine, the gateway's
own work and the engines' event loops on top of the engine) and the engines' own (``vllm:time_to_first_token_seconds``,
arrival at the engine to its first token, read from each engine's ``/metrics`` before and after the run). The
simulator models engines and routing, not the front door, so the engines' own TTFT is its like-with-like figure;
client minus engine is the front door's added latency. vLLM's buckets are coarse where these TTFTs fall (0.1, 0.25,
0.5 s), so the engines' per-request TTFTs are recovered by scraping each engine's ``/metrics`` every
``scrape_interval_s`` during the run: a scrape that finds one new observation reads it exactly (the increase of
``_sum``); one that finds several gives each their mean (counted in :attr:`Side.engine_ttft_shared`). The mean over
the run (``_sum / _count``) is exact either way, and the histogram's own percentiles are kept for reference, with the
simulator's TTFTs put through the same buckets (:func:`bucketed_quantile`).
Used by ``benchmarks/simulator_agreement.py`` (recorded) and a slow test (small size).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llmfleet.appthread import free_port
from llmfleet.bench.summary import percentile
from llmfleet.config import FleetConfig
from llmfleet.promtext import HistogramTotals, Scrape, parse
from llmfleet.simulator.runner import SimOptions, run
from llmfleet.vllm_metrics import TIME_TO_FIRST_TOKEN, read_prefix_cache

GATEWAY_TTFT = "llmfleet_gateway_time_to_first_token_seconds"
"""The gateway's own TTFT histogram (request received to first content chunk relayed)."""


@dataclass(frozen=True)
class AgreementScenario:
    """The fleet and the conversation trace (defaults: ~75 s, 120 requests over 4 replicas)."""

    replicas: int = 4
    gpu: str = "L40S"
    model: str = "qwen3-32b"
    precision: str = "fp8"
    """A slow engine (TTFT ~100-300 ms, ~40 ms per output token), so the live side's HTTP and gateway overhead (a
    few ms) stays small next to what is compared."""
    sessions: int = 24
    turns: int = 5
    prefixes: int = 4
    prefix_tokens: int = 384
    message_tokens: tuple[int, int] = (80, 320)
    output_tokens: int = 16
    start_spread_s: float = 45.0
    turn_gap_s: float = 7.5
    seed: int = 0
    scrape_interval_s: float = 0.05
    """Live: pause between rounds of ``/metrics`` scrapes of the engines, to read their TTFTs one by one."""
    probe_completion: bool = False
    """The live gateway's 1-token completion probes (every 10 s per replica). Off: they would land in the engines'
    TTFT histogram (about one probe per four traced requests here) and load the engines, while the simulator skips
    the probes of healthy, fast replicas (they change nothing); GET /health probes stay on."""

    def config(self, policy: str) -> FleetConfig:
        """The fleet settings both sides use."""
        cfg = FleetConfig()
        engine = cfg.engine.model_copy(update={"gpu": self.gpu, "model": self.model, "precision": self.precision,
                                              "enable_prefix_caching": True})  # fmt: skip
        routing = cfg.routing.model_copy(update={"policy": policy})
        return cfg.model_copy(update={"engine": engine, "routing": routing})


@dataclass(frozen=True)
class Side:
    """One clock's figures."""

    requests: int
    errors: int
    hit_rate: float
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_mean_ms: float = float("nan")
    ttft_samples_ms: tuple[float, ...] = field(default=(), repr=False)
    """Simulator: its TTFT distribution (101 quantiles per seed, pooled), for :func:`bucketed_quantile`."""
    engine_ttft: HistogramTotals | None = None
    """Live: the engines' own TTFT histogram over the run (seconds, summed over replicas)."""
    gateway_ttft: HistogramTotals | None = None
    """Live: the gateway's TTFT histogram over the run (seconds)."""
    engine_ttfts_ms: tuple[float, ...] = field(default=(), repr=False)
    """Live: the engines' own TTFT per request (ms), from the scrapes during the run."""
    engine_ttft_shared: int = 0
    """Live: how many of ``engine_ttfts_ms`` shared a scrape with another (each is then that scrape's mean)."""

    def engine_ttft_ms(self, q: float) -> float:
        """The engines' own TTFT ``q`` percentile (0..100, ms): per request live, the simulator's own TTFT for the
        simulator (nan when nothing was read)."""
        if self.engine_ttft is None:
            return {50.0: self.ttft_p50_ms, 90.0: self.ttft_p90_ms}.get(q, float("nan"))
        return percentile(sorted(self.engine_ttfts_ms), q)

    @property
    def engine_ttft_mean_ms(self) -> float:
        """The engines' own mean TTFT (exact: ``_sum / _count``); the simulator's mean for the simulator."""
        if self.engine_ttft is None:
            return self.ttft_mean_ms
        mean = self.engine_ttft.mean
        return float("nan") if mean is None else mean * 1000

    @property
    def front_door_ms(self) -> float:
        """Mean TTFT the client sees minus the engines' own: the HTTP hops, the gateway, the event loops (0 in the
        simulator, which does not model them)."""
        return self.ttft_mean_ms - self.engine_ttft_mean_ms


def write_trace(sc: AgreementScenario, path: Path) -> int:
    """The scenario's trace as JSON Lines (``llmfleet bench --trace`` / ``llmfleet simulate --trace``); returns
    the number of requests."""
    rng = random.Random(sc.seed)
    rows: list[dict[str, object]] = []
    for s in range(sc.sessions):
        start = sc.start_spread_s * s / max(1, sc.sessions - 1)
        prompt = sc.prefix_tokens
        for turn in range(sc.turns):
            prompt += rng.randint(*sc.message_tokens)
            rows.append(
                {
                    "timestamp": round(start + turn * sc.turn_gap_s, 3),
                    "input_tokens": prompt,
                    "output_tokens": sc.output_tokens,
                    "session_id": f"c{s}",
                    "prefix_id": f"system{s % sc.prefixes}",
                    "prefix_tokens": sc.prefix_tokens,
                }
            )
    rows.sort(key=lambda r: float(r["timestamp"]))  # type: ignore[arg-type]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def simulate(sc: AgreementScenario, policy: str, trace: Path, seeds: int = 5) -> Side:
    """The simulator's figures: means over ``seeds`` runs (TTFT percentiles averaged, hit rate from summed tokens)."""
    outs = [
        run(SimOptions(sc.config(policy), replicas=sc.replicas, duration_s=float("inf"), trace=trace, seed=seed))
        for seed in range(seeds)
    ]
    n = len(outs)
    return Side(
        requests=sum(int(o["completed"]) + int(o["failed"]) for o in outs) // n,
        errors=sum(int(o["failed"]) for o in outs),
        hit_rate=sum(float(o["prefix_cache_hit_rate"] or 0.0) for o in outs) / n,
        ttft_p50_ms=sum(float(o["ttft_ms"]["p50"]) for o in outs) / n,
        ttft_p90_ms=sum(float(o["ttft_ms"]["p90"]) for o in outs) / n,
        ttft_mean_ms=sum(float(o["ttft_ms"]["mean"]) for o in outs) / n,
        ttft_samples_ms=tuple(float(v) for o in outs for v in o["quantiles_ms"]["ttft"]),
    )


def bucketed_quantile(samples_ms: tuple[float, ...], like: HistogramTotals, q: float) -> float:
    """The ``q`` quantile (ms) of ``samples_ms`` put through the buckets of ``like`` (seconds) and interpolated as
    :meth:`HistogramTotals.quantile` does: the simulator's figure read the way the live histogram is read."""
    if not samples_ms or not like.buckets:
        return float("nan")
    secs = [v / 1000 for v in samples_ms]
    buckets = {le: float(sum(1 for v in secs if v <= le)) for le in like.buckets}
    value = HistogramTotals(sum(secs), float(len(secs)), buckets).quantile(q)
    return float("nan") if value is None else value * 1000


def histogram_quantile_ms(h: HistogramTotals | None, q: float) -> float:
    """``h``'s ``q`` quantile in ms (nan when absent or empty)."""
    value = None if h is None else h.quantile(q)
    return float("nan") if value is None else value * 1000


def _wait(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s} s")
        time.sleep(0.1)


def _warm(url: str, model: str) -> None:
    body = json.dumps({"model": model, "prompt": f"warm up {url}", "max_tokens": 2}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def _scrape(url: str) -> Scrape:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        return parse(r.read())


def _engine_totals(urls: list[str]) -> tuple[float, float, HistogramTotals]:
    """Prefix-cache hits and queries (tokens) and the TTFT histogram, summed over the engines."""
    hits = queries = 0.0
    ttft = HistogramTotals()
    for u in urls:
        page = _scrape(u)
        h, q = read_prefix_cache(page)
        hits, queries, ttft = hits + h, queries + q, ttft + HistogramTotals.of(page, TIME_TO_FIRST_TOKEN)
    return hits, queries, ttft


class _TtftScraper:
    """Scrapes the engines' TTFT ``_sum``/``_count`` in a thread until stopped: one new observation between two
    scrapes of an engine is that request's TTFT exactly."""

    def __init__(self, urls: list[str], interval_s: float) -> None:
        self.urls = urls
        self.interval_s = interval_s
        self.ttfts_s: list[float] = []
        self.shared = 0
        self._last = [self._read(u) for u in urls]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ttft-scraper", daemon=True)

    @staticmethod
    def _read(url: str) -> tuple[float, float]:
        h = HistogramTotals.of(_scrape(url), TIME_TO_FIRST_TOKEN)
        return h.sum, h.count

    def _round(self) -> None:
        for i, u in enumerate(self.urls):
            total, count = self._read(u)
            new = round(count - self._last[i][1])
            if new > 0:
                self.ttfts_s += [(total - self._last[i][0]) / new] * new
                self.shared += new if new > 1 else 0
            self._last[i] = (total, count)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._round()

    def __enter__(self) -> _TtftScraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._round()  # what finished since the last round


def live(sc: AgreementScenario, policy: str, trace: Path, timeout_s: float = 600.0) -> Side:
    """Fresh engines (cold caches) and a fresh gateway on 127.0.0.1, the trace replayed by ``llmfleet bench``; every
    process started here is stopped before returning, also on failure."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            side = _live_run(sc, policy, trace, timeout_s, Path(tmp), procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return side


def _live_run(
    sc: AgreementScenario, policy: str, trace: Path, timeout_s: float, tmp: Path, procs: list[subprocess.Popen[bytes]]
) -> Side:
    cli = [sys.executable, "-m", "llmfleet"]
    urls = []
    for _ in range(sc.replicas):
        port = free_port()
        cmd = [*cli, "engine", "sim", "--port", str(port), "--gpu", sc.gpu, "--model", sc.model,
               "--precision", sc.precision]  # fmt: skip
        procs.append(subprocess.Popen([*cmd, "--enable-prefix-caching"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
        urls.append(f"http://127.0.0.1:{port}")
    for u in urls:
        _wait(f"{u}/health")
    gw_port = free_port()
    fleet_yaml = tmp / "fleet.yaml"
    fleet_yaml.write_text(f"gateway:\n  health:\n    probe_completion: {str(sc.probe_completion).lower()}\n")
    cmd = [*cli, "gateway", "--port", str(gw_port), "--policy", policy, "--config", str(fleet_yaml)]
    for u in urls:
        cmd += ["--replica", u]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    gw = f"http://127.0.0.1:{gw_port}"
    _wait(f"{gw}/ready")
    for u in [*urls, gw, gw]:  # warm-up outside the trace (first connections, first steps): unrelated text
        _warm(u, sc.model)
    before = _engine_totals(urls)
    gw_before = HistogramTotals.of(_scrape(gw), GATEWAY_TTFT)
    out = tmp / "bench.json"
    bench = [*cli, "bench", "--url", gw, "--model", sc.model, "--api", "completions", "--trace", str(trace),
             "--requests", "1000000", "--no-progress", "--out", str(out)]  # fmt: skip
    with _TtftScraper(urls, sc.scrape_interval_s) as scraper:
        subprocess.run(bench, check=True, timeout=timeout_s, stdout=subprocess.DEVNULL)
    res = json.loads(out.read_text())
    after = _engine_totals(urls)
    gw_ttft = HistogramTotals.of(_scrape(gw), GATEWAY_TTFT).since(gw_before)
    hits, queries = after[0] - before[0], after[1] - before[1]
    return Side(
        requests=int(res["completed"]) + int(res["failed"]),
        errors=int(res["failed"]),
        hit_rate=hits / queries if queries else 0.0,
        ttft_p50_ms=float(res["ttft_ms"]["p50"]),
        ttft_p90_ms=float(res["ttft_ms"]["p90"]),
        ttft_mean_ms=float(res["ttft_ms"]["mean"]),
        engine_ttft=after[2].since(before[2]),
        gateway_ttft=gw_ttft,
        engine_ttfts_ms=tuple(v * 1000 for v in scraper.ttfts_s),
        engine_ttft_shared=scraper.shared,
    )


def relative(sim: float, real: float) -> float:
    """``sim`` vs ``real`` as a signed fraction (nan when ``real`` is 0)."""
    return (sim - real) / real if real else float("nan")
