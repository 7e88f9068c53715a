"""Realistic, deterministic payment traffic with injected incidents and their ground truth.

    from paywatch.simulator import simulate
    run = simulate(["callback_outage:channel=alipay,start=5m,duration=10m"], seed=7, duration="30m")
    events = list(run)          # contract Events, in event-time order
    run.incidents               # ground truth, once iterated
    run.truth.channel_record("alipay", attempt_id=...)   # what the channel really did

The simulated services send through the real SDK, so the traffic is what production sees.
"""

from paywatch.simulator.scenarios import Run, parse_scenario, simulate

__all__ = ["Run", "parse_scenario", "simulate"]
