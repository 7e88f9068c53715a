"""The ground-truth JSONL format: incidents injected on purpose and what detection must show for
each. The simulator writes it and `paywatch replay --truth` (detectors/scoring.py) reads it, so
both sides use this one type and cannot drift apart."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Expectation(msgspec.Struct, omit_defaults=True, frozen=True):
    """A finding that must open (or, in `recover`, a level that must return) within `within_s`, and
    page on-call unless `page` is False."""

    kind: str
    within_s: float
    channel: str | None = None
    service: str | None = None
    level: str | None = None
    merchant: str | None = None
    page: bool = True  # False: on-call is not woken for it (one instance among live ones), it is recorded

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


class Incident(msgspec.Struct, omit_defaults=True):
    """One ground-truth line. `detect_from` is when detection first becomes possible from the
    events alone (e.g. the first stuck order passing its grace), never earlier."""

    id: str
    scenario: str
    start: datetime
    end: datetime
    detect_from: datetime
    expect: list[Expectation] = msgspec.field(default_factory=list)
    recover: list[Expectation] = msgspec.field(default_factory=list)

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


_encoder = msgspec.json.Encoder()


def encode_incident(incident: Incident) -> bytes:
    return _encoder.encode(incident)


def write_truth(incidents: list[Incident], path: str) -> None:
    with open(path, "wb") as out:
        for incident in incidents:
            out.write(encode_incident(incident) + b"\n")


def read_truth(lines: list[bytes] | list[str]) -> list[Incident]:
    return [msgspec.json.decode(line, type=Incident) for line in lines if line.strip()]
