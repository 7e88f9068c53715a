"""Hypothesis strategies for producer input, shared by the intake tests and the ingest fuzzers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from paywatch import contract

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)
)


@st.composite
def contract_events(
    draw: st.DrawFn, ids: st.SearchStrategy[str] = ids, words: st.SearchStrategy[str] = words
) -> dict[str, Any]:
    """Valid contract events of the three datasets, as nested builtins; `ids` and `words` draw
    their ids and their other text."""
    dataset = draw(st.sampled_from(["paywatch.payment", "paywatch.heartbeat", "paywatch.app"]))
    tree: dict[str, Any] = {
        "@timestamp": draw(times).isoformat().replace("+00:00", "Z"),
        "event": {"id": draw(ids), "dataset": dataset},
        "service": {"name": draw(ids), "instance": {"id": draw(ids)}},
    }
    if draw(st.booleans()):
        tree["labels"] = draw(st.dictionaries(words, words, max_size=3))
    if dataset == "paywatch.heartbeat":
        tree["heartbeat"] = {
            "interval_s": draw(st.floats(min_value=0.001, max_value=contract.MAX_INTERVAL_S)),
            "seq": draw(st.integers(0, 2**53)),
            "status": draw(st.sampled_from(["up", "degraded", "stopping"])),
        }
        if draw(st.booleans()):
            tree["heartbeat"]["checks"] = draw(
                st.dictionaries(words, st.sampled_from(["ok", "fail"]), min_size=1, max_size=3)
            )
        return tree
    payment = {"order_id": draw(ids)}
    if dataset == "paywatch.payment":
        action = draw(st.sampled_from(sorted(contract.PAYMENT_ACTIONS)))
        tree["event"]["action"] = action
        payment.update(attempt_id=draw(ids), channel=draw(words))
    else:
        tree["log"] = {"level": draw(st.sampled_from(["info", "warn", "error", "fatal"]))}
        tree["message"] = draw(words)
    payment["amount_minor"] = draw(st.integers(0, 2**62))
    if draw(st.booleans()):
        payment["currency"] = draw(st.sampled_from(["CNY", "EUR"]))
        payment["error_category"] = draw(st.sampled_from(["user", "channel", "system", "limit"]))
    tree["payment"] = payment
    return tree
