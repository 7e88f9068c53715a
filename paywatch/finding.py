"""Findings: what the detectors conclude, as contract documents (`schemas/finding.schema.json`).

A finding is opened, updated and resolved under one stable fingerprint, so alerting
and storage can deduplicate across restarts and across detector workers. Its
`event.id` is derived from fingerprint, state, level and time: the same finding
re-emitted after a replay lands on the same Elasticsearch document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec
from msgspec import Struct, field

from paywatch.contract import ContractError, Timestamp
from paywatch.ids import stable_id

FINDING: Final = "paywatch.finding"

Kind = Literal[
    "paid_but_pending",
    "paid_but_pending_incident",
    "unknown_attempt",
    "duplicate_charge",
    "duplicate_charge_incident",
    "channel_health",
    "error_code_spike",
    "heartbeat_missing",
    "service_down",
    "service_flapping",
    "clock_skew",
    "cardinality_capped",
    "compensation_gave_up",
    "query_unavailable",
    "untrusted_answer",
    "channel_credentials",
]
State = Literal["open", "resolved"]
# What pages: an incident-level finding that matches no real incident is a false incident.
INCIDENT_KINDS: Final = frozenset(
    {
        "paid_but_pending_incident",
        "duplicate_charge_incident",
        "channel_health",
        "error_code_spike",
        "service_down",
        "heartbeat_missing",
    }
)
Severity = Literal["info", "warning", "critical"]
Level = Literal["healthy", "degraded", "down"]


class AttemptEvidence(Struct, omit_defaults=True):
    attempt_id: str
    channel: str
    event_id: str
    amount_minor: int | None = None
    currency: str | None = None


class Evidence(Struct, omit_defaults=True):
    event_ids: list[str] = field(default_factory=list)
    figures: dict[str, int | float | str] = field(default_factory=dict)
    attempts: list[AttemptEvidence] = field(default_factory=list)


class FindingMeta(Struct, omit_defaults=True):
    kind: Kind
    state: State
    fingerprint: str
    severity: Severity
    summary: str
    evidence: Evidence = field(default_factory=Evidence)
    level: Level | None = None


class FindingEventMeta(Struct, omit_defaults=True):
    id: str
    dataset: Literal["paywatch.finding"]  # required, not defaulted: omit_defaults would drop it from the JSON
    ingested: Timestamp | None = None


class FindingPayment(Struct, omit_defaults=True):
    order_id: str | None = None
    attempt_id: str | None = None
    channel: str | None = None
    method: str | None = None
    merchant_id: str | None = None


class FindingServiceInstance(Struct, omit_defaults=True):
    id: str


class FindingService(Struct, omit_defaults=True):
    name: str
    instance: FindingServiceInstance | None = None


class Finding(Struct, omit_defaults=True, rename={"timestamp": "@timestamp"}):
    timestamp: Timestamp
    event: FindingEventMeta
    finding: FindingMeta
    payment: FindingPayment | None = None
    service: FindingService | None = None


def is_incident_kind(kind: str | None, level: str | None) -> bool:
    """Channel health pages only when it leaves healthy; its recovery is a resolve, not a page.
    Takes the kind and level alone, so a stored document is judged like a decoded finding."""
    return kind in INCIDENT_KINDS and (kind != "channel_health" or level != "healthy")


def is_incident(finding: Finding) -> bool:
    return is_incident_kind(finding.finding.kind, finding.finding.level)


def holds_open(state: str | None, level: str | None) -> bool:
    """A finding holds its problem open; a channel back to healthy closes its health finding
    whatever state it carries."""
    return state == "open" and level != "healthy"


def finding_event_id(fingerprint: str, state: str, level: str | None, at: datetime) -> str:
    return stable_id(fingerprint, state, level or "", at.isoformat())


def make_finding(
    *,
    at: datetime,
    kind: Kind,
    state: State,
    fingerprint: str,
    severity: Severity,
    summary: str,
    evidence: Evidence | None = None,
    level: Level | None = None,
    payment: FindingPayment | None = None,
    service: FindingService | None = None,
) -> Finding:
    return Finding(
        timestamp=at,
        event=FindingEventMeta(id=finding_event_id(fingerprint, state, level, at), dataset=FINDING),
        finding=FindingMeta(
            kind=kind,
            state=state,
            fingerprint=fingerprint,
            severity=severity,
            summary=summary,
            evidence=evidence or Evidence(),
            level=level,
        ),
        payment=payment,
        service=service,
    )


_decoder = msgspec.json.Decoder(Finding)
_encoder = msgspec.json.Encoder()


def decode_finding(raw: bytes | str) -> Finding:
    try:
        return _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ContractError(str(exc)) from None


def encode_finding(finding: Finding) -> bytes:
    return _encoder.encode(finding)


def json_schema() -> dict:
    schema = msgspec.json.schema(Finding)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://paywatch.dev/schemas/finding/v1"
    schema["title"] = "paywatch finding, contract v1"
    return schema
