"""Configuration of the detectors stage (the `detectors:` section of paywatch.yaml).

Defaults come from the field: a minute's grace for the callback, two minutes before
asking the channel, a few seconds of windows for rates. Every per-channel knob can be
overridden under `channels: {<channel>: {...}}`, because a bank that calls back in 5 min
must not be judged by a wallet's 5 s.
"""

from __future__ import annotations

from functools import cached_property
from typing import Protocol

from pydantic import ConfigDict, Field

from paywatch.intake import IntakeSettings
from paywatch.settings import KafkaSettings, Section


class Frozen(Section):
    """Detector settings never change under a running judgement: frozen, so nothing mutates them."""

    model_config = ConfigDict(frozen=True)


class ChannelSettings(Frozen):
    """Knobs that may differ per channel."""

    paid_grace_s: float = Field(
        60.0,
        description="Seconds after a successful charge within which the business must record order_paid "
        "before the order is reported as paid-but-pending.",
    )
    query_after_s: float = Field(
        120.0,
        description="Seconds after an attempt was sent without a final outcome (no callback, no query "
        "result) before an `unknown_attempt` finding asks for a compensating query.",
    )
    not_found_grace_s: float = Field(
        600.0,
        description="Seconds after the attempt during which a channel's 'order not found' answer means "
        "'not landed yet' (unknown), not failure. Same default as `compensation.schedule.not_found_grace_s`: "
        "both judge the same answer, so keep them equal.",
    )
    degraded_min_failure_rate: float = Field(
        0.15,
        description="Absolute floor: a channel whose failure rate is significantly above this (exact binomial "
        "tail below `significance`) is unhealthy whatever its baseline says, so a poisoned baseline can "
        "never hide an outage.",
    )
    degraded_baseline_factor: float = Field(
        4.0,
        description="Below the floor, a channel is unhealthy when its failure rate is significantly above this "
        "multiple of its own baseline failure rate…",
    )
    degraded_baseline_margin: float = Field(
        0.10,
        description="…and the baseline plus this absolute margin.",
    )
    down_failure_rate: float = Field(
        0.9,
        description="An unhealthy channel is `down` when a span's failure rate is above this "
        "(at `lenient_significance`: how bad an outage is needs less proof than that there is one).",
    )
    min_attempts: int = Field(
        5,
        description="A span with fewer finished attempts than this proves nothing either way (health and "
        "error-code shares).",
    )


class DetectorSettings(Frozen):
    # --- per-order detectors -------------------------------------------------
    default: ChannelSettings = Field(
        default_factory=ChannelSettings, description="Channel knobs used when a channel has no override."
    )
    channels: dict[str, ChannelSettings] = Field(
        default_factory=dict,
        description="Per-channel overrides, keyed by `payment.channel`. Unset fields take the defaults of `default`.",
    )
    not_found_codes: list[str] = Field(
        default_factory=lambda: ["not_found", "ORDER_NOT_EXIST", "ORDERNOTEXIST", "TRADE_NOT_EXIST"],
        description="`payment.error_code` values with which channels say 'no such order'.",
    )
    finished_retention_s: float = Field(
        3600.0,
        description="How long a finished order (paid or closed, nothing open) is kept so that late or "
        "re-delivered events are recognised, before its state is evicted.",
    )
    open_order_ttl_s: float = Field(
        86400.0,
        description="An order with no activity for this long is evicted even if unfinished "
        "(abandoned checkouts); its open findings stay with alerting.",
    )
    # --- windows and rollups ---------------------------------------------------
    window_s: float = Field(
        2.0,
        description="Width of the tumbling windows in which counts are taken (and published as partials "
        "between workers). Small windows keep paging latency low.",
    )
    allowed_lateness_s: float = Field(
        2.0,
        description="A window is judged this long after it ends, so slightly late events still count in "
        "their own window; later events count in the oldest open window.",
    )
    health_spans_s: list[float] = Field(
        default_factory=lambda: [10.0, 60.0, 120.0, 300.0, 900.0],
        min_length=1,
        description="Spans (seconds, sliding over the windows) over which channel health and error-code "
        "shares are judged at once: a short span pages fast on a busy channel, a long one proves a quiet "
        "channel's outage. Each costs ten running tallies per channel.",
    )
    degrade_after: int = Field(
        4,
        description="Windows that fail on their own (failure share above the threshold) a significant span "
        "must hold before the channel is marked degraded (or down): a blip shorter than this never pages.",
    )
    recover_after: int = Field(
        10,
        description="Consecutive judgements whose newest evidence is back to normal before a degraded/down "
        "channel is healthy again, or an error-code spike resolves (hysteresis: the exit is slower than "
        "the entry, so a recovering channel does not flap).",
    )
    significance: float = Field(
        1e-5,
        description="A span proves a channel unhealthy (or a code spiking, or a recovery) when the chance of "
        "its count under the threshold rate (exact binomial tail) is below this. Every span is tested every "
        "window, so a single test must be very unlikely to fire by chance.",
    )
    baseline_alpha: float = Field(
        0.02,
        description="EWMA weight of each quiet window in the incident rollups' baselines (stuck and duplicate "
        "orders per window). Windows in an incident are not learned.",
    )
    lenient_significance: float = Field(
        0.025,
        description="Significance of the judge's cautious decisions, where a wrong 'yes' costs little: a "
        "baseline does not learn while a span is significantly (at this level) above a quarter of the way "
        "to the threshold, and a recovering channel or code is not back to normal while its newest span "
        "is significantly above the threshold.",
    )
    baseline_tau_s: float = Field(
        3600.0,
        description="Time constant of a channel's baseline failure rate and error-code shares (an EWMA over "
        "the windows it may learn from; a new channel's is the plain mean of its windows until they are "
        "this many seconds' worth). Hours, not minutes: a baseline following a slow ramp learns the incident.",
    )
    baseline_warmup_s: float = Field(
        1800.0,
        description="For this long after a channel is first seen its error-code baselines learn from every "
        "window (there is no baseline yet to be significantly worse than) and error-code spikes are not "
        "judged. Channel health is judged from the start, against `baseline_prior_failure_rate` and the "
        "absolute floor.",
    )
    baseline_prior_failure_rate: float = Field(
        0.03, description="Baseline failure rate of a channel before any window was learned."
    )
    health_by_method: bool = Field(
        False,
        description="Also judge health per channel × payment method (e.g. alipay:qr vs alipay:app).",
    )
    incident_span_windows: int = Field(
        30,
        description="Sliding span (in windows) over which newly stuck or duplicate-charged orders are "
        "counted for the incident-level findings.",
    )
    pending_incident_min_orders: int = Field(
        5,
        description="Paid-but-pending orders opened on one channel within the incident span needed to page.",
    )
    duplicate_span_windows: int = Field(
        10,
        description="Sliding span (in windows) for duplicate-charged orders: shorter than the stuck-order "
        "span, because customers re-paying now and then is normal and only a burst is news.",
    )
    duplicate_incident_min_orders: int = Field(
        3,
        description="Duplicate-charged orders (per channel, per merchant, and overall) within the span needed "
        "to page; the normal rate is near zero.",
    )
    merchant_span_windows: int = Field(
        150,
        description="Sliding span (in windows) over which stuck orders are counted per merchant and across "
        "all channels: wider than a channel's, because one merchant's jam spreads its orders over every "
        "channel and builds up slowly.",
    )
    merchant_incident_min_orders: int = Field(
        6,
        description="Paid-but-pending orders of one merchant (or, spread over channels and merchants, of the "
        "whole platform) within `merchant_span_windows` needed to page.",
    )
    max_channels: int = Field(
        1000,
        gt=0,
        description="Distinct channels (and channel × method pairs) whose health is judged. A new one past this is "
        "counted, not judged (its stuck and duplicate-charged orders still count in the platform-wide "
        "rollup), and one `cardinality_capped` finding says so.",
    )
    max_merchants: int = Field(
        10000,
        gt=0,
        description="Distinct merchants with stuck or duplicate-charged orders tracked at once (idle ones are "
        "forgotten); past it, as `max_channels`.",
    )
    incident_max_share: float = Field(
        0.6,
        description="A merchant's rollup leaves the incident to the channel's when one channel holds more than "
        "this share of its orders (the overall rollup likewise to a channel's or a merchant's): one jam, "
        "one page, in the narrowest scope that explains it.",
    )
    incident_baseline_factor: float = Field(
        3.0,
        description="Incident rollups also need this multiple of the baseline count for the span, so a "
        "channel with a steady trickle of slow callbacks does not page.",
    )
    incident_resolve_after: int = Field(
        30,
        description="Windows with nothing new before an incident-level rollup resolves.",
    )
    error_code_min_count: int = Field(
        5, description="Occurrences of one customer-side error code a span needs before its share can page."
    )
    error_code_factor: float = Field(
        3.0,
        description="A code spikes when some span shows its share of finished attempts significantly above "
        "this multiple of its baseline share (and above the baseline plus `error_code_margin`).",
    )
    error_code_margin: float = Field(
        0.02,
        description="Absolute margin over the baseline share of a code: a code at under 1 % spikes "
        "when significantly above ~3 % of attempts.",
    )
    # --- heartbeats ------------------------------------------------------------
    heartbeat_grace_factor: float = Field(
        3.0, description="An instance is missing after `interval × grace_factor` seconds of silence."
    )
    required_services: list[str] = Field(
        default_factory=list,
        description="Services that must send heartbeats; one never seen within `startup_grace_s` of the "
        "detector starting is reported down.",
    )
    startup_grace_s: float = Field(60.0, description="Time a required service has to appear after the detector starts.")
    flap_window_s: float = Field(
        600.0, description="Window in which an instance's missing→back transitions are counted."
    )
    flap_threshold: int = Field(
        3,
        description="Missing→back transitions within the flap window after which the instance is reported "
        "once as flapping and its further gaps are summarised instead of paged.",
    )
    heartbeat_forget_s: float = Field(
        86400.0, description="A stopped or missing instance is dropped from the table after this long."
    )
    flapping_page_after_s: float = Field(
        120.0,
        description="A flapping instance silent for longer than this is paged anyway: flapping never hides a death.",
    )
    max_services: int = Field(
        1000,
        gt=0,
        description="Distinct services the heartbeat table tracks. A beat of a new service past this is counted, "
        "not tracked, and one `cardinality_capped` finding says so (a bug or an attacker inventing names must "
        "not cost memory and a page per name).",
    )
    max_instances: int = Field(
        10000, gt=0, description="Distinct service instances the heartbeat table tracks; past it, as `max_services`."
    )
    # --- paywatch's clock against the producers' clocks -----------------------------
    arrival_tolerance_s: float = Field(
        10.0,
        description="An event whose `@timestamp` is within this of paywatch's clock is judged at its own "
        "time; one further off (a skewed host, a re-delivered or long-delayed event) is judged at "
        "paywatch's clock when it arrived. Keep it below interval × (grace_factor − 1).",
    )
    clock_skew_bound_s: float = Field(
        30.0,
        description="A producer whose heartbeats' `@timestamp` stays further than this from paywatch's clock "
        "for `clock_skew_after_s` is reported as `clock_skew` (recorded, not paged).",
    )
    clock_skew_after_s: float = Field(
        60.0,
        description="How long a producer's clock must stay off (or back within the bound) before "
        "`clock_skew` opens (or resolves).",
    )
    future_limit_s: float = Field(
        600.0,
        description="A `@timestamp` further than this ahead of paywatch's clock is flagged at once as "
        "`clock_skew` and never moves paywatch's clock.",
    )
    past_limit_s: float = Field(
        86400.0,
        description="A new heartbeat whose `@timestamp` is further than this behind paywatch's clock is "
        "flagged at once as `clock_skew`.",
    )
    watermark_quorum: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Replaying, or reading a backlog, paywatch's clock is the time this share of the producers "
        "(instances heard from within `watermark_window_s`; at least two) have reached: producers ahead, fewer "
        "than that, cannot drag it forward; producers behind or dead cannot hold it back.",
    )
    watermark_window_s: float = Field(
        300.0,
        description="A producer not heard from for this long no longer counts towards the watermark's quorum.",
    )
    watermark_stall_s: float = Field(
        60.0,
        description="When only one producer is still sending for this long (by its own clock), paywatch's "
        "clock follows it, at the offset it had from the others, so the silence of the rest is seen.",
    )

    # --- the Kafka runtime (`paywatch detect`) ------------------------------------
    heartbeat_interval_s: float = Field(
        10.0, description="Interval of the detector's own heartbeat (service `paywatch-detect`)."
    )
    rebuild_horizon_s: float = Field(
        900.0,
        description="A worker that gains a partition, or the embedded backend on start, re-reads this much "
        "of its recent history to rebuild per-order state, windows and the heartbeat table (findings "
        "already published are not published again).",
    )
    judge_horizon_s: float = Field(
        3600.0,
        description="An aggregator that gains a partials partition re-reads this much of it to rebuild the "
        "channel baselines and levels.",
    )
    channel_feed_interval_s: float = Field(
        60.0,
        gt=0,
        description="Besides on every level change, the channel aggregator re-publishes each channel's current "
        "health to the channel-health topic this often (routers read it; see docs/channels.md).",
    )

    @cached_property
    def _resolved(self) -> dict[str, ChannelSettings]:
        base = self.default.model_dump()
        return {ch: ChannelSettings(**{**base, **o.model_dump(exclude_unset=True)}) for ch, o in self.channels.items()}

    def for_channel(self, channel: str | None) -> ChannelSettings:
        """The effective knobs of one channel (its override merged over `default`)."""
        if channel is None:
            return self.default
        return self._resolved.get(channel, self.default)


class DetectorsConfig(Protocol):
    """What a detector process reads of the config file: its own section and the shared connection
    settings. The app's `Config` is one; the stage never sees the other stages' sections."""

    kafka: KafkaSettings
    intake: IntakeSettings
    detectors: DetectorSettings
