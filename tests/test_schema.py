"""schemas/event.schema.json gives the ingest's verdict: checked with an independent validator
(jsonschema, Draft 2020-12, formats on) against every example of docs/contract.md, every
documented refused event, and every single-step mutation of the examples (a field dropped or
nulled, the dataset or action swapped), each compared with `paywatch.contract.decode`."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from paywatch.contract import PAYMENT_ACTIONS, ContractError, decode

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "contract.md").read_text()
SCHEMA = json.loads((ROOT / "schemas" / "event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
EXAMPLES = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", PAGE, flags=re.S)]
REFUSED = re.findall(r"```json refused\n(.*?)```", PAGE, flags=re.S)


def ingest_accepts(doc: Any) -> bool:
    try:
        decode(json.dumps(doc).encode())
    except ContractError:
        return False
    return True


def schema_accepts(doc: Any) -> bool:
    return VALIDATOR.is_valid(doc)


def test_the_schema_is_valid_draft_2020_12_and_has_the_per_action_rules() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert any("if" in rule for rule in SCHEMA["allOf"])


def test_examples_are_one_line_ndjson_with_a_pretty_view() -> None:
    """Pasted line by line into the NDJSON ingest, every example must arrive whole."""
    blocks = re.findall(r"```json\n(.*?)```", PAGE, flags=re.S)
    one_line = [json.loads(b) for b in blocks if b.count("\n") == 1]
    pretty = [json.loads(b) for b in blocks if b.count("\n") > 1]
    assert len(one_line) >= len(PAYMENT_ACTIONS) + 2
    assert pretty == one_line, "each one-line example is followed by its pretty-printed view"
    ndjson = b"".join(b.encode() for b in blocks if b.count("\n") == 1)
    assert [decode(line) for line in ndjson.splitlines()]


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda d: d["event"]["id"])
def test_every_example_is_accepted_by_both(doc: dict[str, Any]) -> None:
    assert ingest_accepts(doc)
    assert schema_accepts(doc), list(VALIDATOR.iter_errors(doc))


@pytest.mark.parametrize("line", REFUSED, ids=lambda line: json.loads(line)["event"]["id"])
def test_every_documented_refusal_is_refused_by_both(line: str) -> None:
    doc = json.loads(line)
    assert not ingest_accepts(doc)
    assert not schema_accepts(doc)


def _paths(doc: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


def _mutations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in _paths(doc):
        for how in ("drop", "null"):
            mutated = copy.deepcopy(doc)
            parent = mutated
            for key in path[:-1]:
                parent = parent[key]
            if how == "drop":
                del parent[path[-1]]
            else:
                parent[path[-1]] = None
            yield f"{how} {'.'.join(path)}", mutated
    for dataset in ("paywatch.payment", "paywatch.heartbeat", "paywatch.app"):
        mutated = copy.deepcopy(doc)
        mutated["event"]["dataset"] = dataset
        yield f"dataset {dataset}", mutated
    for action in (*sorted(PAYMENT_ACTIONS), "teleported"):
        mutated = copy.deepcopy(doc)
        mutated["event"]["action"] = action
        yield f"action {action}", mutated


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda d: d["event"]["id"])
def test_schema_and_ingest_agree_on_every_single_mutation(doc: dict[str, Any]) -> None:
    disagreements = [(what, ingest_accepts(m)) for what, m in _mutations(doc) if ingest_accepts(m) != schema_accepts(m)]
    assert disagreements == []
