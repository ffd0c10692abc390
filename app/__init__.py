"""The application layer: the `kilowatch` command, the demo, process orchestration and the evaluation harness.

It may import every part (agent, collector, sim) and the core (kilowatch); nothing imports it.
"""
