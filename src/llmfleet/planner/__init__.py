"""Capacity and cost planner (``llmfleet plan``): GPUs, replicas and money from the performance model."""

from llmfleet.planner.config import PlanConfig
from llmfleet.planner.plan import Plan, build_plan, infeasibility

__all__ = ["Plan", "PlanConfig", "build_plan", "infeasibility"]
