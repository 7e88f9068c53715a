"""Kibana Discover links that open on the evidence of an alert (its orders, events, channel, time).

Kibana keeps Discover state in rison in the URL fragment; only strings need care there
(`!` and `'` are escaped with `!`), and the query itself is KQL.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

MAX_IDS = 50


def _rison(text: str) -> str:
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


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


def discover_url(kibana_url: str, data_view: str, query: str, start: datetime, end: datetime | None) -> str:
    """A Discover URL over [start, end] (end open: 'now' while the alert still fires)."""
    to = _rison(end.isoformat()) if end else "now"
    state_g = f"(time:(from:{_rison(start.isoformat())},to:{to}))"
    state_a = (
        f"(dataSource:(dataViewId:{_rison(data_view)},type:dataView),query:(language:kuery,query:{_rison(query)}))"
    )
    safe = "():,'!*-._~"
    return f"{kibana_url.rstrip('/')}/app/discover#/?_g={quote(state_g, safe=safe)}&_a={quote(state_a, safe=safe)}"
