"""Realistic, deterministic payment traffic with injected incidents and their ground truth.

    from paywatch.simulator import simulate
    run = simulate(["callback_outage:channel=alipay,start=5m,duration=10m"], seed=7, duration="30m")
    events = list(run)          # contract Events, in event-time order
    run.incidents               # ground truth, once iterated
    run.truth.channel_record("alipay", attempt_id=...)   # what the channel really did

Imported lazily: `paywatch.config` reads this package's settings, and the simulation itself
imports the SDK, which reads `paywatch.config`.
"""

from typing import Any

__all__ = ["Run", "parse_scenario", "simulate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from paywatch.simulator import scenarios

        return getattr(scenarios, name)
    raise AttributeError(name)
