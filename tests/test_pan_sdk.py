"""The SDK: no corpus card number reaches the transport, the spill file or the SDK's own
diagnostics log (`paywatch.sdk`, which runs inside the payment service's logging), whatever
the call; Luhn-valid order ids are sent whole."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

from pan_corpus import ORDER_IDS, PANS, sample, survivors

from paywatch.app.config import Config
from paywatch.collectors.sdk import open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.collectors.transports import KeepWaiting, Outcome, Record
from paywatch.contract import decode


class Transport:
    name = "capture"

    def __init__(self) -> None:
        self.up = False
        self.received: list[Record] = []

    def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
        if not self.up:
            return Outcome.all_retry(len(records), f"receiver down while sending {PANS[0]}")
        self.received.extend(records)
        return Outcome()

    def close(self) -> None:
        pass


FIELDS = ("status", "error_code", "method", "message", "note", "refund_reason")


def test_no_card_number_reaches_the_transport_the_spill_file_or_the_sdk_log(tmp_path: Path):
    diagnostics = io.StringIO()
    handler = logging.StreamHandler(diagnostics)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    sdk_log = logging.getLogger("paywatch.sdk")
    sdk_log.addHandler(handler)
    transport = Transport()
    settings = SdkSettings(
        retry_interval_s=0.01, retry_max_interval_s=0.05, spill_dir=tmp_path / "spool", problem_log_interval_s=0.01
    )
    log = open_logger("gateway", config=Config(sdk=settings), transport=transport, heartbeat=False)  # type: ignore[arg-type]
    try:
        for i, (_pan, _fmt, text) in enumerate(sample(150)):
            order = ORDER_IDS[i % len(ORDER_IDS)]
            log.payment(
                "payment_requested",
                order_id=order,
                attempt_id=f"{order}01",
                channel="alipay",
                **{FIELDS[i % len(FIELDS)]: text},
            )
            log.info("charging %s for order %s", text, order)
        for i, pan in enumerate(PANS):
            log.payment(f"charged_{pan}", order_id="o")  # invalid action: its reason quotes the value
            log.payment("order_created", order_id=pan)  # a card number as an id: refused by the policy
            log.payment("order_created", order_id=f"o{i}", labels={"refund_id": pan})
            try:
                raise ValueError(f"card {pan} declined")
            except ValueError:
                log.exception("charge failed", order_id=f"o{i}")
        log.flush(2)  # calls are judged in the drain thread, which spills them (the receiver is down)
        stats = log.stats()
        assert stats["dropped_invalid"] == 3 * len(PANS), stats
        spilled = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
        assert spilled
        transport.up = True
        assert log.flush(20)
    finally:
        log.close(timeout=5)
        sdk_log.removeHandler(handler)
    sent = b"\n".join(r.value for r in transport.received)
    text = diagnostics.getvalue()
    assert "dropped_invalid" in text and "receiver down" in text  # the SDK did report, masked
    assert {"sent": survivors(sent), "spilled": survivors(spilled), "sdk log": survivors(text)} == {
        "sent": [],
        "spilled": [],
        "sdk log": [],
    }
    events = [decode(r.value) for r in transport.received]
    orders = {e.payment.order_id for e in events if e.payment is not None}
    assert set(ORDER_IDS) <= orders
    reports = [e for e in events if e.labels.get("sdk_rejected_event")]
    assert len(reports) == 3 * len(PANS)
    assert any(e.error.message.startswith("payment.order_id is a ") for e in reports)
    named = [e for e in events if e.message and e.message.startswith("charging") and e.payment]
    assert all(e.message.endswith(f"for order {e.payment.order_id}") for e in named)
