"""Realistic, deterministic payment traffic with injected incidents and their ground truth."""

from paywatch.simulator.scenarios import Run, parse_scenario, simulate

__all__ = ["Run", "parse_scenario", "simulate"]
