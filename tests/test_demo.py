"""`paywatch demo`, the README's first command: the simulated incident, caught and reported."""

import subprocess
import sys

from test_report import assert_renders_in_chromium


def test_demo_catches_every_injected_incident_with_no_false_alarm(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "paywatch.app.cli", "demo", "--speed", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = run.stdout
    for expected in ("paid_but_pending_i", "channel_health", "service_down", "false incident alerts: 0"):
        assert expected in summary, summary[-3000:]
    assert "MISSED" not in summary
    report = out / "report.html"
    page = report.read_text()
    assert "callback_outage" in page and "channel_down" in page and "service_dies" in page
    assert_renders_in_chromium(report, tmp_path)
