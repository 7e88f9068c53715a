"""One judgement of "is this an incident" and "is it still open", for a decoded finding and for
the stored document of the same finding (the history stores read documents, not findings)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import get_args

from paywatch.finding import INCIDENT_KINDS, Kind, encode_finding, holds_open, is_incident, make_finding
from paywatch.store import is_incident_doc, summarise_incidents

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_finding_and_its_document_are_judged_alike():
    for kind in get_args(Kind):
        for level in (None, "healthy", "degraded", "down"):
            finding = make_finding(
                at=AT, kind=kind, state="open", fingerprint="f", severity="warning", summary="s", level=level
            )
            doc = json.loads(encode_finding(finding))
            assert is_incident(finding) == is_incident_doc(doc), (kind, level)
            expected = kind in INCIDENT_KINDS and not (kind == "channel_health" and level == "healthy")
            assert is_incident(finding) == expected, (kind, level)


def test_a_channel_back_to_healthy_closes_its_incident():
    assert holds_open("open", "down") and not holds_open("resolved", None) and not holds_open("open", "healthy")
    docs = [
        json.loads(
            encode_finding(
                make_finding(
                    at=AT,
                    kind="channel_health",
                    state="open",
                    fingerprint="h",
                    severity="critical",
                    summary="s",
                    level=level,
                )
            )
        )
        for level in ("down", "healthy")
    ]
    [row] = summarise_incidents(docs)
    assert (row["fingerprint"], row["updates"], row["resolved_at"]) == ("h", 2, docs[1]["@timestamp"])
