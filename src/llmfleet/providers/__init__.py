"""Actuators behind one interface: local processes and Kubernetes Deployments."""
