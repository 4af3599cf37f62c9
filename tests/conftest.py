"""Shared test options: slow tiers are opt-in (``--slow``, ``--realvllm``); .ci/run passes them when they fit."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run slow tests (soak, big benchmarks)")
    parser.addoption("--realvllm", action="store_true", help="run tests against real vLLM (CPU build)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, option in (("slow", "--slow"), ("realvllm", "--realvllm")):
            if marker in item.keywords and not config.getoption(option):
                item.add_marker(pytest.mark.skip(reason=f"needs {option}"))
