"""Alert rules: which findings page, which are only recorded, and how their alerts are labelled.

Rules live in a YAML file (default: `alerts/rules.yaml`, shipped with the package) so the
on-call team can change what wakes them up without a release. A rule matches a finding
kind (and optionally a level); findings matching the same rule and the same `group_by`
labels roll up into one alert, which pages only once `page_at` of them are open: one
stuck order is recorded, a channel's worth of them is an incident.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from paywatch.finding import Kind, Level

# Kinds the alert process raises about itself (see watchdog.py), besides the detectors' kinds.
SELF_KINDS = ("paywatch_stalled",)
KNOWN_KINDS = frozenset((*get_args(Kind), *SELF_KINDS))
GroupLabel = Literal["channel", "service", "merchant"]
AlertSeverity = Literal["info", "warning", "critical"]
TEMPLATE_FIELDS = {"count", "orders", "channel", "service", "merchant", "level", "summary"}


class RulesError(ValueError):
    pass


class Override(BaseModel):
    """What one channel changes in a rule (a noisy low-volume bank pages later, a key wallet sooner)."""

    model_config = ConfigDict(extra="forbid")
    severity: AlertSeverity | None = None
    page: bool | None = None
    page_at: int | None = Field(None, ge=1)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="Finding kind this rule matches.")
    level: Level | None = Field(None, description="Match only findings at this level (channel_health).")
    alertname: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    severity: AlertSeverity
    page: bool = Field(True, description="False: the alert is recorded (stored, logged) but never paged.")
    page_at: int = Field(1, ge=1, description="Open findings in one alert before it pages.")
    group_by: list[GroupLabel] = Field(default_factory=list, description="Finding fields that become labels.")
    summary: str = Field("{summary}", description="Template; fields: " + ", ".join(sorted(TEMPLATE_FIELDS)))
    runbook: str = Field("", description="Anchor in the runbook document (see alerts.runbook_base_url).")
    channels: dict[str, Override] = Field(default_factory=dict, description="Per-channel overrides.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KNOWN_KINDS:
            raise ValueError(f"unknown finding kind {kind!r}; known: {', '.join(sorted(KNOWN_KINDS))}")
        return kind

    @field_validator("summary")
    @classmethod
    def _template_fields(cls, template: str) -> str:
        try:
            template.format_map(dict.fromkeys(TEMPLATE_FIELDS, ""))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad summary template {template!r}: {exc!r}") from None
        return template

    def for_channel(self, channel: str | None) -> Rule:
        """This rule with the channel's overrides applied."""
        override = self.channels.get(channel or "")
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]

    _index: dict[tuple[str, str | None], Rule] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_rule_per_kind_and_level(self) -> Rules:
        for rule in self.rules:
            key = (rule.kind, rule.level)
            if key in self._index:
                raise ValueError(f"two rules match kind={rule.kind} level={rule.level}; the second never runs")
            self._index[key] = rule
        return self

    def match(self, kind: str, level: str | None) -> Rule | None:
        """The rule for a finding: a level-specific rule wins over a rule for the whole kind."""
        return self._index.get((kind, level)) or self._index.get((kind, None))


def load_rules(path: str | Path | None = None) -> Rules:
    """Rules from `path`, or the default rules shipped with paywatch; a bad file is a clear error."""
    try:
        if path is None:
            text = resources.files("paywatch.alerts").joinpath("rules.yaml").read_text()
        else:
            text = Path(path).read_text()
        raw = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"cannot read alert rules {path or 'rules.yaml'}: {exc}") from None
    try:
        return Rules.model_validate(raw)
    except ValidationError as exc:
        raise RulesError(f"invalid alert rules {path or 'rules.yaml'}:\n{exc}") from None
