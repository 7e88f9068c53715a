"""What operators ask of stored history, answered the same way by SQLite and Elasticsearch.

`paywatch orders show`, `paywatch alerts list` and `paywatch incidents` read through this
interface, so the embedded single-machine backend and the Kafka + Elasticsearch backend
give the same answers. Documents are the contract's JSON objects (nested ECS fields).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from paywatch.finding import holds_open, is_incident_kind

Doc = Mapping[str, Any]


class HistoryReader(Protocol):
    def order_timeline(self, order_id: str) -> list[dict[str, Any]]:
        """Every stored document about one business order (payments, findings, actions, alerts), oldest first."""
        ...

    def alerts(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest state of each alert (by fingerprint), newest first; `status` firing|resolved filters."""
        ...

    def incidents(self, limit: int = 100) -> list[dict[str, Any]]:
        """Incident-level findings, one row per fingerprint: see `summarise_incidents`."""
        ...


def get(doc: Doc, dotted: str) -> Any:
    """`get(doc, "payment.order_id")` on nested ECS objects (or flat dotted keys)."""
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def fingerprint_of(doc: Doc) -> str | None:
    return get(doc, "finding.fingerprint") or get(doc, "alert.fingerprint")


def is_incident_doc(doc: Doc) -> bool:
    return is_incident_kind(get(doc, "finding.kind"), get(doc, "finding.level"))


def summarise_incidents(findings: Iterable[Doc]) -> list[dict[str, Any]]:
    """Fold incident-level findings (oldest first) into one row per fingerprint.

    A channel going back to healthy closes its channel_health incident, as does a
    `resolved` state for every other kind.
    """
    rows: dict[str, dict[str, Any]] = {}
    for doc in findings:
        fp = get(doc, "finding.fingerprint")
        if fp is None:
            continue
        closes = not holds_open(get(doc, "finding.state"), get(doc, "finding.level"))
        row = rows.get(fp)
        if row is None:
            if closes or not is_incident_doc(doc):
                continue
            row = rows[fp] = {
                "fingerprint": fp,
                "kind": get(doc, "finding.kind"),
                "severity": get(doc, "finding.severity"),
                "summary": get(doc, "finding.summary"),
                "channel": get(doc, "payment.channel"),
                "service": get(doc, "service.name"),
                "merchant": get(doc, "payment.merchant_id"),
                "opened_at": doc["@timestamp"],
                "resolved_at": None,
                "updates": 0,
            }
        row["updates"] += 1
        if closes:
            row["resolved_at"] = doc["@timestamp"]
        else:
            row["resolved_at"] = None
            row["summary"] = get(doc, "finding.summary")
            row["severity"] = get(doc, "finding.severity")
    return sorted(rows.values(), key=lambda r: r["opened_at"], reverse=True)


def latest_alerts(alert_docs: Iterable[Doc], status: str | None, limit: int) -> list[dict[str, Any]]:
    """Keep the newest document per alert fingerprint (input oldest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for doc in alert_docs:
        fp = fingerprint_of(doc)
        if fp is not None:
            latest[fp] = dict(doc)
    rows = sorted(latest.values(), key=lambda d: d["@timestamp"], reverse=True)
    if status is not None:
        rows = [r for r in rows if get(r, "alert.status") == status]
    return rows[:limit]
