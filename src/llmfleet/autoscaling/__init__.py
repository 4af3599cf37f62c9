"""Autoscaling: signals over sliding windows, a pipeline of small pure functions, and a controller loop."""
