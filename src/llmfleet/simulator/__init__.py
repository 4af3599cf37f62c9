"""The fleet simulator: a day of traffic over thousands of replicas in seconds, driving llmfleet's own routing,
health and autoscaling objects on a simulated clock (``llmfleet simulate``; see docs/simulator.md).

Modules: :mod:`.core` (event loop, clock), :mod:`.stepcost` and :mod:`.replica` (the fast engine model),
:mod:`.workload` (traffic), :mod:`.fleet` (routing and the request lifecycle), :mod:`.control` (probes, scrapes,
autoscaler), :mod:`.events` (failures, spot, region loss), :mod:`.results`, :mod:`.runner`, :mod:`.report`,
:mod:`.closedloop` (one replica under a benchmark's closed loop),
:mod:`.cli`.
"""

from llmfleet.simulator.core import EventLoop, SimClock, SimulationError, run_sync
from llmfleet.simulator.runner import SimOptions, compare, run

__all__ = ["EventLoop", "SimClock", "SimOptions", "SimulationError", "compare", "run", "run_sync"]
