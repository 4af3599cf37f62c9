"""The LoRA adapters one simulated replica has loaded (vLLM's ``--lora-modules`` and its runtime adapter API), and
vLLM's ``vllm:lora_requests_info`` gauge of the adapters its running and waiting requests use."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmfleet.errors import InvalidRequestError, ModelNotFoundError

LORA_REQUESTS_INFO = "vllm:lora_requests_info"


class LoraAdapters:
    """Adapter name -> path, bounded by ``max_loras``; the base model's name is not an adapter name."""

    def __init__(self, base_model: str, initial: Mapping[str, str], max_loras: int) -> None:
        self.base_model = base_model
        self.max_loras = max_loras
        self._loaded: dict[str, str] = {}
        self._requests: dict[int, tuple[object, str]] = {}
        for name, path in initial.items():
            self.load(name, path)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def items(self) -> Iterator[tuple[str, str]]:
        """(name, path) of every loaded adapter, in load order."""
        return iter(list(self._loaded.items()))

    def load(self, name: str, path: str) -> None:
        """Load ``name``; 400 when it is loaded already, names the base model, or no slot is free."""
        if not name:
            raise InvalidRequestError("`lora_name` must not be empty", param="lora_name")
        if name == self.base_model:
            raise InvalidRequestError(f"`{name}` is the base model's name", param="lora_name")
        if name in self._loaded:
            raise InvalidRequestError(f"The lora adapter '{name}' has already been loaded.", param="lora_name")
        if len(self._loaded) >= self.max_loras:
            raise InvalidRequestError(
                f"cannot load '{name}': {self.max_loras} adapters are loaded (max_loras)", param="lora_name"
            )
        self._loaded[name] = path

    def unload(self, name: str) -> None:
        """Unload ``name``; 404 when it is not loaded."""
        if self._loaded.pop(name, None) is None:
            raise ModelNotFoundError(f"The lora adapter '{name}' cannot be found.", param="lora_name")

    # ---- requests using an adapter ---------------------------------------------------------------------------
    def attach(self, request: object, model: str) -> None:
        """Note that engine request ``request`` (a scheduler entry) generates with ``model``; base-model requests
        are not noted. :meth:`detach` it when it leaves the engine."""
        if model in self._loaded:
            self._requests[id(request)] = (request, model)

    def detach(self, request: object) -> None:
        """Forget ``request`` (finished or aborted); unknown requests are ignored."""
        self._requests.pop(id(request), None)

    def in_use(self, requests: Collection[object]) -> list[str]:
        """Adapters of the noted requests among ``requests`` (the engine's running or waiting ones), sorted."""
        ids = {id(r) for r in requests}
        return sorted({name for key, (_, name) in self._requests.items() if key in ids})


class LoraRequestsCollector(Collector):
    """``vllm:lora_requests_info`` as vLLM exports it: labels ``running_lora_adapters`` and ``waiting_lora_adapters``
    (comma-separated adapter names) and ``max_lora``, value the wall time the label set was current. vLLM keeps
    every label set it has seen (the largest value is the current one); the simulator exports only the current."""

    def __init__(
        self,
        adapters: LoraAdapters,
        queues: Callable[[], tuple[Collection[object], Collection[object]]],
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self._adapters = adapters
        self._queues = queues
        """(running, waiting) requests of the engine at scrape time."""
        self._wall_time = wall_time

    def collect(self) -> Iterator[Metric]:
        running, waiting = self._queues()
        fam = GaugeMetricFamily(
            LORA_REQUESTS_INFO,
            "Running stats on lora requests.",
            labels=["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
        )
        labels = [
            str(self._adapters.max_loras),
            ",".join(self._adapters.in_use(waiting)),
            ",".join(self._adapters.in_use(running)),
        ]
        fam.add_metric(labels, self._wall_time())
        yield fam
