"""One model's share of a fleet `llmfleet up` runs: its settings, the supervisor of its replicas, their gateway
registration and, when it autoscales, its own controller and provider.

A single-model fleet has one :class:`ModelFleet`; a fleet.yaml with ``models:`` has one per entry, each scaled on
its own signals (the gateway's series labelled with its name, the engine load of its replicas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmfleet.autoscaling.controller import Controller
from llmfleet.config import ModelSettings
from llmfleet.fleet.local_provider import LocalProvider
from llmfleet.fleet.registrar import GatewayRegistrar
from llmfleet.fleet.supervisor import Supervisor


def model_slug(name: str) -> str:
    """A model name as a folder and replica-name part (``meta-llama/Llama-3.1-8B`` -> ``meta-llama-Llama-3.1-8B``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


@dataclass
class ModelFleet:
    """The replicas of one model and what manages them."""

    settings: ModelSettings
    sup: Supervisor
    registrar: GatewayRegistrar
    controller: Controller | None = None
    provider: LocalProvider | None = None

    @property
    def name(self) -> str:
        """The served model name."""
        return self.settings.name
