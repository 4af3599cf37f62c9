"""The fleet as the control and data planes see it: replicas, their states and load."""
