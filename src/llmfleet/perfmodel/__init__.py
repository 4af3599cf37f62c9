"""The GPU performance model shared by the simulated engine, the planner and the fleet simulator."""

from llmfleet.perfmodel.catalog import GPU, Catalog, Model, Price, load_catalog
from llmfleet.perfmodel.model import Efficiency, PerfModel, SeqWork, SteadyState
from llmfleet.perfmodel.profile import EngineSettings, Profile, load_profile, save_profile

__all__ = [
    "GPU",
    "Catalog",
    "Efficiency",
    "EngineSettings",
    "Model",
    "PerfModel",
    "Price",
    "Profile",
    "SeqWork",
    "SteadyState",
    "load_catalog",
    "load_profile",
    "save_profile",
]
