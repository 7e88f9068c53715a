"""Injected incidents: what each scenario breaks, and the honest ground truth it writes.

A scenario is written `name:key=value,key=value` (`callback_outage:channel=alipay,start=20m,
duration=10m`); times accept `90`, `90s`, `20m`, `1h`. Scenarios compose: each installs its
faults into one `Faults` and watches the simulation through `Observer` hooks, so its
`detect_from` is computed from what actually became visible, not from the plan:

- callback_outage: the first order whose success was seen and that is still not paid
  when the 60 s `paid_grace` runs out (grace + that moment);
- merchant_jam: the same, for the first order of the jammed merchant (on any channel);
- duplicate_burst: the moment the second order with two successful attempts is seen;
- channel_down: the first attempt that fails because of the outage;
- service_dies: the death itself;
- query_api_flaky: the first failing query (nothing customer-facing breaks, so no page
  is expected; the compensation side must back off);
- channel_ramp: the first injected failure; the bound runs to the moment the planned
  failure rate crosses the 15 % floor plus 2 min;
- error_code_spike: the start (a few seconds before the first spiked failure);
- long_tail: no incident (quiet channels and customer-error bursts: noise that must not page).

channel_down's bounds depend on the channel's volume: 30 s / 2 min at ≥ 10 orders/s,
2 min / 10 min at ≥ 0.5, 5 min / 10 min below (one attempt per 20 s).

Hosts and fleets (clock and heartbeat shapes; instances are named by service and index at boot):

- clock_skew: the host's clock is `skew` seconds off from `start` (negative: behind); the
  truth is a `clock_skew` finding within 2 min, and nothing else: every other page is false;
- stray_beat: one beat stamped in `year` (years ahead): no incident (nothing to act on; the
  detectors flag it as `clock_skew` at once), and it must not hide a later death;
- instance_dies: one named instance dies without a stopping beat (the moment it died);
  `slack` is the paging bound over interval × grace;
- autoscale: `out` instances start at `start` and `in` are removed at start + duration,
  with or without a `stopping` beat; only removal without one is expected to page
  (`heartbeat_missing`, from the moment the instance went);
- interval_change: a service's heartbeat interval becomes `interval` (and goes back at
  start + duration when duration > 0): nothing may page;
- redelivery_storm: a consumer rebalance re-delivers every event stamped in the `span`
  before `start`, at `start`: nothing may page.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from paywatch.contract import Event
from paywatch.simulator.model import (
    CHANNELS,
    COMPENSATION,
    MERCHANTS,
    QUIET_CHANNELS,
    Attempt,
    Faults,
    Instance,
    Observer,
    Order,
    Simulation,
)
from paywatch.simulator.settings import SimulatorSettings
from paywatch.truth import Expectation, Incident

PAID_GRACE_S = 60.0
CALLBACK_OUTAGE_WITHIN_S = 30.0
MERCHANT_JAM_WITHIN_S = 300.0
DUPLICATE_WITHIN_S = 10.0
DEGRADED_WITHIN_S = 30.0  # a busy channel (≥ 10 orders/s)
HEALTHY_WITHIN_S = 120.0
MODEST_DEGRADED_WITHIN_S = 120.0  # ≥ 0.5 orders/s
MODEST_HEALTHY_WITHIN_S = 600.0
QUIET_DEGRADED_WITHIN_S = 300.0  # below: down to one attempt per 20 s
QUIET_HEALTHY_WITHIN_S = 600.0
RAMP_FLOOR = 0.15  # the absolute floor of channel failures (detectors' degraded_min_failure_rate)
RAMP_WITHIN_S = 120.0  # after the ramp crosses the floor
CODE_SPIKE_WITHIN_S = 120.0


class ScenarioError(ValueError):
    """A scenario spec that cannot be understood; the message says which part and why."""


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `20m`, `1.5h` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ScenarioError(f"{text!r} is not a duration (examples: 90, 90s, 20m, 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass
class Scenario(Observer):
    """Base: a named, parameterised incident. `start`/`duration` are seconds from the run start."""

    name: ClassVar[str] = ""
    seconds: ClassVar[frozenset[str]] = frozenset({"start", "duration"})
    start: float = 600.0
    duration: float = 600.0

    def __post_init__(self) -> None:
        self.detected_ms: int | None = None
        self._duplicates = 0
        self._charged_here: set[str] = set()
        self._held: dict[str, int] = {}  # order id -> when its held success was first seen

    @property
    def start_ms(self) -> int:
        return int(self.start * 1000)

    @property
    def end_ms(self) -> int:
        return int((self.start + self.duration) * 1000)

    def inside(self, t: int) -> bool:
        return self.start_ms <= t < self.end_ms

    def install(self, faults: Faults) -> None:
        """Register what this scenario breaks."""

    def validate(self, sim: Simulation) -> None:
        """Check parameters that depend on the simulation's settings."""

    def deliver(self, events: Iterator[Event]) -> Iterator[Event]:
        """What reaches paywatch of the simulated events (a transport fault rewrites it)."""
        return events

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        """The ground-truth line, after the run (None for scenarios that inject nothing)."""
        end_ms = min(self.end_ms, sim.end_ms)
        return Incident(
            id=incident_id,
            scenario=self.name,
            start=sim.ms_to_dt(self.start_ms),
            end=sim.ms_to_dt(end_ms),
            detect_from=sim.ms_to_dt(self.detected_ms if self.detected_ms is not None else self.start_ms),
            expect=self.expect(sim),
            recover=self.recover(sim),
        )

    def expect(self, sim: Simulation) -> list[Expectation]:
        return []

    def recover(self, sim: Simulation) -> list[Expectation]:
        return []

    def _first(self, t: int) -> None:
        if self.detected_ms is None or t < self.detected_ms:
            self.detected_ms = t

    def _charged_on(self, channel: str, t: int, attempt: Attempt) -> None:
        """Remember orders of this incident charged on its channel (only those can be its duplicates)."""
        if attempt.channel == channel and t >= self.start_ms and attempt.order.created_ms < self.end_ms:
            self._charged_here.add(attempt.order.order_id)

    def _count_duplicate(self, t: int, order: Order) -> None:
        """Detection of a duplicate-charge spike becomes possible at the incident's second duplicate
        (ordinary duplicates elsewhere at the same time do not count)."""
        if order.order_id in self._charged_here:
            self._duplicates += 1
            if self._duplicates == 2:
                self._first(t)

    def _hold(self, t: int, order: Order) -> None:
        """A success of this incident's that the business will not apply in time."""
        self._held.setdefault(order.order_id, t)

    def _applied(self, t: int, order: Order) -> None:
        """Detection of stuck orders becomes possible when the first held one passes its grace."""
        seen = self._held.pop(order.order_id, None)
        if seen is not None and t - seen > PAID_GRACE_S * 1000:
            self._first(seen + int(PAID_GRACE_S * 1000))

    def _never_applied(self, sim: Simulation) -> None:
        for seen in self._held.values():
            if seen + PAID_GRACE_S * 1000 <= sim.end_ms:
                self._first(seen + int(PAID_GRACE_S * 1000))

    def _check_channel(self, channel: str) -> None:
        if channel not in CHANNELS and channel not in QUIET_CHANNELS:
            known = ", ".join([*CHANNELS, *QUIET_CHANNELS])
            raise ScenarioError(f"{self.name}: unknown channel {channel!r}; known: {known}")

    @staticmethod
    def _add_channel(faults: Faults, channel: str) -> None:
        """A scenario on one of the quiet channels brings that channel into the mix."""
        if channel in QUIET_CHANNELS:
            faults.extra_channels[channel] = QUIET_CHANNELS[channel]


@dataclass
class Normal(Scenario):
    """Ordinary noisy traffic only (the baseline is always there; this just names it)."""

    name: ClassVar[str] = "normal"

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        return None


@dataclass
class CallbackOutage(Scenario):
    """A channel's payment results stop reaching the order service.

    mode=unprocessed (default): the callback receiver still logs the channel's notifications
    (and the compensation job its query results), but the queue that applies them is jammed:
    orders stay "unpaid" until the outage ends and the backlog drains; the page expected is
    paid_but_pending_incident. mode=lost: the notifications never arrive (no channel_callback
    at all on the channel); the channel re-sends them with back-off, and the compensation
    job's queries find the payments after ~90 s and the business applies them at once, so no
    order is visibly paid-but-pending: what pages is the customers' second payments
    (duplicate_charge_incident, any channel, within 30 s of the second duplicate)."""

    name: ClassVar[str] = "callback_outage"
    channel: str = "alipay"
    mode: str = "unprocessed"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_channel(self.channel)
        if self.mode not in ("unprocessed", "lost"):
            raise ScenarioError(f"callback_outage: mode must be unprocessed or lost, not {self.mode!r}")

    def install(self, faults: Faults) -> None:
        window = (self.channel, self.start_ms, self.end_ms)
        (faults.results_held if self.mode == "unprocessed" else faults.callbacks_lost).append(window)

    def success_seen(self, t: int, attempt: Attempt) -> None:
        if attempt.channel == self.channel and self.inside(t) and not attempt.order.paid:
            self._hold(t, attempt.order)
        if self.mode == "lost":
            self._charged_on(self.channel, t, attempt)

    def order_paid(self, t: int, order: Order) -> None:
        if self.mode == "unprocessed":
            self._applied(t, order)

    def duplicate_seen(self, t: int, order: Order) -> None:
        if self.mode == "lost":
            self._count_duplicate(t, order)

    def finish(self, sim: Simulation) -> None:
        if self.mode == "unprocessed":
            self._never_applied(sim)

    def expect(self, sim: Simulation) -> list[Expectation]:
        if self.mode == "unprocessed":
            return [Expectation("paid_but_pending_incident", CALLBACK_OUTAGE_WITHIN_S, channel=self.channel)]
        if self.detected_ms is None:
            return []  # too few customers paid twice to be told apart from normal traffic
        # A callback outage is due a page within 30 s; here it can only come from the customers'
        # second payments, which trickle in as their patience runs out (not a 10 s burst).
        return [Expectation("duplicate_charge_incident", CALLBACK_OUTAGE_WITHIN_S)]


@dataclass
class MerchantJam(Scenario):
    """One merchant's order service stops applying payment results (its queue, or `share` of its
    order database's shards, is stuck) while every channel is healthy: those orders stay "unpaid" on
    every channel until the jam ends and the backlog drains. A few stuck orders per channel is not
    enough for any channel's rollup, so the page expected is the merchant's paid_but_pending_incident."""

    name: ClassVar[str] = "merchant_jam"
    merchant: str = "m-food-quickbite"
    share: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        known = [m.merchant_id for m in MERCHANTS]
        if self.merchant not in known:
            raise ScenarioError(f"merchant_jam: unknown merchant {self.merchant!r}; known: {', '.join(known)}")
        if not 0 < self.share <= 1:
            raise ScenarioError(f"merchant_jam: share must be in (0, 1], not {self.share}")

    def install(self, faults: Faults) -> None:
        self._faults = faults
        faults.merchant_results_held.append((self.merchant, self.start_ms, self.end_ms, self.share))

    def success_seen(self, t: int, attempt: Attempt) -> None:
        order = attempt.order
        if self.inside(t) and not order.paid and self._faults.merchant_held_until(order, t) is not None:
            self._hold(t, order)

    def order_paid(self, t: int, order: Order) -> None:
        self._applied(t, order)

    def finish(self, sim: Simulation) -> None:
        self._never_applied(sim)

    def expect(self, sim: Simulation) -> list[Expectation]:
        return [Expectation("paid_but_pending_incident", MERCHANT_JAM_WITHIN_S, merchant=self.merchant)]


@dataclass
class DuplicateBurst(Scenario):
    """The gateway re-sends payment requests under a new serial and the channel charges both."""

    name: ClassVar[str] = "duplicate_burst"
    channel: str = "wechatpay"
    rate: float = 0.3  # share of payment requests on the channel that are double-submitted

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_channel(self.channel)
        if not 0 < self.rate <= 1:
            raise ScenarioError("duplicate_burst: rate is a share of requests, in (0, 1]")

    def install(self, faults: Faults) -> None:
        faults.double_submit.append((self.channel, self.start_ms, self.end_ms, self.rate))

    def success_seen(self, t: int, attempt: Attempt) -> None:
        self._charged_on(self.channel, t, attempt)

    def duplicate_seen(self, t: int, order: Order) -> None:
        self._count_duplicate(t, order)

    def expect(self, sim: Simulation) -> list[Expectation]:
        return [Expectation("duplicate_charge_incident", DUPLICATE_WITHIN_S, channel=self.channel)]


@dataclass
class ChannelDown(Scenario):
    """A channel fails most attempts, then recovers. `rate` fixes the channel's volume
    (new orders starting on it per second) for the whole run so there is a baseline."""

    name: ClassVar[str] = "channel_down"
    channel: str = "bank_b"
    fail: float = 0.9
    rate: float = 50.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_channel(self.channel)
        if not 0 < self.fail <= 1:
            raise ScenarioError("channel_down: fail is a share of attempts, in (0, 1]")

    def install(self, faults: Faults) -> None:
        self._add_channel(faults, self.channel)
        faults.channel_failing.append((self.channel, self.start_ms, self.end_ms, self.fail))
        if self.rate > 0:
            faults.channel_rate[self.channel] = self.rate

    def outage_failure(self, t: int, attempt: Attempt) -> None:
        if attempt.channel == self.channel:
            self._first(t)

    def _bounds(self) -> tuple[float, float]:
        """(degraded within, healthy within) by volume: the busier the channel, the sooner the proof."""
        if self.rate >= 10:
            return DEGRADED_WITHIN_S, HEALTHY_WITHIN_S
        if self.rate >= 0.5:
            return MODEST_DEGRADED_WITHIN_S, MODEST_HEALTHY_WITHIN_S
        return QUIET_DEGRADED_WITHIN_S, QUIET_HEALTHY_WITHIN_S

    def expect(self, sim: Simulation) -> list[Expectation]:
        return [Expectation("channel_health", self._bounds()[0], channel=self.channel, level="degraded")]

    def recover(self, sim: Simulation) -> list[Expectation]:
        within = self._bounds()[1]
        if self.end_ms + within * 1000 > sim.end_ms:
            return []  # the run ends before recovery could be seen
        return [Expectation("channel_health", within, channel=self.channel, level="healthy")]


@dataclass
class ChannelRamp(Scenario):
    """A slow degradation: the channel's injected failure share rises linearly from `fail_from` at
    the start to `fail_to` at the end, then stops (the channel is fixed). `rate` fixes the volume as
    in channel_down. The page is due within 2 min of the observed failure rate crossing the 15 %
    floor; a page before that is fine, so `detect_from` is the first injected failure and the bound
    runs to the crossing plus 2 min. The crossing is computed from the plan: 80 % of injected
    failures are answered as failures (20 % time out), and the channel's own failures add to them."""

    name: ClassVar[str] = "channel_ramp"
    duration: float = 720.0
    channel: str = "bank_b"
    fail_from: float = 0.01
    fail_to: float = 0.5
    rate: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_channel(self.channel)
        if not 0 <= self.fail_from < self.fail_to <= 1:
            raise ScenarioError("channel_ramp: need 0 <= fail_from < fail_to <= 1")

    def install(self, faults: Faults) -> None:
        self._add_channel(faults, self.channel)
        faults.failing_ramps.append((self.channel, self.start_ms, self.end_ms, self.fail_from, self.fail_to))
        if self.rate > 0:
            faults.channel_rate[self.channel] = self.rate

    def outage_failure(self, t: int, attempt: Attempt) -> None:
        if attempt.channel == self.channel:
            self._first(t)

    def observed_rate(self, sim: Simulation, t: int) -> float:
        """Channel failures among finished attempts at time t, by the plan."""
        injected = self.fail_from + (self.fail_to - self.fail_from) * (t - self.start_ms) / (
            self.end_ms - self.start_ms
        )
        own = sum(p for _, category, p in sim.channels[self.channel].failures if category == "channel")
        failed = 0.8 * injected + (1 - injected) * own
        return failed / (0.8 * injected + (1 - injected))

    def crossing_ms(self, sim: Simulation, rate: float = RAMP_FLOOR) -> int | None:
        lo, hi = self.start_ms, self.end_ms
        if self.observed_rate(sim, hi - 1) < rate:
            return None
        while hi - lo > 100:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.observed_rate(sim, mid) < rate else (lo, mid)
        return hi

    def expect(self, sim: Simulation) -> list[Expectation]:
        cross = self.crossing_ms(sim)
        if cross is None or self.detected_ms is None or cross + RAMP_WITHIN_S * 1000 > sim.end_ms:
            return []  # never crossed the floor within the run
        within = (cross - self.detected_ms) / 1000 + RAMP_WITHIN_S
        return [Expectation("channel_health", round(within, 3), channel=self.channel, level="degraded")]

    def recover(self, sim: Simulation) -> list[Expectation]:
        if self.end_ms + MODEST_HEALTHY_WITHIN_S * 1000 > sim.end_ms:
            return []
        return [Expectation("channel_health", MODEST_HEALTHY_WITHIN_S, channel=self.channel, level="healthy")]


@dataclass
class ErrorCodeSpike(Scenario):
    """One customer error code jumps to `share` of a channel's payment requests (a bank lowering its
    limits overnight): news worth a page, but the customers' failures, not the channel's, so the
    channel stays healthy. `rate` fixes the channel's volume (orders starting on it per second)."""

    name: ClassVar[str] = "error_code_spike"
    channel: str = "bank_a"
    code: str = "LIMIT_EXCEEDED"
    category: str = "limit"
    share: float = 0.3
    rate: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_channel(self.channel)
        if not 0 < self.share <= 1:
            raise ScenarioError("error_code_spike: share is a share of requests, in (0, 1]")
        if self.category not in ("user", "limit"):
            raise ScenarioError("error_code_spike: category is a customer's one: user or limit")

    def install(self, faults: Faults) -> None:
        self._add_channel(faults, self.channel)
        faults.code_spikes.append((self.channel, self.start_ms, self.end_ms, (self.code, self.category, self.share)))
        if self.rate > 0:
            faults.channel_rate[self.channel] = self.rate

    def expect(self, sim: Simulation) -> list[Expectation]:
        # detect_from stays at the start (before the first spiked failure): a slightly stricter bound
        return [Expectation("error_code_spike", CODE_SPIKE_WITHIN_S, channel=self.channel)]


@dataclass
class LongTail(Scenario):
    """Real traffic's noise, no incident: the quiet channels (regional bank, BNPL, card scheme, with
    5-10 % channel failures as their normal) join the mix, and customer-error bursts hit random
    channels `bursts_per_day` times a day per channel: for 1-5 minutes customers fail on their own
    (wrong password, no funds, limits) `burst_factor` times as often as usual. Nothing here may page."""

    name: ClassVar[str] = "long_tail"
    bursts_per_day: float = 6.0
    burst_factor: float = 3.0

    def install(self, faults: Faults) -> None:
        faults.extra_channels.update(QUIET_CHANNELS)
        self._faults = faults

    def validate(self, sim: Simulation) -> None:
        rng = random.Random(f"long_tail-{sim.seed}")  # its own stream: the traffic's draws stay as they were
        for channel in sim.channels:
            t = 0.0
            while self.bursts_per_day > 0:
                t += rng.expovariate(self.bursts_per_day / 86_400_000)
                if t >= sim.end_ms:
                    break
                length = rng.uniform(60_000, 300_000)
                self._faults.customer_bursts.append((channel, int(t), int(t + length), self.burst_factor))

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        return None


@dataclass
class ServiceDies(Scenario):
    """Instances of a service die without a stopping beat. `instances=0` (default) kills them
    all; `duration=0` (default) keeps them dead to the end of the run."""

    name: ClassVar[str] = "service_dies"
    service: str = COMPENSATION
    instances: int = 0
    duration: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.instances < 0:
            raise ScenarioError("service_dies: instances must be ≥ 0 (0 = all)")

    @property
    def end_ms(self) -> int:
        return int((self.start + self.duration) * 1000) if self.duration > 0 else 2**62

    def install(self, faults: Faults) -> None:
        end = self.end_ms if self.duration > 0 else None
        faults.deaths.append((self.service, self.instances or None, self.start_ms, end))

    def validate(self, sim: Simulation) -> None:
        known = sim.settings.instances
        if self.service not in known:
            raise ScenarioError(f"service_dies: unknown service {self.service!r}; known: {', '.join(known)}")
        kills_all = self.instances == 0 or self.instances >= known[self.service]
        if kills_all and self.service in ("order-service", "payment-gateway"):
            raise ScenarioError(
                f"service_dies: killing every {self.service} instance stops all traffic; "
                f"kill at most {known[self.service] - 1}"
            )

    def expect(self, sim: Simulation) -> list[Expectation]:
        within = sim.settings.heartbeat_interval_s * 3 + 2
        total = sim.settings.instances[self.service]
        if self.instances == 0 or self.instances >= total:
            return [Expectation("service_down", within, service=self.service)]
        return [Expectation("heartbeat_missing", within, service=self.service, page=False)]


@dataclass
class QueryApiFlaky(Scenario):
    """A channel's query API errors or times out for a while (payments themselves work)."""

    name: ClassVar[str] = "query_api_flaky"
    channel: str = "unionpay"
    error: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_channel(self.channel)
        if not 0 < self.error <= 1:
            raise ScenarioError("query_api_flaky: error is a share of queries, in (0, 1]")

    def install(self, faults: Faults) -> None:
        faults.query_errors.append((self.channel, self.start_ms, self.end_ms, self.error))

    def query_failed(self, t: int, attempt: Attempt) -> None:
        if attempt.channel == self.channel:
            self._first(t)


@dataclass
class _OneInstance(Scenario):
    """Base of the scenarios that break one instance, named by service and index at boot."""

    service: str = "payment-gateway"
    instance: int = 0

    def validate(self, sim: Simulation) -> None:
        known = sim.settings.instances
        if self.service not in known:
            raise ScenarioError(f"{self.name}: unknown service {self.service!r}; known: {', '.join(known)}")
        if not 0 <= self.instance < known[self.service]:
            raise ScenarioError(f"{self.name}: {self.service} has instances 0..{known[self.service] - 1} at boot")


@dataclass
class ClockSkew(_OneInstance):
    """A host's NTP died: its clock is `skew` seconds off (negative: behind) from `start` on.
    Nothing breaks for anyone; paywatch must name it (`clock_skew`) and page nothing."""

    name: ClassVar[str] = "clock_skew"
    skew: float = 40.0
    start: float = 0.0
    duration: float = 0.0  # 0: to the end of the run

    @property
    def end_ms(self) -> int:
        return int((self.start + self.duration) * 1000) if self.duration > 0 else 2**62

    def install(self, faults: Faults) -> None:
        faults.clock_skews.append((self.service, self.instance, self.start_ms, int(self.skew * 1000)))
        if self.duration > 0:
            faults.clock_skews.append((self.service, self.instance, self.end_ms, 0))

    def expect(self, sim: Simulation) -> list[Expectation]:
        return [Expectation("clock_skew", CLOCK_SKEW_WITHIN_S, service=self.service, page=False)]


@dataclass
class StrayBeat(_OneInstance):
    """One beat of an instance stamped in `year` (a bad clock read): flagged at once, and it must
    not make the instance look alive (or dead) afterwards."""

    name: ClassVar[str] = "stray_beat"
    year: int = 2099

    def install(self, faults: Faults) -> None:
        faults.stray_beats.append((self.service, self.instance, self.start_ms, _in_year(self.year)))

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        return None  # nothing to act on; flagged (`clock_skew`) at paywatch's clock, not the simulation's


@dataclass
class InstanceDies(_OneInstance):
    """One named instance dies without a stopping beat at `start` (its service lives on)."""

    name: ClassVar[str] = "instance_dies"
    slack: float = 2.0  # seconds over interval × grace (the skewed-host bound is 10)

    def install(self, faults: Faults) -> None:
        faults.instance_deaths.append((self.service, self.instance, self.start_ms))

    def instance_left(self, t: int, instance: Instance, stopping: bool) -> None:
        if instance.name == self.service and not stopping and t == self.start_ms:
            self._first(t)

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        if self.detected_ms is None:
            return None  # it had already left (a deploy): nothing died here
        found = super().incident(sim, incident_id)
        if found is not None:
            found.end = sim.ms_to_dt(sim.end_ms)
        return found

    def expect(self, sim: Simulation) -> list[Expectation]:
        within = sim.settings.heartbeat_interval_s * 3 + self.slack
        return [Expectation("heartbeat_missing", within, service=self.service, page=False)]


@dataclass
class Autoscale(Scenario):
    """An autoscaler starts `out` instances at `start` and removes `in` (the newest) at start +
    duration, each with a `stopping` beat (`stopping=1`, a graceful shutdown) or without one
    (`stopping=0`, a terminated VM). New instances never page; a removal without a stopping
    beat is indistinguishable from a crash, so that (and only that) is expected to page."""

    name: ClassVar[str] = "autoscale"
    service: str = "order-service"
    out: int = 2
    scale_in: int = 2
    stopping: int = 1
    duration: float = 300.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out < 0 or self.scale_in < 0:
            raise ScenarioError("autoscale: out and scale_in are instance counts, ≥ 0")

    def validate(self, sim: Simulation) -> None:
        if self.service not in sim.settings.instances:
            raise ScenarioError(f"autoscale: unknown service {self.service!r}")

    def install(self, faults: Faults) -> None:
        faults.scaling.append((self.service, self.start_ms, self.out, bool(self.stopping)))
        faults.scaling.append((self.service, self.end_ms, -self.scale_in, bool(self.stopping)))

    def instance_left(self, t: int, instance: Instance, stopping: bool) -> None:
        if instance.name == self.service and t == self.end_ms and not stopping:
            self._first(t)

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        if self.detected_ms is None:
            return None  # graceful: nothing may page
        return super().incident(sim, incident_id)

    def expect(self, sim: Simulation) -> list[Expectation]:
        return [
            Expectation(
                "heartbeat_missing", sim.settings.heartbeat_interval_s * 3 + 2, service=self.service, page=False
            )
        ]


@dataclass
class IntervalChange(Scenario):
    """A service is redeployed with another heartbeat interval (and back after `duration` if > 0)."""

    name: ClassVar[str] = "interval_change"
    service: str = "callback-receiver"
    interval: float = 30.0
    duration: float = 0.0

    def validate(self, sim: Simulation) -> None:
        if self.service not in sim.settings.instances:
            raise ScenarioError(f"interval_change: unknown service {self.service!r}")
        if self.interval <= 0:
            raise ScenarioError("interval_change: interval is seconds, > 0")

    def install(self, faults: Faults) -> None:
        faults.interval_changes.append((self.service, self.start_ms, self.interval))
        if self.duration > 0:
            faults.interval_changes.append((self.service, self.end_ms, None))

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        return None


@dataclass
class RedeliveryStorm(Scenario):
    """A consumer-group rebalance: at `start`, every event stamped in the `span` before it is
    delivered again (same event ids, old `@timestamp`s) in one burst. Nothing may page."""

    name: ClassVar[str] = "redelivery_storm"
    seconds: ClassVar[frozenset[str]] = frozenset({"start", "duration", "span"})
    span: float = 120.0

    def deliver(self, events: Iterator[Event]) -> Iterator[Event]:
        start = self._run_start + timedelta(seconds=self.start)
        since = start - timedelta(seconds=self.span)
        buffered: list[Event] | None = []
        for event in events:
            if buffered is not None and event.timestamp >= start:
                yield from buffered
                buffered = None
            elif buffered is not None and event.timestamp >= since:
                buffered.append(event)
            yield event

    def validate(self, sim: Simulation) -> None:
        self._run_start = sim.start  # the events carry datetimes; `start` counts from here

    def incident(self, sim: Simulation, incident_id: str) -> Incident | None:
        return None


CLOCK_SKEW_WITHIN_S = 120.0


def _in_year(year: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=UTC)


SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls
    for cls in (
        Normal,
        CallbackOutage,
        MerchantJam,
        DuplicateBurst,
        ChannelDown,
        ServiceDies,
        QueryApiFlaky,
        ClockSkew,
        StrayBeat,
        InstanceDies,
        Autoscale,
        IntervalChange,
        RedeliveryStorm,
        ChannelRamp,
        ErrorCodeSpike,
        LongTail,
    )
}


def parse_scenario(spec: str) -> Scenario:
    """`callback_outage:channel=alipay,start=20m,duration=10m` → a Scenario."""
    name, _, params = spec.strip().partition(":")
    cls = SCENARIOS.get(name)
    if cls is None:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    types = {f.name: f.type for f in fields(cls)}
    kwargs: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in params.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in types:
            raise ScenarioError(f"{name}: bad parameter {part!r}; parameters: {', '.join(types)}")
        try:
            if key in cls.seconds:
                kwargs[key] = parse_duration(value)
            elif types[key] in ("float", float):
                kwargs[key] = float(value)
            elif types[key] in ("int", int):
                kwargs[key] = int(value)
            else:
                kwargs[key] = value
        except ValueError as exc:
            raise ScenarioError(f"{name}: bad value for {key}: {exc}") from None
    return cls(**kwargs)  # type: ignore[arg-type]


def incidents(scenarios: list[Scenario], sim: Simulation) -> list[Incident]:
    """Ground-truth lines for every injected scenario, numbered inc-1, inc-2, …"""
    out: list[Incident] = []
    for scenario in scenarios:
        incident = scenario.incident(sim, f"inc-{len(out) + 1}")
        if incident is not None:
            out.append(incident)
    return out


DEFAULT_START = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)  # 10:00 in the customers' UTC+8


class Run:
    """One simulation: iterate for the events (event-time order); afterwards `incidents`
    holds the ground truth. `truth.channel_record` answers at any time, also mid-run."""

    def __init__(self, sim: Simulation, scenarios: list[Scenario]) -> None:
        self.sim = sim
        self.scenarios = scenarios
        self.truth = sim.truth
        self.incidents: list[Incident] = []

    def __iter__(self) -> Iterator[Event]:
        events: Iterator[Event] = iter(self.sim)
        for scenario in self.scenarios:
            events = scenario.deliver(events)
        yield from events
        self.incidents = incidents(self.scenarios, self.sim)
        self.truth.incidents = self.incidents


def simulate(
    scenarios: Iterable[str | Scenario] = ("normal",),
    *,
    seed: int = 1,
    duration: float | timedelta | str = "30m",
    start: datetime = DEFAULT_START,
    settings: SimulatorSettings | None = None,
    keep_records: bool = True,
    telemetry: str = "sdk",
) -> Run:
    """Traffic with the given scenarios injected. Same arguments → identical events."""
    parsed = [parse_scenario(s) if isinstance(s, str) else s for s in scenarios]
    if isinstance(duration, str):
        duration = parse_duration(duration)
    elif isinstance(duration, timedelta):
        duration = duration.total_seconds()
    faults = Faults()
    for scenario in parsed:
        scenario.install(faults)
    sim = Simulation(
        seed=seed,
        duration_s=duration,
        start=start,
        settings=settings,
        faults=faults,
        observers=list(parsed),
        keep_records=keep_records,
        telemetry=telemetry,
    )
    for scenario in parsed:
        scenario.validate(sim)
    return Run(sim, parsed)
