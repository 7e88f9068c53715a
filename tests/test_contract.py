import json
from pathlib import Path

import pytest

from paywatch import contract, finding
from paywatch.app.schema import render
from paywatch.contract import ContractError, decode
from paywatch.pan import mask_event, mask_text, mask_tree

ROOT = Path(__file__).resolve().parents[1]


def payment(**over):
    doc = {
        "@timestamp": "2026-11-22T10:00:00.123Z",
        "event": {
            "id": "e1",
            "dataset": "paywatch.payment",
            "action": "channel_callback",
            "outcome": "success",
        },
        "service": {"name": "callback-receiver", "instance": {"id": "cb-1"}},
        "payment": {
            "order_id": "o1",
            "attempt_id": "a1",
            "channel": "wechatpay",
            "amount_minor": 1250,
            "currency": "CNY",
        },
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_valid_payment_event_round_trips():
    ev = decode(payment())
    assert ev.payment.amount_minor == 1250
    assert ev.key == "o1"
    assert ev.timestamp.utcoffset().total_seconds() == 0
    assert decode(contract.encode(ev)) == ev


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (
            payment(payment={"order_id": "o1", "attempt_id": "a1", "channel": "x", "amount_minor": "12.50"}),
            "amount_minor",
        ),
        (
            payment(payment={"order_id": "o1", "attempt_id": "a1", "channel": "x", "amount_minor": -1}),
            "amount_minor",
        ),
        (payment(event={"id": "e1", "dataset": "paywatch.unknown"}), "dataset"),
        (payment(event={"id": "", "dataset": "paywatch.payment", "action": "order_paid"}), "event.id"),
        (payment(event={"id": "e1", "dataset": "paywatch.payment", "action": "teleported"}), "teleported"),
        (payment(payment={"order_id": "o1", "attempt_id": "a1"}), "payment.channel is required"),
        (payment(**{"@timestamp": "2026-11-22T10:00:00"}), "timezone"),
        (b"{" + b'"x":"' + b"a" * 70000 + b'"}', "over the"),
    ],
)
def test_invalid_events_are_rejected_with_the_reason(raw, reason):
    with pytest.raises(ContractError, match=reason):
        decode(raw)


def test_published_schemas_match_the_code():
    for name in ("event", "finding"):
        assert (ROOT / "schemas" / f"{name}.schema.json").read_text() == render(name)


def test_pan_is_masked_in_free_text_but_ids_are_kept():
    assert mask_text("card 4111 1111 1111 1111 declined") == "card 4111 11** **** 1111 declined"
    assert mask_text("4111111111113") == "4111111111113"  # fails Luhn: not a card
    ev = decode(payment(message="x", labels={"note": "pan=5555555555554444"}))
    mask_event(ev)
    assert ev.labels["note"] == "pan=555555******4444"
    # A Luhn-valid order id is kept; an "order id" that is a Visa card number is not.
    tree = mask_tree({"order_id": "2026112600000003", "refund_id": "4111111111111111", "text": ["4111111111111111"]})
    assert tree == {"order_id": "2026112600000003", "refund_id": "411111******1111", "text": ["411111******1111"]}


def test_finding_ids_are_stable():
    from datetime import UTC, datetime

    at = datetime(2026, 11, 22, tzinfo=UTC)
    a = finding.make_finding(
        at=at, kind="duplicate_charge", state="open", fingerprint="f", severity="warning", summary="s"
    )
    b = finding.make_finding(
        at=at, kind="duplicate_charge", state="open", fingerprint="f", severity="warning", summary="s"
    )
    assert a.event.id == b.event.id
    assert finding.decode_finding(finding.encode_finding(a)) == a


def test_dead_letter_bytes_are_masked_even_when_not_json_or_utf8():
    from paywatch.pan import mask_bytes

    raw = b"\xff\xfe{broken card=4111-1111-1111-1111 \xe4\xb8\xad"
    assert mask_bytes(raw) == b"\xff\xfe{broken card=4111-11**-****-1111 \xe4\xb8\xad"
    assert mask_bytes(b"order 12345") == b"order 12345"
