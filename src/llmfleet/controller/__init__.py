"""``llmfleet autoscaler``: the autoscaling controller as a long-running Kubernetes controller (service wiring in
:mod:`llmfleet.controller.service`, the command in :mod:`llmfleet.controller.cli`)."""
