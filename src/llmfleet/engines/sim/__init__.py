"""The simulated vLLM engine: vLLM's OpenAI API and metrics, continuous batching paced by the performance model."""
