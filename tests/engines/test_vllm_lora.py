"""vLLM's LoRA flags rendered from the ``vllm`` config section."""

from __future__ import annotations

from llmfleet.config import VLLMEngineConfig
from llmfleet.engines.vllm import VLLMRuntime, lora_args, render_command

RUNTIME = VLLMRuntime(python="/usr/bin/python3", has_vllm_distribution=True, cpu_build=True)


def test_no_adapters_no_flags() -> None:
    argv, env = render_command(VLLMEngineConfig(model="/m/demo"), RUNTIME, "127.0.0.1", 8000)
    assert "--enable-lora" not in argv and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env


def test_adapters_and_runtime_updating() -> None:
    cfg = VLLMEngineConfig.model_validate(
        {
            "model": "/m/demo",
            "lora_modules": {"sql": "/a/sql", "chat": "/a/chat"},
            "max_lora_rank": 8,
            "runtime_lora_updating": True,
        }
    )
    assert lora_args(cfg) == ["--enable-lora", "--lora-modules", "sql=/a/sql", "chat=/a/chat", "--max-lora-rank", "8"]
    argv, env = render_command(cfg, RUNTIME, "127.0.0.1", 8000)
    assert argv[argv.index("--lora-modules") + 1] == "sql=/a/sql"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    only_runtime = VLLMEngineConfig.model_validate({"model": "/m/demo", "runtime_lora_updating": True})
    assert lora_args(only_runtime) == ["--enable-lora"]
