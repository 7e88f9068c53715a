"""The simulated payment business: channels, customers, orders, attempts and the services
that record them, run as a discrete-event simulation in simulated time.

Everything is driven by one heap of timed actions and one `random.Random(seed)`; no wall
clock, no global random, so the same seed and scenarios give byte-identical output.
Simulated time is integer milliseconds since `start`, which keeps it exact.

What the channel really did (the ground truth) and what the platform saw (the events)
are kept apart on purpose: an attempt knows when the money moved (`charged_ms`), the
business only knows what callbacks and queries told it (`business_final`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from paywatch.clock import ManualClock
from paywatch.contract import Event
from paywatch.simulator.settings import SimulatorSettings
from paywatch.simulator.telemetry import DirectTelemetry, SdkTelemetry, ServiceSender, Telemetry
from paywatch.simulator.truth import ChannelRecord, GroundTruth

DRAIN_EVERY = 4096  # events between collecting what the services emitted
CURRENCY = "CNY"
ORDER_SERVICE, GATEWAY, RECEIVER, COMPENSATION = (
    "order-service",
    "payment-gateway",
    "callback-receiver",
    "compensation-job",
)
GATEWAY_TIMEOUT_MS = 8000
MAX_ATTEMPTS_PER_ORDER = 4
# WeChat Pay re-sends an unacknowledged notification after these delays (s); others are similar.
CALLBACK_RETRY_S = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800)


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """How one channel behaves. Wallets create a pre-order and the customer authorises in
    the wallet app (the result arrives only by callback); card and bank channels answer
    the payment request synchronously, and confirm by callback later."""

    name: str
    method: str
    share: float  # of first attempts
    wallet: bool
    latency_median_ms: float
    latency_sigma: float
    callback_median_s: float
    callback_sigma: float
    # Synchronous failures of the payment request: (error_code, error_category, probability).
    failures: tuple[tuple[str, str, float], ...]
    abandon: float  # wallet: customer never authorises
    processing: float  # card: request accepted, result only by callback
    query_median_ms: float


CHANNELS: dict[str, ChannelProfile] = {
    p.name: p
    for p in (
        ChannelProfile(
            "wechatpay", "wallet", 0.42, True, 160, 0.55, 1.4, 0.9,
            (("SYSTEMERROR", "channel", 0.002), ("ORDER_LIMIT", "limit", 0.002)),
            abandon=0.11, processing=0.0, query_median_ms=180,
        ),
        ChannelProfile(
            "alipay", "wallet", 0.36, True, 140, 0.5, 1.1, 0.9,
            (("SYSTEM_ERROR", "channel", 0.002), ("EXCEED_LIMIT", "limit", 0.002)),
            abandon=0.10, processing=0.0, query_median_ms=150,
        ),
        ChannelProfile(
            "unionpay", "card", 0.11, False, 420, 0.6, 3.0, 0.8,
            (
                ("WRONG_PASSWORD", "user", 0.03),
                ("INSUFFICIENT_FUNDS", "user", 0.025),
                ("LIMIT_EXCEEDED", "limit", 0.01),
                ("SYSTEM_ERROR", "channel", 0.006),
            ),
            abandon=0.0, processing=0.02, query_median_ms=400,
        ),
        ChannelProfile(
            "bank_a", "netbank", 0.07, False, 650, 0.65, 6.0, 0.8,
            (
                ("WRONG_PASSWORD", "user", 0.035),
                ("INSUFFICIENT_FUNDS", "user", 0.03),
                ("LIMIT_EXCEEDED", "limit", 0.012),
                ("BANK_SYSTEM_BUSY", "channel", 0.01),
            ),
            abandon=0.0, processing=0.03, query_median_ms=700,
        ),
        ChannelProfile(
            "bank_b", "netbank", 0.04, False, 900, 0.7, 9.0, 0.9,
            (
                ("WRONG_PASSWORD", "user", 0.04),
                ("INSUFFICIENT_FUNDS", "user", 0.03),
                ("LIMIT_EXCEEDED", "limit", 0.015),
                ("BANK_SYSTEM_BUSY", "channel", 0.012),
            ),
            abandon=0.0, processing=0.04, query_median_ms=900,
        ),
    )
}  # fmt: skip

# The long tail most platforms have: quiet regional banks, BNPL, card schemes, with 5-10 % channel
# failures as their normal. Not in the default mix (seeded runs stay as they were): the `long_tail`
# scenario adds them, and scenarios on one of them add that one.
QUIET_CHANNELS: dict[str, ChannelProfile] = {
    p.name: p
    for p in (
        ChannelProfile(
            "bank_c", "netbank", 0.012, False, 800, 0.6, 8.0, 0.8,
            (
                ("WRONG_PASSWORD", "user", 0.04),
                ("INSUFFICIENT_FUNDS", "user", 0.03),
                ("LIMIT_EXCEEDED", "limit", 0.01),
                ("BANK_SYSTEM_BUSY", "channel", 0.06),
            ),
            abandon=0.0, processing=0.03, query_median_ms=900,
        ),
        ChannelProfile(
            "bnpl_d", "bnpl", 0.008, False, 600, 0.6, 5.0, 0.8,
            (
                ("CREDIT_DECLINED", "user", 0.05),
                ("LIMIT_EXCEEDED", "limit", 0.02),
                ("SERVICE_ERROR", "channel", 0.09),
            ),
            abandon=0.0, processing=0.0, query_median_ms=500,
        ),
        ChannelProfile(
            "scheme_e", "card", 0.01, False, 450, 0.6, 4.0, 0.8,
            (
                ("WRONG_PASSWORD", "user", 0.02),
                ("INSUFFICIENT_FUNDS", "user", 0.02),
                ("SYSTEM_ERROR", "channel", 0.05),
            ),
            abandon=0.0, processing=0.02, query_median_ms=400,
        ),
    )
}  # fmt: skip

# What a customer does after a synchronous failure: (retry same channel, switch channel); else abandon.
REACTION: dict[str, tuple[float, float]] = {
    "user": (0.6, 0.2),
    "limit": (0.1, 0.55),
    "channel": (0.35, 0.45),
    "timeout": (0.4, 0.3),
}
OUTAGE_CODES = ("SYSTEM_ERROR", "CHANNEL_UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    weight: float
    amount_median_minor: int
    amount_sigma: float
    repricing: float  # chance the price changes between attempts (airfares)


MERCHANTS: tuple[Merchant, ...] = (
    Merchant("m-food-hungrycat", 0.30, 4500, 0.45, 0.0),
    Merchant("m-food-quickbite", 0.18, 3800, 0.45, 0.0),
    Merchant("m-retail-dayshop", 0.20, 12000, 0.9, 0.02),
    Merchant("m-digital-gamepass", 0.14, 1200, 0.6, 0.0),
    Merchant("m-travel-skyfare", 0.08, 85000, 0.6, 0.35),
    Merchant("m-utility-gridpower", 0.10, 21000, 0.5, 0.0),
)


def diurnal(local_hour: float) -> float:
    """Share of peak volume at a local hour: quiet night, morning rise, lunch and dinner peaks."""
    h = local_hour % 24.0
    return min(
        1.0,
        0.06
        + 0.35 * math.exp(-(((h - 9.5) / 2.5) ** 2))
        + 0.75 * math.exp(-(((h - 12.2) / 1.6) ** 2))
        + 0.85 * math.exp(-(((h - 19.0) / 2.2) ** 2)),
    )


class Faults:
    """What the injected scenarios break, asked by the simulation at each decision.
    Windows are [start_ms, end_ms) in simulated time."""

    def __init__(self) -> None:
        self.callbacks_lost: list[tuple[str, int, int]] = []
        self.results_held: list[tuple[str, int, int]] = []  # a channel's results not applied
        # a merchant's order service (or a `share` of its order shards) jammed: merchant, start, end, share
        self.merchant_results_held: list[tuple[str, int, int, float]] = []
        self.channel_failing: list[tuple[str, int, int, float]] = []
        self.double_submit: list[tuple[str | None, int, int, float]] = []
        self.query_errors: list[tuple[str, int, int, float]] = []
        self.deaths: list[tuple[str, int | None, int, int | None]] = []  # service, count, start, end
        self.channel_rate: dict[str, float] = {}
        # Hosts and fleets (clock and heartbeat shapes). An instance is named by its service and
        # its index among the service's instances at boot.
        self.clock_skews: list[tuple[str, int, int, int]] = []  # service, index, from, offset ms
        self.stray_beats: list[tuple[str, int, int, datetime]] = []  # service, index, at, stamped as
        self.instance_deaths: list[tuple[str, int, int]] = []  # service, index, at
        self.interval_changes: list[tuple[str, int, float | None]] = []  # service, at, interval s (None: back)
        self.scaling: list[tuple[str, int, int, bool]] = []  # service, at, +started/-stopped, stopping beat
        self.extra_channels: dict[str, ChannelProfile] = {}  # quiet channels a scenario adds to the mix
        self.failing_ramps: list[tuple[str, int, int, float, float]] = []  # channel, start, end, from, to
        # channel, start, end, (error_code, error_category, share of requests)
        self.code_spikes: list[tuple[str, int, int, tuple[str, str, float]]] = []
        self.customer_bursts: list[tuple[str, int, int, float]] = []  # channel, start, end, factor

    @staticmethod
    def _rate(windows: list, channel: str | None, t: int) -> float:
        if not windows:
            return 0.0
        return max(
            (w[3] for w in windows if (w[0] is None or w[0] == channel) and w[1] <= t < w[2]),
            default=0.0,
        )

    def lost(self, channel: str, t: int) -> bool:
        return any(c == channel and lo <= t < hi for c, lo, hi in self.callbacks_lost)

    def held_until(self, channel: str, order: Order, t: int) -> int | None:
        """When a success result seen at `t` is applied at the earliest, if a jam holds it."""
        held = [hi for c, lo, hi in self.results_held if c == channel and lo <= t < hi]
        jam = self.merchant_held_until(order, t)
        if jam is not None:
            held.append(jam)
        return max(held, default=None)

    def merchant_held_until(self, order: Order, t: int) -> int | None:
        if not self.merchant_results_held:
            return None
        merchant, shard = order.merchant.merchant_id, zlib.crc32(order.order_id.encode()) % 1000
        return max(
            (
                hi
                for m, lo, hi, share in self.merchant_results_held
                if m == merchant and lo <= t < hi and shard < share * 1000
            ),
            default=None,
        )

    def failing(self, channel: str, t: int) -> float:
        rate = self._rate(self.channel_failing, channel, t)
        for c, lo, hi, start, end in self.failing_ramps:
            if c == channel and lo <= t < hi:
                rate = max(rate, start + (end - start) * (t - lo) / (hi - lo))
        return rate

    def code_spike(self, channel: str, t: int) -> tuple[str, str, float] | None:
        return next((spike for c, lo, hi, spike in self.code_spikes if c == channel and lo <= t < hi), None)

    def customer_factor(self, channel: str, t: int) -> float:
        """How many times more often than usual customers fail on their own (a burst of wrong
        passwords or empty accounts, e.g. a promotion drawing new customers)."""
        return max((f for c, lo, hi, f in self.customer_bursts if c == channel and lo <= t < hi), default=1.0)

    def double(self, channel: str, t: int) -> float:
        return self._rate(self.double_submit, channel, t)

    def query_error(self, channel: str, t: int) -> float:
        return self._rate(self.query_errors, channel, t)


class Observer:
    """Hooks through which scenarios watch what became visible, to compute honest truth."""

    def success_seen(self, t: int, attempt: Attempt) -> None: ...
    def duplicate_seen(self, t: int, order: Order) -> None: ...
    def order_paid(self, t: int, order: Order) -> None: ...
    def outage_failure(self, t: int, attempt: Attempt) -> None: ...
    def instance_left(self, t: int, instance: Instance, stopping: bool) -> None: ...
    def query_failed(self, t: int, attempt: Attempt) -> None: ...
    def finish(self, sim: Simulation) -> None: ...


class Order:
    __slots__ = (
        "amount",
        "closed",
        "created_ms",
        "merchant",
        "n_attempts",
        "order_id",
        "paid",
        "seen_success",
        "trace",
    )

    def __init__(self, order_id: str, merchant: Merchant, amount: int, created_ms: int, trace: str) -> None:
        self.order_id = order_id
        self.merchant = merchant
        self.amount = amount
        self.created_ms = created_ms
        self.trace = trace
        self.n_attempts = 0
        self.paid = False
        self.closed = False
        self.seen_success = 0


class Attempt:
    """One payment attempt (serial number) at one channel, with the channel's truth."""

    __slots__ = (
        "amount",
        "attempt_id",
        "business_final",
        "channel",
        "charged_ms",
        "close_ms",
        "double_submitted",
        "error_code",
        "failed_ms",
        "order",
        "refunded_ms",
        "requested_ms",
        "success_seen",
    )

    def __init__(self, attempt_id: str, order: Order, channel: str, amount: int, requested_ms: int) -> None:
        self.attempt_id = attempt_id
        self.order = order
        self.channel = channel
        self.amount = amount
        self.requested_ms = requested_ms
        self.charged_ms: int | None = None
        self.failed_ms: int | None = None
        self.close_ms: int | None = None
        self.error_code: str | None = None
        self.refunded_ms: int | None = None
        self.double_submitted = False  # a duplicate_burst twin: the channel charges both
        self.business_final = False
        self.success_seen = False

    def status_at(self, t: int) -> str:
        if self.refunded_ms is not None and t >= self.refunded_ms:
            return "refunded"
        if self.charged_ms is not None and t >= self.charged_ms:
            return "paid"
        if self.failed_ms is not None and t >= self.failed_ms:
            return "failed"
        if self.close_ms is not None and t >= self.close_ms:
            return "closed"
        return "pending"

    def record(self, start: datetime, at_ms: int | None) -> ChannelRecord | None:
        """The channel's record as of `at_ms` (None = at the end of time); None before it existed."""
        if at_ms is not None and at_ms < self.requested_ms:
            return None
        t = at_ms if at_ms is not None else 2**62
        status = self.status_at(t)

        def when(ms: int | None) -> datetime | None:
            return None if ms is None else start + timedelta(milliseconds=ms)

        return ChannelRecord(
            channel=self.channel,
            order_id=self.order.order_id,
            attempt_id=self.attempt_id,
            amount_minor=self.amount,
            currency=CURRENCY,
            created_at=when(self.requested_ms),  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            paid_at=when(self.charged_ms) if status in ("paid", "refunded") else None,
            closed_at=when(self.close_ms) if status == "closed" else None,
            error_code=self.error_code if status == "failed" else None,
        )


class HostClock:
    """The clock of the host an instance runs on: simulated time plus an offset (0 unless a
    scenario breaks the host's NTP). It stamps the instance's `@timestamp`s."""

    __slots__ = ("base", "offset")

    def __init__(self, base: ManualClock) -> None:
        self.base = base
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return self.base.now() + self.offset


class Instance:
    """One process of a simulated service, with its own telemetry emitter and host clock."""

    __slots__ = ("alive", "beating", "clock", "emitter", "instance_id", "interval_s", "name", "seq", "stopping")

    def __init__(
        self, name: str, instance_id: str, emitter: ServiceSender, clock: HostClock, interval_s: float
    ) -> None:
        self.name = name
        self.instance_id = instance_id
        self.emitter = emitter
        self.clock = clock
        self.interval_s = interval_s  # announced in every beat, and kept
        self.alive = True
        self.beating = True  # a heartbeat action is scheduled
        self.stopping = False
        self.seq = 0


class Simulation:
    """Iterate to run: yields contract events in event-time order. After the iteration,
    `truth.incidents` holds the ground truth of the injected scenarios."""

    def __init__(
        self,
        *,
        seed: int,
        duration_s: float,
        start: datetime,
        settings: SimulatorSettings | None = None,
        faults: Faults | None = None,
        observers: list[Observer] | None = None,
        keep_records: bool = True,
        telemetry: str = "sdk",
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be a timezone-aware UTC datetime")
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.end_ms = int(duration_s * 1000)
        self.settings = settings or SimulatorSettings()
        self.faults = faults or Faults()
        self.observers = observers or []
        self.keep_records = keep_records
        self.rng = random.Random(seed)
        self.clock = ManualClock(self.start)
        self.truth = GroundTruth(self.start)
        for channel, lo, hi, rate in self.faults.query_errors:
            self.truth.add_query_fault(channel, lo, hi, rate)
        self.now = 0
        # (time << 32 | sequence, action, argument): one int orders the heap, ties in scheduling order.
        self._heap: list[tuple[int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self._n_events = 0
        self._n_orders = 0
        self._n_attempts = 0
        day = self.start.strftime("%Y%m%d")
        self._order_prefix = f"1{day}{seed % 1000:03d}"
        self._attempt_prefix = f"2{day}{seed % 1000:03d}"
        self._event_prefix = f"sim-{seed}-"
        if telemetry == "sdk":
            self.telemetry: Telemetry = SdkTelemetry(self.clock, self._emission_number)
        elif telemetry == "direct":
            self.telemetry = DirectTelemetry(self.clock)
        else:
            raise ValueError(f"telemetry must be 'sdk' or 'direct', not {telemetry!r}")
        self._instances: dict[str, list[Instance]] = {}
        self._alive: dict[str, list[Instance]] = {}
        self._intervals: dict[str, float] = {}  # services whose heartbeat interval was changed
        self.channels = {**CHANNELS, **self.faults.extra_channels}
        self._channel_names = list(self.channels)
        self._channel_weights = list(itertools.accumulate(self.channels[c].share for c in self._channel_names))
        self._merchant_weights = list(itertools.accumulate(m.weight for m in MERCHANTS))

    # ------------------------------------------------------------------ engine
    def _at(self, t: int, action: Callable[[Any], None], arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t << 32 | self._seq, action, arg))

    def _after(self, delay_ms: float, action: Callable[[Any], None], arg: Any = None) -> None:
        self._at(self.now + max(1, int(delay_ms)), action, arg)

    def _emission_number(self, event: Event) -> int:
        return int(event.event.id[len(self._event_prefix) :])

    def __iter__(self) -> Iterator[Event]:
        heap, telemetry = self._heap, self.telemetry
        drained = 0
        try:
            self._boot()
            end_key = self.end_ms << 32
            while heap and heap[0][0] < end_key:
                key, action, arg = heapq.heappop(heap)
                t = key >> 32
                if t != self.now:
                    self.now = t
                    self.clock.set(self.start + timedelta(milliseconds=t))
                action(arg)
                if self._n_events - drained >= DRAIN_EVERY:
                    drained = self._n_events
                    yield from telemetry.drain()
            yield from telemetry.drain()
        finally:
            telemetry.close()
        for observer in self.observers:
            observer.finish(self)

    def _boot(self) -> None:
        s = self.settings
        for name, count in s.instances.items():
            self._instances[name] = []
            self._alive[name] = []
            for _ in range(count):
                self._start_instance(name)
        for channel in self._channel_names:
            self._next_arrival(channel)
        day_ms = 86_400_000
        for name in s.instances:
            rate_per_ms = s.deploys_per_service_per_day / day_ms
            t = 0.0
            while rate_per_ms > 0:
                t += self.rng.expovariate(rate_per_ms)
                if t >= self.end_ms:
                    break
                self._at(int(t), self._deploy, name)
        for service, count, lo, hi in self.faults.deaths:
            self._at(lo, self._kill, (service, count))
            if hi is not None:
                self._at(hi, self._revive, service)
        f = self.faults
        for service, index, at, offset_ms in f.clock_skews:
            self._at(at, self._skew, (self._instances[service][index], offset_ms))
        for service, index, at, stamp in f.stray_beats:
            self._at(at, self._stray_beat, (self._instances[service][index], stamp))
        for service, index, at in f.instance_deaths:
            self._at(at, self._kill_instance, self._instances[service][index])
        for service, at, interval in f.interval_changes:
            self._at(at, self._set_interval, (service, interval))
        for service, at, delta, stopping in f.scaling:
            self._at(at, self._scale, (service, delta, stopping))

    def ms_to_dt(self, t: int) -> datetime:
        return self.start + timedelta(milliseconds=t)

    def _lognormal_ms(self, median_ms: float, sigma: float) -> float:
        return median_ms * math.exp(sigma * self.rng.gauss(0.0, 1.0))

    # ------------------------------------------------------------------ events
    def _event_id(self) -> str:
        self._n_events += 1
        return f"{self._event_prefix}{self._n_events}"

    def _pick(self, service: str) -> Instance | None:
        alive = self._alive[service]
        if not alive:
            return None
        return alive[int(self.rng.random() * len(alive))]

    def _pay_event(
        self,
        service: str,
        action: str,
        outcome: str | None,
        order: Order,
        status: str,
        attempt: Attempt | None = None,
        *,
        error_code: str | None = None,
        category: str | None = None,
        latency_ms: int | None = None,
    ) -> None:
        instance = self._pick(service)
        if instance is None:
            return
        fields: dict[str, Any] = {"order_id": order.order_id}
        if attempt is not None:
            fields["attempt_id"] = attempt.attempt_id
            fields["channel"] = attempt.channel
            fields["method"] = self.channels[attempt.channel].method
        fields["merchant_id"] = order.merchant.merchant_id
        fields["amount_minor"] = attempt.amount if attempt is not None else order.amount
        fields["currency"] = CURRENCY
        fields["status"] = status
        if error_code is not None:
            fields["error_code"] = error_code
            fields["error_category"] = category
        if latency_ms is not None:
            fields["latency_ms"] = latency_ms
        instance.emitter.payment(self._event_id(), action, outcome, order.trace, fields)

    # ------------------------------------------------------------------ services
    def _start_instance(self, name: str) -> None:
        instance_id = f"{name}-{self.rng.getrandbits(24):06x}"
        clock = HostClock(self.clock)
        interval = self._intervals.get(name, self.settings.heartbeat_interval_s)
        instance = Instance(name, instance_id, self.telemetry.open(name, instance_id, clock), clock, interval)
        self._instances[name].append(instance)
        self._alive[name].append(instance)
        self._after(self.rng.uniform(0, self.settings.heartbeat_interval_s * 1000), self._beat, instance)

    def _beat(self, instance: Instance) -> None:
        if not instance.alive:
            instance.beating = False
            return  # died: silence, no stopping beat
        self._send_beat(instance)
        if instance.stopping:
            instance.alive = False
            return
        self._after(instance.interval_s * 1000 + self.rng.uniform(-150, 150), self._beat, instance)

    def _send_beat(self, instance: Instance) -> None:
        instance.seq += 1
        section = {
            "interval_s": instance.interval_s,
            "seq": instance.seq,
            "status": "stopping" if instance.stopping else "up",
            "checks": {"db": "ok", "kafka": "ok"},
        }
        instance.emitter.heartbeat(self._event_id(), section)

    def _deploy(self, name: str) -> None:
        """Rolling restart: each instance announces its stop, a new one replaces it."""
        for i, instance in enumerate(list(self._alive[name])):
            self._after(i * 45_000 + 1, self._stop_instance, instance)

    def _stop_instance(self, instance: Instance) -> None:
        name = instance.name
        if not instance.alive or instance.stopping or len(self._alive[name]) < 2:
            return  # never take the last instance down for a deploy
        instance.stopping = True
        self._alive[name].remove(instance)
        self._beat(instance)
        self._after(self.rng.uniform(15_000, 30_000), self._start_instance, name)

    def _kill(self, arg: tuple[str, int | None]) -> None:
        name, count = arg
        victims = list(self._alive[name]) if count is None else list(self._alive[name])[:count]
        for instance in victims:
            instance.alive = False
            self._alive[name].remove(instance)

    def _skew(self, arg: tuple[Instance, int]) -> None:
        """The host's NTP died (or came back): its clock is `offset` ms off from now on."""
        instance, offset_ms = arg
        instance.clock.offset = timedelta(milliseconds=offset_ms)

    def _stray_beat(self, arg: tuple[Instance, datetime]) -> None:
        """One extra beat stamped with a date no working clock gives (a bad RTC read, a bug)."""
        instance, stamp = arg
        if not instance.alive:
            return
        saved = instance.clock.offset
        instance.clock.offset = stamp - self.clock.now()
        self._send_beat(instance)
        instance.clock.offset = saved

    def _kill_instance(self, instance: Instance) -> None:
        if instance.alive and not instance.stopping:
            instance.alive = False
            self._alive[instance.name].remove(instance)
            for observer in self.observers:
                observer.instance_left(self.now, instance, False)

    def _set_interval(self, arg: tuple[str, float | None]) -> None:
        """The service is redeployed with another heartbeat interval (None: the usual one); each
        instance announces it from its next beat on."""
        name, changed = arg
        interval = self.settings.heartbeat_interval_s if changed is None else changed
        self._intervals[name] = interval
        for instance in self._alive[name]:
            instance.interval_s = interval

    def _scale(self, arg: tuple[str, int, bool]) -> None:
        """An autoscaler adds instances, or removes the newest ones (never the last), with or
        without a `stopping` beat (a graceful shutdown, or a terminated VM)."""
        name, delta, stopping = arg
        for _ in range(delta):
            self._start_instance(name)
        for _ in range(-delta):
            alive = self._alive[name]
            if len(alive) < 2:
                return
            instance = alive.pop()
            if stopping:
                instance.stopping = True
                self._beat(instance)
            else:
                instance.alive = False
            for observer in self.observers:
                observer.instance_left(self.now, instance, stopping)

    def _revive(self, name: str) -> None:
        for instance in self._instances[name]:
            if not instance.alive and not instance.stopping:
                instance.alive = True
                self._alive[name].append(instance)
                if not instance.beating:  # a quick restart finds its old beat still scheduled
                    instance.beating = True
                    self._after(self.rng.uniform(500, 3000), self._beat, instance)

    # ------------------------------------------------------------------ customers and orders
    def arrival_rate(self, channel: str, t: int) -> float:
        """New orders per second whose customer starts on `channel`."""
        override = self.faults.channel_rate.get(channel)
        if override is not None:
            return override
        s = self.settings
        local_h = (self.start.hour + self.start.minute / 60 + t / 3_600_000 + s.utc_offset_h) % 24
        return s.peak_orders_per_s * self.channels[channel].share * diurnal(local_h)

    def _next_arrival(self, channel: str) -> None:
        rate = self.arrival_rate(channel, self.now)
        gap_ms = self.rng.expovariate(rate / 1000) if rate > 0 else 60_000
        if gap_ms > 60_000:  # volume changes slowly: look again in a minute (memoryless)
            self._after(60_000, self._next_arrival, channel)
        else:
            self._after(gap_ms, self._arrive, channel)

    def _arrive(self, channel: str) -> None:
        self._next_arrival(channel)
        if not self._alive[ORDER_SERVICE]:
            return
        rng = self.rng
        merchant = rng.choices(MERCHANTS, cum_weights=self._merchant_weights)[0]
        amount = max(1, round(self._lognormal_ms(merchant.amount_median_minor, merchant.amount_sigma)))
        self._n_orders += 1
        order = Order(
            f"{self._order_prefix}{self._n_orders:09d}", merchant, amount, self.now, f"{rng.getrandbits(64):016x}"
        )
        self._pay_event(ORDER_SERVICE, "order_created", None, order, "unpaid")
        self._after(self.settings.order_timeout_s * 1000, self._order_timeout, order)
        self._after(self._lognormal_ms(6000, 0.6), self._pay, (order, channel))

    def _other_channel(self, channel: str) -> str:
        while True:
            other = self.rng.choices(self._channel_names, cum_weights=self._channel_weights)[0]
            if other != channel:
                return other

    def _react(self, order: Order, channel: str, kind: str) -> None:
        """The customer's next move after a failed or unclear attempt."""
        retry, switch = REACTION[kind]
        r = self.rng.random()
        if r < retry:
            self._after(self._lognormal_ms(8000, 0.5), self._pay, (order, channel))
        elif r < retry + switch:
            self._after(self._lognormal_ms(12000, 0.5), self._pay, (order, self._other_channel(channel)))

    def _pay(self, arg: tuple[Order, str]) -> None:
        order, channel = arg
        if order.paid or order.closed or order.n_attempts >= MAX_ATTEMPTS_PER_ORDER:
            return
        if not self._alive[GATEWAY]:
            return  # the cashier shows an error page; this customer leaves
        merchant = order.merchant
        if order.n_attempts and merchant.repricing and self.rng.random() < merchant.repricing:
            order.amount = max(1, round(order.amount * self.rng.uniform(0.95, 1.08)))
        attempt = self._new_attempt(order, channel)
        double = self.faults.double(channel, self.now)
        if double and self.rng.random() < double:
            # The gateway re-sends the request under a new serial (a retry bug); the channel charges both.
            twin = self._new_attempt(order, channel)
            twin.double_submitted = attempt.double_submitted = True
            self._request(twin)
            self._request(attempt)
        else:
            self._request(attempt)

    def _new_attempt(self, order: Order, channel: str) -> Attempt:
        order.n_attempts += 1
        self._n_attempts += 1
        attempt = Attempt(f"{self._attempt_prefix}{self._n_attempts:09d}", order, channel, order.amount, self.now)
        if self.keep_records:
            self.truth.add_attempt(attempt)
        return attempt

    # ------------------------------------------------------------------ the channel
    def _request(self, attempt: Attempt) -> None:
        """The gateway sends the attempt; the channel decides what really happens."""
        profile = self.channels[attempt.channel]
        rng = self.rng
        latency = self._lognormal_ms(profile.latency_median_ms, profile.latency_sigma)
        failing = self.faults.failing(attempt.channel, self.now)
        force_success = attempt.double_submitted
        if failing and not force_success and rng.random() < failing:
            code = OUTAGE_CODES[rng.random() < 0.3]
            if rng.random() < 0.2:
                latency = GATEWAY_TIMEOUT_MS + 1
                outcome = ("timeout", None, None)
            else:
                outcome = ("fail", code, "channel")
            self._after(latency, self._respond, (attempt, outcome, int(min(latency, GATEWAY_TIMEOUT_MS)), True))
            return
        if latency > GATEWAY_TIMEOUT_MS:
            outcome: tuple = ("timeout", None, None)
        else:
            outcome = ("ok", None, None)
            r = rng.random()
            spike = self.faults.code_spike(attempt.channel, self.now) if self.faults.code_spikes else None
            if spike is not None and not force_success and rng.random() < spike[2]:
                outcome = ("fail", spike[0], spike[1])
            elif not force_success:
                factor = self.faults.customer_factor(attempt.channel, self.now) if self.faults.customer_bursts else 1.0
                for code, category, p in profile.failures:
                    if category != "channel":
                        p *= factor
                    if r < p:
                        outcome = ("fail", code, category)
                        break
                    r -= p
            if outcome[0] == "ok" and not profile.wallet and not force_success and rng.random() < profile.processing:
                outcome = ("processing", None, None)
        self._after(
            min(latency, GATEWAY_TIMEOUT_MS),
            self._respond,
            (attempt, outcome, int(min(latency, GATEWAY_TIMEOUT_MS)), False),
        )
        if outcome[0] == "timeout" and not profile.wallet and rng.random() < 0.4:
            attempt.charged_ms = self.now + int(latency)  # charged although the gateway gave up
            self._at(attempt.charged_ms, self._charged, attempt)

    def _respond(self, arg: tuple[Attempt, tuple, int, bool]) -> None:
        attempt, (kind, code, category), latency, outage = arg
        order, profile, rng = attempt.order, self.channels[attempt.channel], self.rng
        if outage:
            for observer in self.observers:
                observer.outage_failure(self.now, attempt)
        if kind == "fail":
            attempt.failed_ms = self.now
            attempt.error_code = code
            attempt.business_final = True
            self._pay_event(
                GATEWAY,
                "payment_requested",
                "failure",
                order,
                "failure",
                attempt,
                error_code=code,
                category=category,
                latency_ms=latency,
            )
            self._react(order, attempt.channel, category)
            return
        if kind == "timeout":
            self._pay_event(
                GATEWAY,
                "payment_requested",
                "unknown",
                order,
                "confirming",
                attempt,
                error_code="GATEWAY_TIMEOUT",
                category="channel",
                latency_ms=latency,
            )
            if attempt.charged_ms is None:
                attempt.close_ms = self.now + 900_000
            self._schedule_queries(attempt)
            self._react(order, attempt.channel, "timeout")
            return
        if profile.wallet:
            self._pay_event(GATEWAY, "payment_requested", "unknown", order, "confirming", attempt, latency_ms=latency)
            attempt.close_ms = attempt.requested_ms + 900_000  # wallets close unpaid orders silently
            self._schedule_queries(attempt)
            if attempt.charged_ms is None and (attempt.double_submitted or rng.random() >= profile.abandon):
                attempt.charged_ms = self.now + int(self._lognormal_ms(11000, 0.6))
                self._at(attempt.charged_ms, self._charged, attempt)
            elif attempt.charged_ms is None and rng.random() < 0.35:
                self._after(self._lognormal_ms(40000, 0.5), self._pay, (order, self._other_channel(attempt.channel)))
            return
        if kind == "processing":
            self._pay_event(GATEWAY, "payment_requested", "unknown", order, "confirming", attempt, latency_ms=latency)
            self._schedule_queries(attempt)
            if rng.random() < 0.8:
                attempt.charged_ms = self.now + int(self._lognormal_ms(8000, 0.8))
                self._at(attempt.charged_ms, self._charged, attempt)
            else:
                attempt.failed_ms = self.now + int(self._lognormal_ms(8000, 0.8))
                attempt.error_code = "INSUFFICIENT_FUNDS"
            return
        # Card or bank: the money moved synchronously.
        attempt.charged_ms = self.now
        self._pay_event(GATEWAY, "payment_requested", "success", order, "success", attempt, latency_ms=latency)
        self._success_seen(attempt)
        self._deliver(attempt)
        self._after(
            self._lognormal_ms(profile.callback_median_s * 1000, profile.callback_sigma), self._callback, (attempt, 0)
        )

    def _charged(self, attempt: Attempt) -> None:
        """The money moved at the channel: it will notify, and the customer waits for the shop."""
        profile = self.channels[attempt.channel]
        self._after(
            self._lognormal_ms(profile.callback_median_s * 1000, profile.callback_sigma), self._callback, (attempt, 0)
        )
        if profile.wallet:
            self._after(self._lognormal_ms(35000, 0.45), self._customer_check, attempt)

    def _callback(self, arg: tuple[Attempt, int]) -> None:
        attempt, tries = arg
        if self.faults.lost(attempt.channel, self.now) or not self._alive[RECEIVER]:
            if tries < len(CALLBACK_RETRY_S):
                self._after(CALLBACK_RETRY_S[tries] * 1000, self._callback, (attempt, tries + 1))
            return
        status = attempt.status_at(self.now)
        if status == "paid":
            self._pay_event(RECEIVER, "channel_callback", "success", attempt.order, "success", attempt)
            self._success_seen(attempt)
            self._deliver(attempt)
            if self.rng.random() < 0.01:  # the channel did not see our ack in time and notifies again
                self._after(self.rng.uniform(3000, 30000), self._callback, (attempt, len(CALLBACK_RETRY_S)))
        elif status == "failed":
            self._pay_event(
                RECEIVER,
                "channel_callback",
                "failure",
                attempt.order,
                "failure",
                attempt,
                error_code=attempt.error_code,
                category="user",
            )
            attempt.business_final = True

    # ------------------------------------------------------------------ the business applying results
    def _success_seen(self, attempt: Attempt) -> None:
        if attempt.success_seen:
            return
        attempt.success_seen = True
        order = attempt.order
        order.seen_success += 1
        for observer in self.observers:
            observer.success_seen(self.now, attempt)
            if order.seen_success == 2:
                observer.duplicate_seen(self.now, order)

    def _deliver(self, attempt: Attempt) -> None:
        """A success result goes through the order service's result queue."""
        held = self.faults.held_until(attempt.channel, attempt.order, self.now)
        if held is not None:
            self._at(held + int(self.rng.uniform(500, 30_000)), self._apply, attempt)
        elif self.rng.random() < 1e-4:
            return  # a transient DB error loses the update; the compensation job repairs it later
        else:
            self._after(self._lognormal_ms(120, 0.6), self._apply, attempt)

    def _apply(self, attempt: Attempt) -> None:
        if attempt.business_final:
            return
        attempt.business_final = True
        order = attempt.order
        if order.paid or order.closed:
            # Money arrived for an order already paid (or closed): refund it after checking.
            self._after(self.rng.uniform(120_000, 900_000), self._refund, attempt)
            return
        order.paid = True
        self._pay_event(ORDER_SERVICE, "order_paid", "success", order, "success", attempt)
        for observer in self.observers:
            observer.order_paid(self.now, order)
        if self.rng.random() < 0.003:  # the customer cancels later and gets their money back
            self._after(self.rng.uniform(120_000, 1_800_000), self._refund, attempt)

    def _refund(self, attempt: Attempt) -> None:
        self._pay_event(GATEWAY, "refund_requested", None, attempt.order, "refunding", attempt)
        self._after(self._lognormal_ms(4000, 0.7), self._refunded, attempt)

    def _refunded(self, attempt: Attempt) -> None:
        attempt.refunded_ms = self.now
        self._pay_event(RECEIVER, "refund_succeeded", "success", attempt.order, "refunded", attempt)

    def _customer_check(self, attempt: Attempt) -> None:
        """The customer paid in the wallet and looks at the shop: still 'unpaid'?"""
        order = attempt.order
        if order.paid or order.closed:
            return
        if self.rng.random() < self.settings.repay_probability:
            channel = attempt.channel if self.rng.random() < 0.6 else self._other_channel(attempt.channel)
            self._after(self._lognormal_ms(5000, 0.5), self._pay, (order, channel))

    def _order_timeout(self, order: Order) -> None:
        if not order.paid and not order.closed:
            order.closed = True
            self._pay_event(ORDER_SERVICE, "order_closed", None, order, "closed")

    # ------------------------------------------------------------------ the business's compensation job
    def _schedule_queries(self, attempt: Attempt, k: int = 0) -> None:
        """The job's k-th look at an attempt, at its k-th age (next one scheduled by this one)."""
        ages = self.settings.query_after_s
        if k < len(ages):
            due = attempt.requested_ms + int(ages[k] * 1000 + self.rng.uniform(0, 30_000))
            self._at(max(due, self.now + 1), self._query, (attempt, k))

    def _query(self, arg: tuple[Attempt, int]) -> None:
        attempt, k = arg
        if attempt.business_final:
            return
        self._schedule_queries(attempt, k + 1)
        if not self._alive[COMPENSATION]:
            return
        profile, order, rng = self.channels[attempt.channel], attempt.order, self.rng
        latency = int(self._lognormal_ms(profile.query_median_ms, 0.5))
        error_rate = self.faults.query_error(attempt.channel, self.now)
        if error_rate and rng.random() < error_rate:
            self._pay_event(
                COMPENSATION,
                "channel_query_result",
                "unknown",
                order,
                "confirming",
                attempt,
                error_code="QUERY_TIMEOUT",
                category="system",
                latency_ms=latency,
            )
            for observer in self.observers:
                observer.query_failed(self.now, attempt)
            return
        status = attempt.status_at(self.now)
        if status == "paid":
            self._pay_event(
                COMPENSATION, "channel_query_result", "success", order, "success", attempt, latency_ms=latency
            )
            self._success_seen(attempt)
            self._deliver(attempt)
        elif status == "pending":
            self._pay_event(
                COMPENSATION, "channel_query_result", "unknown", order, "confirming", attempt, latency_ms=latency
            )
        else:
            self._pay_event(
                COMPENSATION,
                "channel_query_result",
                "failure",
                order,
                status if status == "closed" else "failure",
                attempt,
                error_code=attempt.error_code or "ORDER_CLOSED",
                category="user",
                latency_ms=latency,
            )
            attempt.business_final = True
