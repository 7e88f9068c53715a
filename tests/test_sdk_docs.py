"""The examples in docs/contract.md are valid events, and the page documents every field and action."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from paywatch.contract import PAYMENT_ACTIONS, Event, decode

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "contract.md").read_text()


def test_every_json_example_on_the_contract_page_is_a_valid_event():
    examples = re.findall(r"```json\n(.*?)```", PAGE, flags=re.S)
    assert len(examples) >= len(PAYMENT_ACTIONS) + 2
    events = [decode(example.encode()) for example in examples]
    assert {e.event.action for e in events if e.event.dataset == "paywatch.payment"} == PAYMENT_ACTIONS
    assert {e.event.dataset for e in events} == {"paywatch.payment", "paywatch.heartbeat", "paywatch.app"}


def field_paths(t: msgspec.inspect.Type, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf field of a contract struct, as they appear on the wire."""
    if isinstance(t, msgspec.inspect.UnionType):
        return set().union(*(field_paths(u, prefix) for u in t.types))
    if isinstance(t, msgspec.inspect.NoneType):
        return set()
    if not isinstance(t, msgspec.inspect.StructType):
        return {prefix.rstrip(".")} if prefix else set()
    return set().union(*(field_paths(f.type, f"{prefix}{f.encode_name}.") for f in t.fields))


def test_every_contract_field_is_documented():
    documented = set(re.findall(r"^\| `([a-z_@.]+)`", PAGE, flags=re.M))
    fields = field_paths(msgspec.inspect.type_info(Event))
    assert "payment.amount_minor" in fields and "service.instance.id" in fields
    assert fields - documented == set()
