"""The LoRA adapters one simulated replica has loaded (vLLM's ``--lora-modules`` and its runtime adapter API)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from llmfleet.errors import InvalidRequestError, ModelNotFoundError


class LoraAdapters:
    """Adapter name -> path, bounded by ``max_loras``; the base model's name is not an adapter name."""

    def __init__(self, base_model: str, initial: Mapping[str, str], max_loras: int) -> None:
        self.base_model = base_model
        self.max_loras = max_loras
        self._loaded: dict[str, str] = {}
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
