"""An alert state change as a stored document (dataset `paywatch.alert`, topic `paywatch.alerts`).

The same document is the generic webhook's payload, so what a receiver got and what
Elasticsearch holds never differ. `event.id` is derived from the change, so a replayed
or re-published change lands on the same Elasticsearch document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Final

from paywatch.alerts.model import AlertChange, Delivery
from paywatch.ids import stable_id

ALERT: Final = "paywatch.alert"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def alert_document(change: AlertChange, deliveries: Sequence[Delivery] = ()) -> dict[str, Any]:
    alert = change.alert
    mine = [d for d in deliveries if alert.fingerprint in d.fingerprints]
    doc: dict[str, Any] = {
        "@timestamp": change.at.isoformat(),
        "event": {
            "id": stable_id(alert.fingerprint, change.reason, alert.status, change.at.isoformat()),
            "dataset": ALERT,
            "action": change.reason,
        },
        "alert": {
            "fingerprint": alert.fingerprint,
            "name": alert.name,
            "status": alert.status,
            "severity": alert.labels.get("severity"),
            "page": change.page,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "starts_at": _iso(alert.starts_at),
            "ends_at": _iso(alert.ends_at),
            "order_count": len(alert.order_ids),
            "deliveries": [{k: v for k, v in asdict(d).items() if k != "fingerprints" and v is not None} for d in mine],
            # "sink: delivered|failed", one per delivery: the deliveries array is not nested in
            # Elasticsearch, so counting its sub-fields together would pair any sink with any outcome.
            "delivery_results": [f"{d.sink}: {'delivered' if d.ok else 'failed'}" for d in mine],
        },
    }
    payment = {
        k: v
        for k, v in {"channel": alert.labels.get("channel"), "merchant_id": alert.labels.get("merchant")}.items()
        if v
    }
    if alert.order_ids:
        payment["order_id"] = list(alert.order_ids)
    if payment:
        doc["payment"] = payment
    if "service" in alert.labels:
        doc["service"] = {"name": alert.labels["service"]}
    return doc
