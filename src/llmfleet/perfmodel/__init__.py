"""The GPU performance model shared by the simulated engine, the planner and the fleet simulator."""

from llmfleet.perfmodel.catalog import GPU, Catalog, Model, Price, load_catalog
from llmfleet.perfmodel.model import Efficiency, PerfModel, SeqWork, SteadyState

__all__ = [
    "GPU",
    "Catalog",
    "Efficiency",
    "Model",
    "PerfModel",
    "Price",
    "SeqWork",
    "SteadyState",
    "load_catalog",
]
