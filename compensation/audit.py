"""Audit documents (dataset `paywatch.action`, topic paywatch.actions): one per compensating
query, repair, refund candidate, refund, declined action, give-up and unavailable query API.

Each says who or what acted (`action.actor`), on which rule and evidence, from which status
to which, and for a query: the request summary (never credentials), the raw answer
(card numbers masked), the mapped outcome and the latency. `event.id` is derived from
what the document records, so a replay lands on the same Elasticsearch document.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final, Literal

from paywatch.compensation.channels import QueryResult
from paywatch.ids import stable_id
from paywatch.pan import mask_tree

ACTION: Final = "paywatch.action"
ActionType = Literal[
    "query",
    "repair",
    "repair_declined",
    "refund_candidate",
    "refund",
    "refund_declined",
    "query_unavailable",
    "gave_up",
]
# Actions an order system acts on (and the optional webhook delivers); the rest are records.
ORDER_SYSTEM_ACTIONS: Final = frozenset({"repair", "refund"})


def query_section(result: QueryResult) -> dict[str, Any]:
    raw = (
        result.raw if isinstance(result.raw, str) or result.raw is None else json.dumps(result.raw, ensure_ascii=False)
    )
    section: dict[str, Any] = {
        "seq": result.request.seq,
        "purposes": list(result.request.purposes),
        "request": result.request_summary,
        "outcome": result.outcome,
        "not_found": result.not_found,
        "api_failed": result.api_failed,
        "throttled": result.throttled,
        "latency_ms": result.latency_ms,
        "unknown_status": result.unknown_status,
        "refunded": result.refunded,
    }
    optional = {
        "untrusted": result.untrusted,
        "credentials": result.credentials,
        "sent_at": result.sent_at.isoformat() if result.sent_at else None,
        "amount_minor": result.amount_minor,
        "refunded_minor": result.refunded_minor,
        "currency": result.currency,
        "http_status": result.http_status,
        "channel_status": result.channel_status,
        "error": result.error,
        "retry_after_s": result.retry_after_s,
        "response_body": raw[:8000] if raw is not None else None,
    }
    section.update({k: v for k, v in optional.items() if v is not None})
    return section


def action_doc(
    *,
    at: datetime,
    type: ActionType,
    channel: str | None,
    order_id: str,
    attempt_id: str | None,
    actor: str,
    dry_run: bool,
    rule: str,
    reason: str,
    id_parts: tuple[object, ...],
    outcome: str | None = None,
    evidence: dict[str, Any] | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    query: QueryResult | None = None,
) -> dict[str, Any]:
    payment = {"order_id": order_id, "attempt_id": attempt_id, "channel": channel}
    action = {
        "type": type,
        "rule": rule,
        "reason": reason,
        "actor": actor,
        "dry_run": dry_run,
        "from_status": from_status,
        "to_status": to_status,
        "evidence": evidence or {},
    }
    doc: dict[str, Any] = {
        "@timestamp": at.isoformat(),
        "event": {"id": stable_id(type, *id_parts), "dataset": ACTION, "action": type},
        "payment": {k: v for k, v in payment.items() if v is not None},
        "action": {k: v for k, v in action.items() if v is not None},
    }
    if outcome is not None:
        doc["event"]["outcome"] = outcome
    if query is not None:
        doc["query"] = query_section(query)
    return mask_tree(doc)
