"""Stored ids are persisted `_id`s: the one id function must keep giving the ids that were
already written (known answers computed with the formulas each module used before)."""

from __future__ import annotations

from datetime import UTC, datetime

from paywatch.finding import finding_event_id
from paywatch.ids import content_id, stable_id

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_finding_event_ids_are_unchanged():
    assert finding_event_id("fp-1", "open", None, AT) == "f9b2a7cf7b10c69c089182d3c0053372"
    assert finding_event_id("fp-1", "open", "down", AT) == "2e5c909490cad4c6ada43d04eb508378"


def test_stable_id_joins_its_parts_with_a_bar():
    assert stable_id("repair", "alipay", "a-1", 1) == "bd11000fa861053aa986b10227ad0d36"
    assert stable_id("repair", "alipay", "a-1", 1) == content_id(b"repair|alipay|a-1|1")
    assert len(content_id(b"")) == 32 and content_id(b"a") != content_id(b"b")
