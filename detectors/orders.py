"""Per-order state: paid-but-pending orders, unknown attempts, duplicate charges.

One small state machine per business order, fed payment events and clock ticks. The
three detectors share it because they judge the same facts: which attempts the
channels say were charged, and whether the business recorded the order as paid.

Rules (docs/detectors.md has the reasoning):
- An attempt's status only moves forward: pending → failed → succeeded → refunded.
  A failure after a success (late or reordered message) changes nothing; a success
  after a failure wins, because whoever moved the money is authoritative.
- Every effect is idempotent (sets, not counters), so a re-delivered event changes nothing.
- A channel's "not found" inside `not_found_grace_s` of the attempt is unknown, not failure.
- State is kept in slotted objects with epoch-ms ints and interned channel names,
  and evicted after the order is finished (or abandoned).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable

from paywatch.contract import ATTEMPT_ACTIONS, Event
from paywatch.detectors.settings import ChannelSettings, DetectorSettings
from paywatch.detectors.timebase import to_dt
from paywatch.detectors.windows import WindowCounter
from paywatch.finding import AttemptEvidence, Evidence, Finding, FindingPayment, make_finding

# attempt states (ordered: only ever raised, except refunded which follows succeeded)
PENDING, FAILED, SUCCEEDED, REFUNDED = 0, 1, 2, 3
# order business states
OPEN, PAID, CLOSED = 0, 1, 2
# order flags
PENDING_OPEN, DUPLICATE_OPEN = 1, 2

CUSTOMER_CATEGORIES = frozenset({"user", "limit"})


class Attempt:
    __slots__ = ("amount", "channel", "currency", "event_id", "id", "method", "querying", "since", "state")

    def __init__(self, attempt_id: str, channel: str, method: str | None, since: int) -> None:
        self.id = attempt_id
        self.channel = channel
        self.method = method
        self.since = since  # ms the attempt was first seen (sent)
        self.state = PENDING
        self.querying = False  # an unknown_attempt finding is open
        self.event_id: str | None = None  # the event that proved the charge
        self.amount: int | None = None
        self.currency: str | None = None


class Order:
    __slots__ = ("attempts", "business", "charged", "due", "flags", "last", "merchant")

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.merchant: str | None = None  # interned: findings name it, so SREs can slice by merchant
        self.business = OPEN
        self.charged = 0  # ms of the first charge the business has not recorded as paid (0: none)
        self.flags = 0
        self.due = 0  # second the order sits in the timer wheel for
        self.last = 0  # ms of the latest event

    def attempt(self, attempt_id: str) -> Attempt | None:
        for a in self.attempts:
            if a.id == attempt_id:
                return a
        return None

    def charges(self) -> list[Attempt]:
        return [a for a in self.attempts if a.state == SUCCEEDED]


class OrderTracker:
    """Paid-but-pending, unknown attempts and duplicate charges for the orders of one partition."""

    def __init__(self, settings: DetectorSettings, windows: WindowCounter) -> None:
        self.settings = settings
        self.windows = windows
        self.orders: dict[str, Order] = {}
        self._wheel: defaultdict[int, list[str]] = defaultdict(list)  # second -> order ids due then
        self._next_second = 0  # the wheel has been run up to (excluding) this second
        self._not_found = frozenset(settings.not_found_codes)
        self._retention_ms = int(settings.finished_retention_s * 1000)
        self._ttl_ms = int(settings.open_order_ttl_s * 1000)
        self._channel: dict[str, tuple[str, int, int, int]] = {}

    # --- per-channel knobs, cached as ms ints --------------------------------
    def _knobs(self, channel: str) -> tuple[str, int, int, int]:
        """(interned channel, paid grace ms, query-after ms, not-found grace ms); cached for at most
        `max_channels` channels, so made-up channel names cost no memory beyond their orders."""
        k = self._channel.get(channel)
        if k is None:
            c: ChannelSettings = self.settings.for_channel(channel)
            cached = len(self._channel) < self.settings.max_channels
            k = (
                sys.intern(channel) if cached else channel,
                int(c.paid_grace_s * 1000),
                int(c.query_after_s * 1000),
                int(c.not_found_grace_s * 1000),
            )
            if cached:
                self._channel[k[0]] = k
        return k

    # --- events ---------------------------------------------------------------
    def feed(self, event: Event, at: int) -> list[Finding]:
        """Apply one payment event whose `@timestamp` is `at` (epoch ms)."""
        p = event.payment
        action = event.event.action
        order_id = p.order_id
        order = self.orders.get(order_id)
        if order is None:
            order = self.orders[order_id] = Order()
            order.last = at
            self._sooner(order_id, order, at + self._ttl_ms)
        elif at > order.last:
            order.last = at  # a later eviction is found when the earlier due time fires
        if order.merchant is None and p.merchant_id is not None:
            order.merchant = sys.intern(p.merchant_id)
        found: list[Finding] = []
        if action in ATTEMPT_ACTIONS:
            self._on_attempt(event, order_id, order, at, found)
        elif action == "order_paid":
            if order.business != PAID:
                order.business = PAID
                order.charged = 0
                if order.flags & PENDING_OPEN:
                    order.flags &= ~PENDING_OPEN
                    found.append(self._pending_finding(order_id, order, at, "resolved"))
                self._sooner(order_id, order, self._evict_at(order))
        elif action == "order_closed":
            if order.business == OPEN:
                order.business = CLOSED
                self._sooner(order_id, order, self._evict_at(order))
        elif action == "refund_succeeded" and p.attempt_id is not None:
            a = order.attempt(p.attempt_id)
            if a is not None and a.state == SUCCEEDED:
                a.state = REFUNDED
                if order.flags & DUPLICATE_OPEN and len(order.charges()) <= 1:
                    order.flags &= ~DUPLICATE_OPEN
                    found.append(self._duplicate_finding(order_id, order, at, "resolved"))
        return found

    def _on_attempt(self, event: Event, order_id: str, order: Order, at: int, found: list[Finding]) -> None:
        p = event.payment
        channel, grace, query_after, not_found_grace = self._knobs(p.channel)
        a = order.attempt(p.attempt_id)
        if a is None:
            a = Attempt(p.attempt_id, channel, p.method, at)
            order.attempts.append(a)
            for t in self.windows.tallies(at, channel, p.method):
                t.attempts += 1
            self._sooner(order_id, order, at + query_after)
        elif at < a.since:
            a.since = at  # a reordered request: the attempt began earlier
        outcome = event.event.outcome
        if outcome == "success":
            if a.state >= SUCCEEDED:
                return
            first_final = a.state == PENDING
            a.state = SUCCEEDED
            a.event_id = event.event.id
            a.amount = p.amount_minor
            a.currency = p.currency
            self._finish(a, order_id, p.latency_ms, first_final, at, found)
            if order.business != PAID and not order.charged:
                order.charged = at + grace  # due time of the paid-but-pending check
                self._sooner(order_id, order, order.charged)
            charges = order.charges()
            if len(charges) >= 2:
                if not order.flags & DUPLICATE_OPEN:
                    order.flags |= DUPLICATE_OPEN
                    # counted on the channel of the first charge: the one the customer was not
                    # shown as paid (a re-payment elsewhere is the consequence, not the cause)
                    first = charges[0]
                    self.windows.count_order(at, "duplicates", first.channel, first.method, order.merchant)
                # opened, or updated with the newest charge
                found.append(self._duplicate_finding(order_id, order, at, "open"))
        elif outcome == "failure" and a.state == PENDING:
            if p.error_code in self._not_found and at - a.since < not_found_grace:
                return  # not landed at the channel yet: still unknown
            a.state = FAILED
            self._finish(a, order_id, p.latency_ms, True, at, found)
            customer = p.error_category in CUSTOMER_CATEGORIES
            # A compensating query's answer restates the attempt's fate minutes later (often only
            # "closed" after the channel's timeout): its code is no news about customers now, and
            # counting it would turn every outage's aftermath into an error-code spike.
            fresh = event.event.action != "channel_query_result"
            for t in self.windows.tallies(at, channel, p.method):
                if customer:
                    t.customer_failures += 1
                    if fresh:
                        code = p.error_code or p.error_category
                        t.codes[code] = t.codes.get(code, 0) + 1
                else:
                    t.failures += 1

    def _finish(
        self, a: Attempt, order_id: str, latency: int | None, first: bool, at: int, found: list[Finding]
    ) -> None:
        if first:
            for t in self.windows.tallies(at, a.channel, a.method):
                t.finished += 1
                if latency is not None:
                    t.latency_sum += latency
                    t.latency_n += 1
        if a.querying:
            a.querying = False
            found.append(self._unknown_finding(order_id, a, at, "resolved"))

    # --- clock ----------------------------------------------------------------
    def tick(self, now_ms: int) -> list[Finding]:
        found: list[Finding] = []
        second = now_ms // 1000
        if not self._next_second:
            self._next_second = min(self._wheel, default=second)
        wheel = self._wheel
        seconds: Iterable[int] = range(self._next_second, second + 1)
        if len(seconds) > len(wheel):  # a jump (a claim from year 1, then today): only the seconds due
            seconds = sorted(s for s in wheel if s <= second)
        for s in seconds:
            due = wheel.pop(s, None)
            if due is None:
                continue
            for order_id in due:
                order = self.orders.get(order_id)
                if order is not None and order.due == s:
                    self._expire(order_id, order, now_ms, found)
        self._next_second = second + 1
        return found

    def _expire(self, order_id: str, order: Order, now: int, found: list[Finding]) -> None:
        charges = order.charges() if order.charged and order.charged <= now else ()
        if charges and not order.flags & PENDING_OPEN:
            order.flags |= PENDING_OPEN
            charge = charges[0]
            self.windows.count_order(order.charged, "pending", charge.channel, charge.method, order.merchant)
            found.append(self._pending_finding(order_id, order, order.charged, "open"))
        elif order.charged and order.charged <= now and not order.flags & PENDING_OPEN:
            order.charged = 0  # the charge was refunded before the grace ran out
        for a in order.attempts:
            if a.state == PENDING and not a.querying:
                deadline = a.since + self._knobs(a.channel)[2]
                if deadline <= now:
                    a.querying = True
                    for t in self.windows.tallies(deadline, a.channel, a.method):
                        t.timeouts += 1
                    found.append(self._unknown_finding(order_id, a, deadline, "open"))
        if self._evict_at(order) <= now:
            del self.orders[order_id]
            return
        order.due = 0
        self._sooner(order_id, order, self._next_due(order))

    def _evict_at(self, order: Order) -> int:
        if order.business == OPEN or order.flags:
            return order.last + self._ttl_ms
        for a in order.attempts:
            if a.querying:
                return order.last + self._ttl_ms
        return order.last + self._retention_ms  # finished: kept only to recognise late events

    def _next_due(self, order: Order) -> int:
        due = self._evict_at(order)
        if order.charged and not order.flags & PENDING_OPEN:
            due = min(due, order.charged)
        for a in order.attempts:
            if a.state == PENDING and not a.querying:
                due = min(due, a.since + self._knobs(a.channel)[2])
        return due

    def _sooner(self, order_id: str, order: Order, due_ms: int) -> None:
        """Put the order in the timer wheel at `due_ms` unless it is already due earlier.

        Only ever moving the due time earlier keeps feeding cheap; whatever fires recomputes the
        next due time from the whole order, so a later deadline is never lost."""
        second = -(-due_ms // 1000)  # ceil: never fire before the deadline
        if second < self._next_second:
            second = self._next_second
        if not order.due or second < order.due:
            order.due = second
            self._wheel[second].append(order_id)

    # --- findings -------------------------------------------------------------
    def _pending_finding(self, order_id: str, order: Order, at: int, state: str) -> Finding:
        charges = order.charges() or [a for a in order.attempts if a.state == REFUNDED]
        first = charges[0]
        grace = self._knobs(first.channel)[1]
        return make_finding(
            at=to_dt(at),
            kind="paid_but_pending",
            state=state,
            fingerprint=f"paid_but_pending:{order_id}",
            severity="warning",
            summary=f"order {order_id} charged on {first.channel} but not recorded as paid within {grace // 1000} s"
            if state == "open"
            else f"order {order_id} recorded as paid",
            evidence=Evidence(
                event_ids=[first.event_id] if first.event_id else [],
                figures={"paid_grace_s": grace / 1000},
                attempts=_attempts(charges),
            ),
            payment=FindingPayment(
                order_id=order_id,
                attempt_id=first.id,
                channel=first.channel,
                method=first.method,
                merchant_id=order.merchant,
            ),
        )

    def _duplicate_finding(self, order_id: str, order: Order, at: int, state: str) -> Finding:
        charges = [a for a in order.attempts if a.state in (SUCCEEDED, REFUNDED)]
        live = [a for a in charges if a.state == SUCCEEDED]
        first, newest = charges[0], charges[-1]
        return make_finding(
            at=to_dt(at),
            kind="duplicate_charge",
            state=state,
            fingerprint=f"duplicate_charge:{order_id}",
            severity="warning",
            summary=f"order {order_id} charged {len(live)} times "
            f"({', '.join(sorted({a.channel for a in live}))}); refund candidates"
            if state == "open"
            else f"order {order_id} duplicate charges refunded",
            evidence=Evidence(
                event_ids=[a.event_id for a in charges if a.event_id],
                figures={"charges": len(live), "refunded": len(charges) - len(live)},
                attempts=_attempts(charges),
            ),
            payment=FindingPayment(
                order_id=order_id, attempt_id=newest.id, channel=first.channel, merchant_id=order.merchant
            ),
        )

    def _unknown_finding(self, order_id: str, a: Attempt, at: int, state: str) -> Finding:
        query_after = self._knobs(a.channel)[2]
        return make_finding(
            at=to_dt(at),
            kind="unknown_attempt",
            state=state,
            fingerprint=f"unknown_attempt:{order_id}:{a.id}",
            severity="info",
            summary=f"attempt {a.id} on {a.channel} has no outcome after {query_after // 1000} s: query the channel"
            if state == "open"
            else f"attempt {a.id} on {a.channel} has an outcome",
            evidence=Evidence(figures={"sent_at_ms": a.since, "query_after_s": query_after / 1000}),
            payment=FindingPayment(order_id=order_id, attempt_id=a.id, channel=a.channel, method=a.method),
        )


def _attempts(attempts: list[Attempt]) -> list[AttemptEvidence]:
    return [
        AttemptEvidence(
            attempt_id=a.id,
            channel=a.channel,
            event_id=a.event_id or "",
            amount_minor=a.amount,
            currency=a.currency,
        )
        for a in attempts
    ]
