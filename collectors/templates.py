"""Index templates for paywatch's data streams, with explicit mappings.

Every dataset in `paywatch.elastic.DATASETS` gets one index template
(`logs-<dataset>-*`, any namespace) composed of a common component (ECS fields every
document has) and a component for the dataset's own fields. Ids are keywords, money
is `long` minor units, times are `date`; `event.ingested` (processing time) is mapped
next to `@timestamp` (event time). Strings nobody declared become keywords, so a
stray field is still searchable and never a full-text surprise.

Alert and action documents belong to the alerts and compensation stages: their owners
ship the mapping as `<package>/es_mapping.json`, installed here when present.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from paywatch.elastic import DATASETS

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

# Above Elasticsearch's built-in `logs-*-*` template (priority 100), so ours applies.
PRIORITY: Final = 200
COMMON_COMPONENT: Final = "paywatch@mappings"

KEYWORD: Final = {"type": "keyword", "ignore_above": 1024}
LONG: Final = {"type": "long"}
DATE: Final = {"type": "date"}
TEXT: Final = {"type": "text"}


def _obj(**fields: dict[str, Any]) -> dict[str, Any]:
    return {"properties": fields}


def _keywords(*names: str) -> dict[str, Any]:
    return {name: KEYWORD for name in names}


COMMON_MAPPINGS: Final[dict[str, Any]] = {
    "dynamic_templates": [
        {"strings_as_keyword": {"match_mapping_type": "string", "mapping": KEYWORD}},
    ],
    "properties": {
        "@timestamp": DATE,
        "event": _obj(**_keywords("id", "dataset", "action", "outcome"), ingested=DATE),
        "service": _obj(**_keywords("name", "version"), instance=_obj(id=KEYWORD)),
        "trace": _obj(id=KEYWORD),
        "span": _obj(id=KEYWORD),
        "labels": {"type": "object", "dynamic": True},
        "message": TEXT,
    },
}

PAYMENT_FIELDS: Final = _keywords("order_id", "attempt_id", "channel", "method", "merchant_id")

DATASET_MAPPINGS: Final[dict[str, dict[str, Any]]] = {
    "paywatch.payment": {
        "properties": {
            "payment": _obj(
                **PAYMENT_FIELDS,
                **_keywords("currency", "status", "error_code", "error_category"),
                amount_minor=LONG,
                latency_ms=LONG,
            )
        }
    },
    "paywatch.heartbeat": {
        "properties": {
            "heartbeat": _obj(
                interval_s={"type": "double"},
                seq=LONG,
                status=KEYWORD,
                checks={"type": "object", "dynamic": True},
            )
        }
    },
    "paywatch.app": {
        "properties": {
            "log": _obj(level=KEYWORD),
            "error": _obj(type=KEYWORD, message=TEXT),
        }
    },
    "paywatch.finding": {
        # Evidence figures are counts and ratios side by side: all numbers are doubles, so a
        # ratio arriving after a count never fails on a `long` mapping.
        "dynamic_templates": [
            {
                "finding_figures_numbers": {
                    "path_match": "finding.evidence.figures.*",
                    "match_mapping_type": "long",
                    "mapping": {"type": "double"},
                }
            }
        ],
        "properties": {
            "finding": _obj(
                **_keywords("kind", "state", "fingerprint", "severity", "level"),
                summary=TEXT,
                evidence=_obj(
                    event_ids=KEYWORD,
                    figures={"type": "object", "dynamic": True},
                    attempts=_obj(**_keywords("attempt_id", "channel", "event_id", "currency"), amount_minor=LONG),
                ),
            ),
            "payment": _obj(**PAYMENT_FIELDS),
        },
    },
}

# Datasets whose mapping is shipped by the stage that writes them.
OWNED_MAPPINGS: Final = {"paywatch.alert": "paywatch.alerts", "paywatch.action": "paywatch.compensation"}


def owner_mapping(package: str) -> dict[str, Any]:
    """The owner's `es_mapping.json`, or {} (strings-as-keyword from the common component)."""
    try:
        text = (resources.files(package) / "es_mapping.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return json.loads(text)


def component_name(dataset: str) -> str:
    return f"{dataset}@mappings"


def component_templates() -> dict[str, dict[str, Any]]:
    """Component template name → body (`{"mappings": ...}`)."""
    out = {COMMON_COMPONENT: {"mappings": COMMON_MAPPINGS}}
    for dataset in DATASETS:
        mappings = DATASET_MAPPINGS.get(dataset) or owner_mapping(OWNED_MAPPINGS[dataset])
        out[component_name(dataset)] = {"mappings": mappings}
    return out


def index_templates() -> dict[str, dict[str, Any]]:
    """Index template name → body; one data stream template per dataset, any namespace."""
    return {
        f"logs-{dataset}": {
            "index_patterns": [f"logs-{dataset}-*"],
            "data_stream": {},
            "priority": PRIORITY,
            "composed_of": [COMMON_COMPONENT, component_name(dataset)],
            "_meta": {"managed_by": "paywatch", "description": f"paywatch dataset {dataset}"},
        }
        for dataset in DATASETS
    }


def install_templates(es: Elasticsearch) -> None:
    """Create or update every template (idempotent; existing data streams pick it up on rollover)."""
    for name, body in component_templates().items():
        es.cluster.put_component_template(name=name, template=body)
    for name, body in index_templates().items():
        es.indices.put_index_template(name=name, **body)
