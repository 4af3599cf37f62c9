"""llmfleet: run a fleet of vLLM (or simulated) inference replicas behind one OpenAI-compatible gateway."""

__version__ = "0.1.0"
