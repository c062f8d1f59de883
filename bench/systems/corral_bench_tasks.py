"""Durable task functions for the benchmark's workers (the agent imports this module: --tasks)."""
import corral


@corral.task
def durable_noop(i):
    return i
