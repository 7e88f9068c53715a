"""The KQL query of an alert's evidence (its orders, events, channel); the Discover link
around it is `paywatch.kibana.discover_url`."""

from __future__ import annotations

MAX_IDS = 50


def _kql(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _any_of(name: str, values: list[str]) -> str:
    return f"{name}:(" + " or ".join(_kql(v) for v in values[:MAX_IDS]) + ")"


def evidence_query(order_ids: list[str], event_ids: list[str], scope: dict[str, str]) -> str:
    """KQL for the evidence: its orders and events if known, else the channel/service in scope."""
    parts = []
    if order_ids:
        parts.append(_any_of("payment.order_id", order_ids))
    if event_ids:
        parts.append(_any_of("event.id", sorted(set(event_ids))))
    if parts:
        return " or ".join(parts)
    return " and ".join(f"{name}:{_kql(value)}" for name, value in sorted(scope.items()))
