"""Generation speed of the traffic simulator, with the SDK and with the direct path.

    .venv/bin/python bench/simulator.py                    # 20 simulated minutes each way
    .venv/bin/python bench/simulator.py --hours 6 --only direct

Prints simulated events, wall and CPU seconds, events/s and the simulated-time speed-up.
Encoding to JSONL is included (what `paywatch simulate -o` pays); writing to disk is not.
The run starts at 10:00 in the customers' time zone, so the hours include the lunch peak.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from paywatch.contract import encode
from paywatch.simulator import simulate


def measure(telemetry: str, seconds: float, seed: int, keep_records: bool) -> None:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run = simulate(["normal"], seed=seed, duration=seconds, telemetry=telemetry, keep_records=keep_records)
    n = size = 0
    for event in run:
        n += 1
        size += len(encode(event)) + 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(
        f"{telemetry:>6}: {seconds / 3600:.2f} simulated h, {n:,} events ({size / 1e6:.0f} MB JSONL), "
        f"{run.sim._n_orders:,} orders; wall {wall:.1f} s, cpu {cpu:.1f} s; "
        f"{n / wall:,.0f} events/s; {seconds / wall:,.0f}x real time; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


def python_speed() -> float:
    """CPU seconds for 3M integer additions: ~0.12 s on an idle modern core. Divides out a
    loaded machine when comparing figures taken at different times."""
    cpu0 = time.process_time()
    total = 0
    for i in range(3_000_000):
        total += i
    return time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["sdk", "direct"], default=None)
    parser.add_argument(
        "--keep-records", action="store_true", help="keep every attempt for channel_record (the API default)"
    )
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} python_speed={python_speed():.2f} s")
    for telemetry in [args.only] if args.only else ["direct", "sdk"]:
        measure(telemetry, args.hours * 3600, args.seed, args.keep_records)


if __name__ == "__main__":
    main()
