"""Fuzzing what a producer can send: the NDJSON body parser (`judge_lines`), the contract
decoder, and the detectors fed whatever they let through.

The properties, for any body: judging never raises; every non-blank line gets exactly one
verdict (stored, or dead-lettered with a reason), and a line that was a valid event is stored
whatever its neighbours are; no card number survives in what is stored or dead-lettered; and
whatever is stored can be judged by the detectors without an exception, live or replayed.

The corpus is kept two ways: hypothesis's example database in tests/corpus/hypothesis (what it
once found is tried first on every run), and tests/corpus/ingest/, bodies replayed as explicit
cases with the verdict each line must keep (`verdicts.json`: "stored" or a piece of the reason).
When a fuzzer finds a failure, add its minimal body there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from event_strategies import contract_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from pan_corpus import PANS, survivors

from paywatch import contract
from paywatch.contract import Event
from paywatch.detectors.engine import DetectionEngine
from paywatch.intake import UNJUDGED, Intake, judge_lines

CORPUS = Path(__file__).parent / "corpus"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=DirectoryBasedExampleDatabase(CORPUS / "hypothesis"),
)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# Values a producer's bug (or an attacker) puts where the contract expects something sane.
HOSTILE: list[Any] = [
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    10**40,
    -1,
    1e308,
    -1e308,
    5e-324,
    -0.0,
    "1e308",
    "NaN",
    "Infinity",
    "-Infinity",
    "9" * 400,
    "",
    None,
    True,
    [],
    {"nested": {"deeper": [1, 2, {"x": None}]}},
    "\u0000\u202e\ud7ff\ufeff",
    "x" * 3000,
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "2099-01-01T00:00:00Z",
    "1970-01-01T00:00:00+14:00",
]
PATHS = [
    ("@timestamp",),
    ("event", "id"),
    ("event", "dataset"),
    ("event", "action"),
    ("service", "name"),
    ("service", "instance", "id"),
    ("heartbeat", "interval_s"),
    ("heartbeat", "seq"),
    ("heartbeat", "status"),
    ("payment", "order_id"),
    ("payment", "amount_minor"),
    ("payment", "latency_ms"),
    ("payment", "currency"),
    ("payment", "channel"),
    ("payment", "merchant_id"),
    ("labels", "note"),
    ("message",),
]
# Free-text fields: a card number there is masked and the event stored.
TEXT_PATHS = [("message",), ("labels", "note"), ("error", "message"), ("payment", "status")]


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        node = tree.get(name)
        if not isinstance(node, dict):
            node = tree[name] = {}
        tree = node
    tree[path[-1]] = value


def _line(tree: Any) -> bytes:
    return json.dumps(tree, allow_nan=True).encode()


@st.composite
def valid_lines(draw: st.DrawFn) -> tuple[str, bytes]:
    return "valid", _line(draw(contract_events()))


@st.composite
def mutated_lines(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid event with one field set to something hostile, maybe then broken at the byte level."""
    tree = draw(contract_events())
    _set(tree, draw(st.sampled_from(PATHS)), draw(st.sampled_from(HOSTILE) | st.integers() | st.floats()))
    raw = _line(tree)
    cut = draw(st.integers(0, len(raw)))
    damage = draw(st.sampled_from(["none", "invalid utf-8", "truncated", "lone surrogate"]))
    if damage == "invalid utf-8":
        raw = raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])) + raw[cut:]
    elif damage == "truncated":
        raw = raw[:cut]
    elif damage == "lone surrogate":
        raw = raw.replace(b'"', b'"\\ud800', 1)
    return "mutated", raw


@st.composite
def card_lines(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid event with a card number in a free-text field: stored, masked."""
    tree = draw(contract_events())
    pan = draw(st.sampled_from(PANS))
    sep = draw(st.sampled_from(["", " ", "-"]))
    written = sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
    paths = [p for p in TEXT_PATHS if p[0] != "payment" or "payment" in tree]
    _set(tree, draw(st.sampled_from(paths)), f"card {written} declined")
    if tree["event"]["dataset"] == "paywatch.app":
        tree.setdefault("message", "m")
    return "valid", _line(tree)


nesting = st.integers(1, 3000).flatmap(
    lambda n: st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b'{"payment":' * n])
)
random_lines = st.binary(max_size=300).map(lambda b: ("random", b.replace(b"\n", b" ")))
lines = st.one_of(
    valid_lines(),
    mutated_lines(),
    card_lines(),
    random_lines,
    nesting.map(lambda b: ("nested", b)),
    st.sampled_from([b"", b"   ", b"\r", b"null", b"[]", b"{}", b"1e999", b'"x"']).map(lambda b: ("odd", b)),
)


def check_body(kinds: list[str], body: bytes) -> tuple[list[Event], list[tuple[int, str, bytes]]]:
    """Judge a body and assert every property of the module docstring; returns the verdicts."""
    accepted, rejected = judge_lines(body, Intake())
    numbered = [(n, raw) for n, raw in enumerate(body.split(b"\n"), start=1) if raw.strip()]
    numbers = [n for n, _, _ in rejected]
    assert len(set(numbers)) == len(numbers)
    assert set(numbers) <= {n for n, _ in numbered}
    assert len(accepted) + len(rejected) == len(numbered)
    for n, reason, _ in rejected:
        assert reason and not reason.startswith(UNJUDGED), (n, reason)
        assert kinds[n - 1] != "valid", f"line {n} was a valid event, rejected: {reason}"
    for event in accepted:
        assert contract.decode(contract.encode(event)) == event  # what is stored re-validates strictly
    written = b"\n".join([contract.encode(e) for e in accepted] + [r.encode() + b" " + raw for _, r, raw in rejected])
    assert survivors(written) == []
    judge_everything(accepted)
    return accepted, rejected


def judge_everything(events: list[Event]) -> None:
    """Live (judged at arrival) and replayed (judged at the producers' watermark): no exception."""
    live, replayed = DetectionEngine(), DetectionEngine()
    for i, event in enumerate(events):
        at = NOW + timedelta(seconds=i)
        live.feed(event, at)
        live.tick(at)
        replayed.feed(event)
        replayed.tick_ms(replayed.clock.now)
    live.tick(NOW + timedelta(days=2))
    replayed.tick_ms(replayed.clock.now + 2 * 86_400_000)


@FUZZ
@given(st.lists(lines, min_size=1, max_size=8))
def test_fuzz_every_line_of_a_body_gets_one_verdict(drawn):
    kinds = [kind for kind, _ in drawn]
    check_body(kinds, b"\n".join(raw for _, raw in drawn))


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_any_bytes_as_a_body(body):
    kinds = ["random"] * (body.count(b"\n") + 1)
    check_body(kinds, body)


@FUZZ
@given(mutated_lines())
def test_fuzz_the_contract_decoder_answers_every_line_with_an_event_or_a_reason(drawn):
    _, raw = drawn
    for decode in (contract.decode, Intake().decode):
        try:
            event = decode(raw)
        except contract.ContractError as exc:
            assert str(exc)
        else:
            assert msgspec.json.decode(contract.encode(event))  # what passes encodes back to JSON


def _corpus() -> list[tuple[str, bytes, list[str]]]:
    verdicts = json.loads((CORPUS / "ingest" / "verdicts.json").read_text())
    return [(name, (CORPUS / "ingest" / name).read_bytes(), want) for name, want in sorted(verdicts.items())]


@pytest.mark.parametrize(("name", "body", "want"), _corpus(), ids=lambda c: c if isinstance(c, str) else "")
def test_corpus_body_keeps_its_verdicts(name, body, want):
    kinds = ["valid" if w == "stored" else "bad" for w in want]
    numbered = [n for n, raw in enumerate(body.split(b"\n"), start=1) if raw.strip()]
    kinds_by_line = ["blank"] * (len(body.split(b"\n")))
    for n, kind in zip(numbered, kinds, strict=True):
        kinds_by_line[n - 1] = kind
    accepted, rejected = check_body(kinds_by_line, body)
    reasons = {n: r for n, r, _ in rejected}
    for n, expected in zip(numbered, want, strict=True):
        if expected != "stored":
            assert expected in reasons.get(n, ""), (n, reasons.get(n))
    assert len(accepted) == want.count("stored")
