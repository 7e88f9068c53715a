"""Every script under bench/ runs at a tiny size and prints its figures, so none rots between
measurements. No timing is asserted: these check that each bench still works end to end
against the real servers it measures, and prints the lines docs/performance.md quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PAYWATCH_DEVSTACK_KEEP": "1"},
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_sdk_bench_prints_the_sdk_beside_the_raw_producer(kafka_bootstrap):
    out = run_bench("sdk.py", "--events", "300", "--rounds", "1", "--bootstrap", kafka_bootstrap)
    assert "round 1 raw:" in out and "round 1 sdk:" in out
    assert "caller CPU per event: SDK" in out and "raw producer" in out
    assert "delivered to Kafka: SDK" in out
    assert "spilled to disk: 300 events" in out  # the Kafka-down part: every call buffered, then spilled


def test_collector_bench_prints_the_collector_beside_the_ideal_pipeline(kafka_bootstrap, es_url):
    out = run_bench(
        "collector.py", "--events", "600", "--rounds", "1", "--batch-size", "200",
        "--bootstrap", kafka_bootstrap, "--es-url", es_url,
    )  # fmt: skip
    assert "round 1 ideal    :" in out and "(stored 600 of 600)" in out
    assert out.count("(stored 600 of 600)") == 2, out  # both pipelines stored every event
    assert "CPU per event: collector" in out and "wall throughput: collector" in out


def test_detectors_bench_prints_replay_against_decoding_alone():
    out = run_bench("detectors.py", "--events", "3000", "--open-orders", "1000")
    assert "decoding alone (msgspec, typed contract with its checks):" in out
    assert "× decoding alone; detection is" in out
    assert "memory per in-flight order at 1,000 open orders" in out


@pytest.mark.slow
def test_vs_prometheus_bench_runs_both_stacks_on_the_same_incidents():
    """Starts its own Prometheus and Alertmanager servers (Debian's packages) and plays 20 s of normal
    traffic and 40 s of incidents in real time."""
    out = run_bench("vs_prometheus.py", "--quick", timeout=400)
    for profile in ("default: scrape 15s, evaluation 15s, for: 1m, group_wait: 30s", "aggressive: scrape 5s"):
        assert f"\n{profile}" in out
    for incident in ("channel down", "callback outage", "silent service"):
        assert out.count(f"  {incident} ") == 2, out
    assert out.count("false pages, paywatch:") == 2 and out.count("false pages, prometheus:") == 2


def test_alerts_bench_prints_its_rates():
    out = run_bench("alerts.py", "--orders", "200", "--channels", "2")
    assert "open    200 stuck orders on 2 channels:" in out and "findings/s" in out
    assert "bytes per open order" in out


def test_compensation_burst_bench_answers_every_query_within_the_budget():
    out = run_bench("compensation_burst.py", "--orders", "40", "--qps", "50", "--concurrency", "4")
    assert "answered=40 " in out
    peak = int(out.split("peak_requests_in_any_1s_window_at_server=")[1].split()[0])
    assert peak <= 50  # the budget, not a timing: a burst over it is a bug


def test_simulator_bench_prints_its_speed():
    out = run_bench("simulator.py", "--hours", "0.01", "--only", "direct")
    assert "python_speed=" in out
    assert "direct: 0.01 simulated h," in out and "events/s" in out


def test_ingest_bench_prints_rates_latencies_and_the_overload_ceiling():
    out = run_bench(
        "ingest.py", "--seconds", "1", "--clients", "1,2", "--overload-clients", "6", "--overload-seconds", "2"
    )
    for clients in (1, 2):
        assert f"{clients:>2} clients: paywatch " in out and "× the floor's rate" in out
    assert "storage floor:" in out and "events/s decoded and written to SQLite" in out
    assert "overload: 6 clients" in out and "RSS idle" in out and "peak" in out
