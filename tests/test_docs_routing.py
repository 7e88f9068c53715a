"""The Alertmanager routing docs/alerts.md recommends is valid for a real Alertmanager and gives
every alert paywatch pages its own route without `group_wait` (paywatch has already grouped them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from paywatch.alerts.rules import load_rules
from paywatch.devstack import alertmanager_binary

DOC = Path(__file__).resolve().parents[1] / "docs" / "alerts.md"


def _routing() -> str:
    match = re.search(r"Example Alertmanager routing.*?```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/alerts.md lost its routing example"
    return match.group(1)


def test_routing_example_passes_amtool(tmp_path):
    config = tmp_path / "alertmanager.yml"
    names = {r["receiver"] for r in yaml.safe_load(_routing())["route"]["routes"]} | {"oncall"}
    receivers = "receivers:\n" + "".join(f"  - name: {n}\n" for n in sorted(names))
    config.write_text(_routing() + receivers)
    amtool = Path(alertmanager_binary(install=True)).with_name("amtool")
    done = subprocess.run([str(amtool), "check-config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_paging_alert_skips_group_wait():
    routes = yaml.safe_load(_routing())["route"]["routes"]
    fast = [r for r in routes if r.get("group_wait") == "0s"]
    assert len(fast) == 1
    pattern = re.fullmatch(r'alertname=~"(.*)"', fast[0]["matchers"][0]).group(1)
    paging = {rule.alertname for rule in load_rules().rules if rule.page}
    routed = set(pattern.split("|"))
    assert routed == paging, f"route names {routed ^ paging} wrongly"
