"""Load generation: workloads (conversations with shared prefixes, random prompts) and a closed-loop runner."""
