"""The compensator: which attempts to ask their channel about, when, and what the answers
mean. Pure: fed findings, payment events, query results and the time, it returns what to
publish; the executor and the CLI do the I/O.

- `unknown_attempt` findings ask "what happened to this attempt?": query now, then on the
  schedule until the channel gives a final answer or the horizon passes (give-up finding).
- `paid_but_pending` findings are never acted on from the claim alone: the attempt is
  queried, and only a fresh "paid" from the channel becomes a repair action.
- `duplicate_charge` findings re-confirm every claimed successful attempt by query; only
  when at least two are confirmed paid are the extras published as refund candidates, and
  a refund (only with `auto_refund`) waits for one more fresh query of its own attempt.
- Every query answer is also a `channel_query_result` event, so the detectors resolve or
  escalate from what the channel said.
- An answer serves only the purposes it was sent for: a refund rests on a query sent after
  its refund candidate existed, never on one already in flight.
- An untrusted answer (unverified, or about another attempt, amount or currency) acts on
  nothing and raises `untrusted_answer`; refused credentials raise one `channel_credentials`
  per channel and wait for the next scheduled query instead of retrying in a storm.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paywatch.compensation.audit import action_doc
from paywatch.compensation.channels import Purpose, QueryRequest, QueryResult
from paywatch.compensation.schedule import next_query, retry_after_error
from paywatch.compensation.settings import CompensationSettings
from paywatch.contract import PAYMENT, Event, EventMeta, Payment, Service, ServiceInstance
from paywatch.finding import Evidence, Finding, FindingPayment, make_finding
from paywatch.ids import stable_id

Key = tuple[str, str]  # (channel, attempt_id)
FINAL_OUTCOMES = ("success", "failure")
MONEY_PURPOSES = frozenset({"confirm_paid", "confirm_duplicate", "pre_refund"})
PURPOSE_OF_KIND: dict[str, Purpose] = {
    "unknown_attempt": "status",
    "paid_but_pending": "confirm_paid",
    "duplicate_charge": "confirm_duplicate",
}


@dataclass
class Effects:
    """What one call produced: events for payments.events, action documents for
    paywatch.actions, findings (give-up, query unavailable) for paywatch.findings."""

    events: list[Event] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def __iadd__(self, other: Effects) -> Effects:
        self.events += other.events
        self.actions += other.actions
        self.findings += other.findings
        return self

    def __add__(self, other: Effects) -> Effects:
        return Effects(self.events + other.events, self.actions + other.actions, self.findings + other.findings)


@dataclass
class Answer:
    """A channel's final word on one attempt (or the lack of one)."""

    outcome: str  # success | failure | unknown (gave up / no query API)
    status: str
    refunded: bool = False
    event_id: str | None = None
    amount_minor: int | None = None
    refunded_minor: int | None = None
    currency: str | None = None

    @property
    def refundable_minor(self) -> int | None:
        """What is still charged and could be given back: None when the channel did not say
        both the amount and how much was refunded (then only a person may refund)."""
        if self.outcome != "success" or self.amount_minor is None or self.refunded_minor is None:
            return None
        return self.amount_minor - self.refunded_minor


@dataclass
class Task:
    channel: str
    attempt_id: str
    order_id: str
    anchor: datetime
    purposes: set[Purpose] = field(default_factory=set)
    due_at: datetime | None = None
    in_flight: bool = False
    seq: int = 0
    errors: int = 0
    last_status: str | None = None
    evidence: list[str] = field(default_factory=list)  # finding and query event ids
    amount_minor: int | None = None  # what the platform expects the channel to confirm
    currency: str | None = None
    refund_minor: int | None = None  # the refund candidate's amount, for the pre-refund query

    @property
    def key(self) -> Key:
        return (self.channel, self.attempt_id)


@dataclass
class DuplicateCase:
    order_id: str
    fingerprint: str
    attempts: list[Key]
    finding_event_id: str
    answers: dict[Key, Answer] = field(default_factory=dict)
    paid_attempt: str | None = None


class Compensator:
    def __init__(self, settings: CompensationSettings, instance_id: str = "compensator-0") -> None:
        self.settings = settings
        self.service = Service(name=settings.service_name, instance=ServiceInstance(id=instance_id))
        self.tasks: dict[Key, Task] = {}
        self.cases: dict[str, DuplicateCase] = {}
        self._heap: list[tuple[datetime, int, Key]] = []
        self._pushes = 0
        self._by_order: dict[str, set[Key]] = {}
        self._paid_orders: set[str] = set()
        self._repaired: set[str] = set()
        self._raised: dict[Key, str] = {}  # attempt → fingerprint of its open give-up/unavailable finding
        self._untrusted: dict[Key, str] = {}  # attempt → open untrusted_answer fingerprint
        self._credentials: dict[str, str] = {}  # channel → open channel_credentials fingerprint

    # -- inputs ----------------------------------------------------------------------------
    def on_finding(self, finding: Finding) -> Effects:
        meta, p, at = finding.finding, finding.payment, finding.timestamp
        purpose = PURPOSE_OF_KIND.get(meta.kind)
        if purpose is None or p is None or p.order_id is None:
            return Effects()
        if meta.state == "resolved":  # unknown_attempt is per attempt; the others are per order
            only = (p.channel, p.attempt_id) if purpose == "status" and p.channel and p.attempt_id else None
            self._drop_purpose(p.order_id, purpose, only)
            if purpose == "confirm_duplicate":
                self.cases.pop(p.order_id, None)
            return Effects()
        attempts = [(a.channel, a.attempt_id) for a in meta.evidence.attempts]
        money = {(a.channel, a.attempt_id): (a.amount_minor, a.currency) for a in meta.evidence.attempts}
        if p.attempt_id and p.channel and (p.channel, p.attempt_id) not in attempts:
            attempts.insert(0, (p.channel, p.attempt_id))
        anchor = _started_at(finding) or at
        effects = Effects()
        if purpose == "confirm_duplicate":
            case = self.cases.get(p.order_id)
            if case is None:
                if len(attempts) < 2:
                    return effects
                self.cases[p.order_id] = DuplicateCase(p.order_id, meta.fingerprint, attempts, finding.event.id)
            else:  # the detector re-emits the finding with each newer charge
                attempts = [k for k in attempts if k not in case.attempts]
                case.attempts += attempts
        for channel, attempt_id in attempts:
            if not self.settings.queryable(channel):
                effects += self._unavailable(at, channel, attempt_id, p.order_id, meta.kind, finding.event.id)
                continue
            task = self.tasks.get((channel, attempt_id))
            if task is None:
                task = Task(channel, attempt_id, p.order_id, anchor)
                self.tasks[task.key] = task
                self._by_order.setdefault(p.order_id, set()).add(task.key)
            task.purposes.add(purpose)
            task.evidence.append(finding.event.id)
            amount, currency = money.get(task.key, (None, None))
            task.amount_minor = task.amount_minor if amount is None else amount
            task.currency = task.currency or currency
            if not task.in_flight:
                self._schedule(task, at)
        if purpose == "confirm_duplicate":
            effects += self._evaluate_case(self.cases[p.order_id], at)
        return effects

    def on_event(self, event: Event) -> Effects:
        """Payment events that make queries unnecessary: the order got paid, or the channel's
        final answer arrived by callback (or from another querier)."""
        p, action = event.payment, event.event.action
        if p is None or event.service.name == self.service.name:
            return Effects()
        effects = Effects()
        if action == "order_paid" and (p.order_id in self._by_order or p.order_id in self.cases):
            self._paid_orders.add(p.order_id)
            case = self.cases.get(p.order_id)
            if case is not None and p.attempt_id:
                case.paid_attempt = p.attempt_id
            self._drop_purpose(p.order_id, "confirm_paid", None)
        elif action in ("channel_callback", "channel_query_result") and event.event.outcome in FINAL_OUTCOMES:
            key = (p.channel or "", p.attempt_id or "")
            if key in self.tasks:
                self._drop_purpose(p.order_id, "status", key)
            fingerprint = self._raised.pop(key, None)
            if fingerprint is not None:
                effects.findings.append(self._resolve(event.timestamp, fingerprint, key, p.order_id))
        return effects

    def due(self, now: datetime) -> list[QueryRequest]:
        """Queries due by `now`; each is in flight until its result comes back."""
        requests = []
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            task = self.tasks.get(key)
            if task is None or task.in_flight or task.due_at != at:
                continue  # cancelled, or rescheduled since
            task.in_flight, task.due_at = True, None
            task.seq += 1
            purposes = tuple(sorted(task.purposes))
            requests.append(
                QueryRequest(
                    task.channel,
                    task.order_id,
                    task.attempt_id,
                    task.seq,
                    purposes,
                    at,
                    amount_minor=task.amount_minor,
                    currency=task.currency,
                )
            )
        return requests

    def on_result(self, result: QueryResult, now: datetime) -> Effects:
        req = result.request
        key = (req.channel, req.attempt_id)
        task = self.tasks.get(key)
        effects = Effects()
        event = self._query_event(result, now, task) if result.answered else None
        outcome = event.event.outcome if event is not None else "unknown"
        query_id = stable_id("query", *key, req.seq, now.isoformat())
        effects.actions.append(
            self._action(
                now,
                "query",
                req.channel,
                req.order_id,
                req.attempt_id,
                rule="compensating_query",
                reason=f"query #{req.seq} for {', '.join(req.purposes) or 'nothing (cancelled)'}",
                id_parts=(*key, req.seq, now.isoformat()),
                outcome=outcome,
                evidence={"event_ids": [event.event.id] if event is not None else []},
                query=result,
            )
        )
        query_action = effects.actions[-1]["event"]["id"]
        if event is not None:
            effects.events.append(event)
        effects += self._trust_findings(result, now, query_action)
        if task is None:
            return effects
        task.in_flight = False
        if not task.purposes:  # nothing left to learn: the answer arrived another way meanwhile
            self._forget(task)
            return effects
        task.evidence.append(event.event.id if event is not None else query_id)
        schedule = self.settings.schedule_for(task.channel)
        # Money purposes added while this query was in flight need a query of their own.
        late = (task.purposes - set(req.purposes)) & MONEY_PURPOSES
        if event is None and (result.credentials or result.untrusted):
            nxt = next_query(schedule, task.anchor, task.attempt_id, now)
            if nxt is None:
                why = f"credentials refused ({result.credentials})" if result.credentials else "answers untrusted"
                return effects + self._give_up(task, now, why)
            self._schedule(task, nxt)
            return effects
        if event is None:
            task.errors += 1
            retry = retry_after_error(schedule, task.anchor, task.attempt_id, now, result.retry_after_s)
            if retry is None:
                return effects + self._give_up(task, now, f"query API kept failing ({result.error})")
            self._schedule(task, retry)
            return effects
        task.last_status = event.payment.status if event.payment else None
        if outcome not in FINAL_OUTCOMES:
            nxt = now if late else next_query(schedule, task.anchor, task.attempt_id, now)
            if nxt is None:
                return effects + self._give_up(task, now, f"channel still says {task.last_status}")
            self._schedule(task, nxt)
            return effects
        answer = Answer(
            outcome,
            task.last_status or "",
            result.refunded and outcome == "success",
            event.event.id,
            amount_minor=result.amount_minor,
            refunded_minor=result.refunded_minor,
            currency=result.currency,
        )
        if late:  # serve what the query was sent for; ask again, now, for the rest
            served = set(task.purposes) - late
            task.purposes = late
            self._schedule(task, now)
            return effects + self._serve(task, served, answer, now)
        return effects + self._settle(task, answer, now)

    # -- decisions -------------------------------------------------------------------------
    def _settle(self, task: Task, answer: Answer, now: datetime) -> Effects:
        """A final answer (or a final lack of one) for a task: serve every purpose, then forget it."""
        self._forget(task)
        return self._serve(task, set(task.purposes), answer, now)

    def _serve(self, task: Task, purposes: set[Purpose], answer: Answer, now: datetime) -> Effects:
        effects = Effects()
        if "confirm_paid" in purposes:
            effects += self._repair(task, answer, now)
        if "pre_refund" in purposes:
            effects += self._refund(task, answer, now)
        if "confirm_duplicate" in purposes:
            case = self.cases.get(task.order_id)
            if case is not None and task.key in case.attempts:
                case.answers[task.key] = answer
                effects += self._evaluate_case(case, now)
        return effects

    def _repair(self, task: Task, answer: Answer, now: datetime) -> Effects:
        order = task.order_id
        if order in self._paid_orders or order in self._repaired:
            return Effects()
        evidence = {"event_ids": list(task.evidence), "channel_status": answer.status}
        if answer.outcome == "success" and not answer.refunded:
            self._repaired.add(order)
            kind, outcome, reason = "repair", "success", f"channel confirms the payment ({answer.status})"
            statuses = {"from_status": "pending", "to_status": "paid"}
        else:
            kind, outcome, statuses = "repair_declined", "failure", {}
            reason = f"channel does not confirm the payment ({answer.status}); order left as it is"
        doc = self._action(
            now,
            kind,
            task.channel,
            order,
            task.attempt_id,
            rule="paid_but_pending_confirmed_by_query",
            reason=reason,
            id_parts=(order, task.attempt_id),
            outcome=outcome,
            evidence=evidence,
            **statuses,
        )
        return Effects(actions=[doc])

    def _evaluate_case(self, case: DuplicateCase, now: datetime) -> Effects:
        if any(key not in case.answers for key in case.attempts):
            return Effects()
        del self.cases[case.order_id]
        # A charge counts only while something of it is still charged, and the channel said how
        # much was refunded (WeChat's REFUND names no amount: that one is for a person).
        confirmed = [k for k in case.attempts if (case.answers[k].refundable_minor or 0) > 0]
        answers = {f"{c}/{a}": case.answers[(c, a)].status for c, a in case.attempts}
        evidence = {
            "event_ids": [case.finding_event_id] + [a.event_id for a in case.answers.values() if a.event_id],
            "finding_fingerprint": case.fingerprint,
            "channel_statuses": answers,
        }
        rule = "duplicate_charge_reconfirmed_by_query"
        if len(confirmed) < 2:
            reason = f"only {len(confirmed)} of {len(case.attempts)} attempts confirmed paid by the channels"
            doc = self._action(
                now,
                "refund_declined",
                None,
                case.order_id,
                None,
                rule=rule,
                reason=reason,
                id_parts=(case.order_id, case.fingerprint),
                outcome="failure",
                evidence=evidence,
            )
            return Effects(actions=[doc])
        keep = next((k for k in confirmed if k[1] == case.paid_attempt), confirmed[0])
        effects = Effects()
        for channel, attempt_id in confirmed:
            if (channel, attempt_id) == keep:
                continue
            charge = case.answers[(channel, attempt_id)]
            refund_minor = charge.refundable_minor or 0
            reason = (
                f"charged twice: keep {keep[0]}/{keep[1]}, refund {channel}/{attempt_id} "
                f"({refund_minor} of {charge.amount_minor} {charge.currency or ''} still charged)"
            )
            money = {
                "refund_minor": refund_minor,
                "charged_minor": charge.amount_minor or 0,
                "refunded_minor": charge.refunded_minor or 0,
                "currency": charge.currency or "",
            }
            effects.actions.append(
                self._action(
                    now,
                    "refund_candidate",
                    channel,
                    case.order_id,
                    attempt_id,
                    rule=rule,
                    reason=reason,
                    id_parts=(case.order_id, attempt_id),
                    outcome="success",
                    evidence={**evidence, "keep": keep[1], **money},
                    from_status="paid",
                    to_status="refund_candidate",
                )
            )
            if self.settings.auto_refund:
                task = self.tasks.get((channel, attempt_id))
                if task is None:
                    task = self.tasks[(channel, attempt_id)] = Task(channel, attempt_id, case.order_id, now)
                    self._by_order.setdefault(case.order_id, set()).add(task.key)
                task.purposes.add("pre_refund")
                task.refund_minor = refund_minor
                task.evidence.append(effects.actions[-1]["event"]["id"])
                if not task.in_flight:
                    self._schedule(task, now)
        return effects

    def _refund(self, task: Task, answer: Answer, now: datetime) -> Effects:
        """Refund only what the fresh query says is still charged, and only if nothing changed
        since the candidate: a refund sent in error is money that may never come back."""
        remaining = answer.refundable_minor
        ok = remaining is not None and remaining > 0 and remaining == task.refund_minor
        if ok:
            reason = f"fresh query right before refunding says {answer.status}, {remaining} still charged"
        elif remaining is None:
            reason = f"fresh query right before refunding says {answer.status}, refunded amount unknown"
        else:
            reason = (
                f"fresh query right before refunding says {answer.status}: {remaining} still charged, "
                f"the candidate was for {task.refund_minor}; a person decides"
            )
        doc = self._action(
            now,
            "refund" if ok else "refund_declined",
            task.channel,
            task.order_id,
            task.attempt_id,
            rule="duplicate_charge_refund_after_fresh_query",
            reason=reason,
            id_parts=(task.order_id, task.attempt_id, "refund"),
            outcome="success" if ok else "failure",
            evidence={
                "event_ids": list(task.evidence),
                "channel_status": answer.status,
                "refund_minor": remaining if ok and remaining is not None else 0,
                "refunded_minor": answer.refunded_minor if answer.refunded_minor is not None else -1,
                "currency": answer.currency or "",
            },
            **({"from_status": "paid", "to_status": "refund_requested"} if ok else {}),
        )
        return Effects(actions=[doc])

    def _give_up(self, task: Task, now: datetime, why: str) -> Effects:
        fingerprint = f"compensation_gave_up|{task.channel}|{task.attempt_id}"
        money = bool(task.purposes & MONEY_PURPOSES)
        summary = (
            f"Gave up asking {task.channel} about attempt {task.attempt_id} of order {task.order_id} "
            f"after {task.seq} queries: {why}. A person must check it."
        )
        figures: dict[str, int | float | str] = {
            "queries": task.seq,
            "api_errors": task.errors,
            "last_status": task.last_status or "none",
            "purposes": ",".join(sorted(task.purposes)),
            "started_at": task.anchor.isoformat(),
        }
        finding = make_finding(
            at=now,
            kind="compensation_gave_up",
            state="open",
            fingerprint=fingerprint,
            severity="critical" if money else "warning",
            summary=summary,
            evidence=Evidence(event_ids=list(task.evidence), figures=figures),
            payment=FindingPayment(order_id=task.order_id, attempt_id=task.attempt_id, channel=task.channel),
        )
        self._raised[task.key] = fingerprint
        doc = self._action(
            now,
            "gave_up",
            task.channel,
            task.order_id,
            task.attempt_id,
            rule="schedule_horizon",
            reason=why,
            id_parts=(task.channel, task.attempt_id),
            outcome="unknown",
            evidence={"event_ids": list(task.evidence), **figures},
        )
        effects = Effects(actions=[doc], findings=[finding])
        return effects + self._settle(task, Answer("unknown", f"gave up: {task.last_status or 'no answer'}"), now)

    def _unavailable(
        self, at: datetime, channel: str, attempt_id: str, order_id: str, kind: str, finding_id: str
    ) -> Effects:
        """Say plainly that nobody can ask this channel, instead of pretending to have checked."""
        key = (channel, attempt_id)
        effects = Effects()
        case = self.cases.get(order_id)
        if case is not None and key in case.attempts:
            case.answers[key] = Answer("unknown", "no query API")
        if key in self._raised:
            return effects
        fingerprint = f"query_unavailable|{channel}|{attempt_id}"
        self._raised[key] = fingerprint
        reason = f"channel {channel} has no query API configured; {kind} for this attempt needs a person"
        effects.findings.append(
            make_finding(
                at=at,
                kind="query_unavailable",
                state="open",
                fingerprint=fingerprint,
                severity="warning",
                summary=f"Cannot query {channel} about attempt {attempt_id} of order {order_id}: no query API",
                evidence=Evidence(event_ids=[finding_id], figures={"requested_by": kind}),
                payment=FindingPayment(order_id=order_id, attempt_id=attempt_id, channel=channel),
            )
        )
        effects.actions.append(
            self._action(
                at,
                "query_unavailable",
                channel,
                order_id,
                attempt_id,
                rule="channel_without_query_api",
                reason=reason,
                id_parts=key,
                outcome="unknown",
                evidence={"event_ids": [finding_id]},
            )
        )
        return effects

    def _resolve(self, at: datetime, fingerprint: str, key: Key, order_id: str) -> Finding:
        return make_finding(
            at=at,
            kind=fingerprint.split("|")[0],  # type: ignore[arg-type]
            state="resolved",
            fingerprint=fingerprint,
            severity="info",  # type: ignore[arg-type]
            summary=f"A trusted answer about attempt {key[1]} arrived from {key[0]}",
            payment=FindingPayment(order_id=order_id, attempt_id=key[1], channel=key[0]),
        )

    def _trust_findings(self, result: QueryResult, now: datetime, query_action: str) -> Effects:
        """Open `untrusted_answer` (per attempt) and `channel_credentials` (per channel, one page
        however many queries it refuses) findings; a later trusted answer resolves them."""
        req = result.request
        key = (req.channel, req.attempt_id)
        effects = Effects()
        if result.credentials and req.channel not in self._credentials:
            fingerprint = self._credentials[req.channel] = f"channel_credentials|{req.channel}"
            summary = (
                f"{req.channel} refuses paywatch's credentials: {result.credentials}"
                + (f" ({result.error})" if result.error else "")
                + ". Compensating queries to it cannot run until the key, certificate or permission is fixed."
            )
            figures = {"provider_code": result.credentials}
            effects.findings.append(
                self._opened(result, now, query_action, "channel_credentials", fingerprint, summary, figures)
            )
        elif result.answered and req.channel in self._credentials:
            effects.findings.append(self._resolve(now, self._credentials.pop(req.channel), key, req.order_id))
        if result.untrusted and key not in self._untrusted:
            fingerprint = self._untrusted[key] = f"untrusted_answer|{req.channel}|{req.attempt_id}"
            summary = (
                f"{req.channel} answered about attempt {req.attempt_id} of order {req.order_id} with an answer "
                f"that cannot be trusted: {result.untrusted}. Nothing was repaired or refunded."
            )
            figures = {"why": result.untrusted[:300]}
            effects.findings.append(
                self._opened(result, now, query_action, "untrusted_answer", fingerprint, summary, figures)
            )
        elif result.answered and key in self._untrusted:
            effects.findings.append(self._resolve(now, self._untrusted.pop(key), key, req.order_id))
        return effects

    def _opened(
        self,
        result: QueryResult,
        now: datetime,
        query_action: str,
        kind: Any,
        fingerprint: str,
        summary: str,
        figures: dict[str, Any],
    ) -> Finding:
        req = result.request
        return make_finding(
            at=now,
            kind=kind,
            state="open",
            fingerprint=fingerprint,
            severity="critical",
            summary=summary,
            evidence=Evidence(event_ids=[query_action], figures={**figures, "http_status": result.http_status or 0}),
            payment=FindingPayment(order_id=req.order_id, attempt_id=req.attempt_id, channel=req.channel),
        )

    # -- plumbing --------------------------------------------------------------------------
    def _schedule(self, task: Task, at: datetime) -> None:
        if task.due_at is not None and task.due_at <= at:
            return
        task.due_at = at
        self._pushes += 1
        heapq.heappush(self._heap, (at, self._pushes, task.key))

    def hand_over(self, orders: Callable[[str], bool]) -> None:
        """Forget the orders another compensator now owns (their findings' partition moved to it):
        it rebuilds them, and two compensators asking the same channel would spend its budget twice."""
        for order_id in [o for o in {*self._by_order, *self.cases} if orders(o)]:
            for key in self._by_order.pop(order_id, ()):
                self.tasks.pop(key, None)
            self.cases.pop(order_id, None)
            self._paid_orders.discard(order_id)

    def _forget(self, task: Task) -> None:
        self.tasks.pop(task.key, None)
        keys = self._by_order.get(task.order_id)
        if keys is not None:
            keys.discard(task.key)
            if not keys:
                del self._by_order[task.order_id]
                self._paid_orders.discard(task.order_id)

    def _drop_purpose(self, order_id: str, purpose: Purpose, only: Key | None) -> None:
        for key in list(self._by_order.get(order_id, ())):
            task = self.tasks[key]
            if only is not None and key != only:
                continue
            task.purposes.discard(purpose)
            if not task.purposes and not task.in_flight:
                self._forget(task)

    def _query_event(self, result: QueryResult, now: datetime, task: Task | None) -> Event:
        req = result.request
        outcome = result.outcome
        status = result.channel_status or ("NOT_FOUND" if result.not_found else "UNKNOWN")
        if result.not_found and task is not None:
            grace = timedelta(seconds=self.settings.schedule_for(req.channel).not_found_grace_s)
            if now - task.anchor >= grace:
                outcome = "failure"  # the channel never saw it: no money moved
        return Event(
            timestamp=now,
            event=EventMeta(
                id=stable_id("channel_query_result", req.channel, req.attempt_id, req.seq, now.isoformat()),
                dataset=PAYMENT,
                action="channel_query_result",
                outcome=outcome,
            ),
            service=self.service,
            payment=Payment(
                order_id=req.order_id,
                attempt_id=req.attempt_id,
                channel=req.channel,
                status=status,
                error_code="not_found" if result.not_found else None,
                latency_ms=result.latency_ms,
            ),
            labels={"query_seq": str(req.seq), "query_purposes": ",".join(req.purposes)},
        )

    def _action(
        self, at: datetime, type: Any, channel: str | None, order_id: str, attempt_id: str | None, **kw: Any
    ) -> dict[str, Any]:
        return action_doc(
            at=at,
            type=type,
            channel=channel,
            order_id=order_id,
            attempt_id=attempt_id,
            actor=self.settings.actor,
            dry_run=self.settings.dry_run_for(channel),
            **kw,
        )


def _started_at(finding: Finding) -> datetime | None:
    """The attempt's start, when the detector put it in the evidence (`sent_at_ms`, epoch ms)."""
    raw = finding.finding.evidence.figures.get("sent_at_ms")
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        return None
    return datetime.fromtimestamp(raw / 1000, UTC)
