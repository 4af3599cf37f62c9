"""The OpenAI-compatible gateway: routing, health, failover and stream resumption in front of engine replicas."""
