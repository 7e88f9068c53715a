"""The table of every service instance ever seen, and who has gone silent.

An instance is alive while its beats *arrive*: a beat counts at paywatch's clock when it
arrived (`Timebase.judge`: its own `@timestamp` only when that is close to paywatch's
clock), so a host whose clock runs behind or ahead is neither silent nor immortal. Whether
a beat is new is decided by the producer's own sequence and stamp, so re-delivered old
beats change nothing. A producer's clock that stays off by more than `clock_skew_bound_s`
is reported as `clock_skew` (recorded, not paged).

An instance is missing once silent for longer than its own announced interval ×
`heartbeat_grace_factor`; a service is down when none of its instances is alive. A
`stopping` beat is a planned stop and never alerts. An instance that keeps going missing
and coming back is reported once as flapping, and its further gaps are not paged, unless
one lasts longer than `flapping_page_after_s`: flapping never hides a death.
Silence is only visible with a clock, so the findings come from `tick`.

The table holds at most `max_services` services and `max_instances` instances: a beat of a new
one past either cap is counted, not tracked, and reported once (`cardinality_capped`).
"""

from __future__ import annotations

from collections import deque

from paywatch.contract import Event
from paywatch.detectors.cardinality import Cap
from paywatch.detectors.settings import DetectorSettings
from paywatch.detectors.timebase import Timebase, to_dt
from paywatch.finding import Evidence, Finding, FindingService, FindingServiceInstance, make_finding


class Instance:
    __slots__ = (
        "event_id",
        "flapping",
        "flaps",
        "instance",
        "interval_ms",
        "last",
        "missing",
        "paged",
        "seq",
        "service",
        "skew_ms",
        "skew_since",
        "skewed",
        "stamp",
        "stopped",
    )

    def __init__(self, service: str, instance: str) -> None:
        self.service = service
        self.instance = instance
        self.last = 0  # paywatch's clock (ms) when the latest beat arrived
        self.stamp = -1  # the producer's newest plausible `@timestamp`, to recognise re-delivered beats
        self.seq = -1
        self.interval_ms = 0
        self.event_id = ""
        self.stopped = False
        self.missing = False
        self.paged = False  # a heartbeat_missing finding is open
        self.flapping = False
        self.flaps: deque[int] = deque()  # ms of recent missing → back transitions
        self.skewed = False  # a clock_skew finding is open
        self.skew_since = 0  # ms since when beats disagree with `skewed` (0: they agree)
        self.skew_ms = 0  # the latest beat's `@timestamp` minus paywatch's clock


class HeartbeatTable:
    def __init__(self, settings: DetectorSettings, clock: Timebase | None = None) -> None:
        self.s = settings
        self.clock = clock or Timebase.of(settings)
        self.instances: dict[tuple[str, str], Instance] = {}
        self.services: dict[str, int] = {}  # service → its instances in the table
        self.service_cap = Cap("services", settings.max_services, "max_services")
        self.instance_cap = Cap("instances", settings.max_instances, "max_instances")
        self.down: set[str] = set()  # services with an open service_down finding
        self.started: int | None = None  # ms of the first tick, for required services
        self._flap_ms = int(settings.flap_window_s * 1000)
        self._flap_page_ms = int(settings.flapping_page_after_s * 1000)
        self._skew_ms = int(settings.clock_skew_bound_s * 1000)
        self._skew_after_ms = int(settings.clock_skew_after_s * 1000)

    def feed(self, event: Event, claim: int) -> list[Finding]:
        """Apply one heartbeat whose `@timestamp` is `claim` (epoch ms), arriving at `clock.now`."""
        hb = event.heartbeat
        svc = event.service
        key = (svc.name, svc.instance.id)
        inst = self.instances.get(key)
        clock = self.clock
        if inst is None:
            capped: list[Finding] = []
            if (
                svc.name not in self.services
                and not self.service_cap.admits(len(self.services), svc.name, clock.now, capped)
            ) or not self.instance_cap.admits(len(self.instances), f"{svc.name}/{svc.instance.id}", clock.now, capped):
                return capped
            inst = self.instances[key] = Instance(svc.name, svc.instance.id)
            self.services[svc.name] = self.services.get(svc.name, 0) + 1
        far = clock.far(claim)
        if hb.seq <= inst.seq and (far or claim <= inst.stamp):
            return []  # an older beat delivered again says nothing new
        if not far and claim > inst.stamp:
            inst.stamp = claim
        inst.seq = hb.seq
        at = max(clock.judge(claim), inst.last)
        found: list[Finding] = []
        inst.last = at
        inst.interval_ms = int(hb.interval_s * 1000)
        inst.event_id = event.event.id
        inst.stopped = hb.status == "stopping"
        if clock.now:
            self._skew(inst, claim - clock.now, far, found)
        if inst.missing:
            inst.missing = False
            self._flap(inst, at, found)
            if inst.paged:
                inst.paged = False
                found.append(self._instance_finding(inst, "resolved", at))
        if svc.name in self.down and not inst.stopped:
            self.down.discard(svc.name)
            found.append(self._service_finding(svc.name, "resolved", at))
        return found

    def _skew(self, inst: Instance, skew: int, far: bool, found: list[Finding]) -> None:
        """Open clock_skew once beats stay off by more than the bound (at once for a far claim);
        resolve it once they stay within it."""
        inst.skew_ms = skew
        off = far or abs(skew) > self._skew_ms
        if off == inst.skewed:
            inst.skew_since = 0
            return
        now = self.clock.now
        if not inst.skew_since:
            inst.skew_since = now
        if far or now - inst.skew_since >= self._skew_after_ms:
            inst.skewed = off
            inst.skew_since = 0
            found.append(self._skew_finding(inst, "open" if off else "resolved", now))

    def _flap(self, inst: Instance, at: int, found: list[Finding]) -> None:
        inst.flaps.append(at)
        while inst.flaps and inst.flaps[0] < at - self._flap_ms:
            inst.flaps.popleft()
        if not inst.flapping and len(inst.flaps) >= self.s.flap_threshold:
            inst.flapping = True
            found.append(self._flapping_finding(inst, "open", at))

    def tick(self, now: int) -> list[Finding]:
        found: list[Finding] = []
        if self.started is None:
            self.started = now
        grace = self.s.heartbeat_grace_factor
        forget = int(self.s.heartbeat_forget_s * 1000)
        silent_services: set[str] = set()
        started = self.started
        for key in sorted(self.instances):
            inst = self.instances[key]
            span = int(inst.interval_ms * grace)
            deadline = inst.last + span
            # A beat that arrived before paywatch's clock started was judged by its producer's clock
            # alone: give the instance one span from the start to show it is alive before judging it.
            decide = max(deadline, started + span)
            if (inst.stopped or inst.missing) and now - inst.last > forget:
                del self.instances[key]
                self.services[inst.service] -= 1
                if not self.services[inst.service]:
                    del self.services[inst.service]
                if inst.skewed:
                    found.append(self._skew_finding(inst, "resolved", now))
                continue
            if inst.flapping and (not inst.flaps or inst.flaps[-1] < now - self._flap_ms):
                inst.flapping = False
                inst.flaps.clear()
                found.append(self._flapping_finding(inst, "resolved", now))
            if not inst.stopped and not inst.missing and decide < now:
                inst.missing = True
                if not inst.flapping:
                    inst.paged = True
                    found.append(self._instance_finding(inst, "open", deadline))
            if inst.missing and not inst.paged and now - inst.last > self._flap_page_ms:
                inst.paged = True  # flapping, but silent for too long: this is a death
                found.append(self._instance_finding(inst, "open", inst.last + self._flap_page_ms))
            if inst.missing:
                silent_services.add(inst.service)
        self.service_cap.release(len(self.services), now, found)
        self.instance_cap.release(len(self.instances), now, found)
        alive = {i.service for i in self.instances.values() if not i.missing and not i.stopped}
        for service in sorted(silent_services - alive - self.down):
            self.down.add(service)
            last = max(i.last + int(i.interval_ms * grace) for i in self.instances.values() if i.service == service)
            found.append(self._service_finding(service, "open", min(last, now)))
        seen = {i.service for i in self.instances.values()}
        if now - self.started >= int(self.s.startup_grace_s * 1000):
            for service in self.s.required_services:
                if service not in seen and service not in self.down:
                    self.down.add(service)
                    found.append(self._service_finding(service, "open", now, never_seen=True))
        return found

    def _instance_finding(self, inst: Instance, state: str, at: int) -> Finding:
        silent_s = (at - inst.last) / 1000
        return make_finding(
            at=to_dt(at),
            kind="heartbeat_missing",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"heartbeat_missing:{inst.service}:{inst.instance}",
            severity="warning",
            summary=f"{inst.service} instance {inst.instance} silent for {silent_s:g} s "
            f"(interval {inst.interval_ms / 1000:g} s)"
            if state == "open"
            else f"{inst.service} instance {inst.instance} is beating again",
            evidence=Evidence(
                event_ids=[inst.event_id],
                figures={"interval_s": inst.interval_ms / 1000, "grace_factor": self.s.heartbeat_grace_factor},
            ),
            service=FindingService(name=inst.service, instance=FindingServiceInstance(id=inst.instance)),
        )

    def _skew_finding(self, inst: Instance, state: str, at: int) -> Finding:
        skew_s = inst.skew_ms / 1000
        return make_finding(
            at=to_dt(at),
            kind="clock_skew",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"clock_skew:{inst.service}:{inst.instance}",
            severity="warning",
            summary=f"{inst.service} instance {inst.instance} stamps its events {abs(skew_s):.0f} s "
            f"{'ahead of' if skew_s > 0 else 'behind'} paywatch's clock (latest "
            f"{to_dt(at + inst.skew_ms).isoformat()}); they are judged at arrival"
            if state == "open"
            else f"{inst.service} instance {inst.instance}'s clock agrees with paywatch's again",
            evidence=Evidence(
                event_ids=[inst.event_id],
                figures={"skew_s": skew_s, "bound_s": self.s.clock_skew_bound_s},
            ),
            service=FindingService(name=inst.service, instance=FindingServiceInstance(id=inst.instance)),
        )

    def _service_finding(self, service: str, state: str, at: int, never_seen: bool = False) -> Finding:
        instances = [i for i in self.instances.values() if i.service == service]
        if never_seen:
            summary = f"required service {service} has never sent a heartbeat"
        elif state == "open":
            silent = "its only instance is" if len(instances) == 1 else f"all {len(instances)} instances are"
            summary = f"service {service} is down: {silent} silent"
        else:
            summary = f"service {service} is beating again"
        return make_finding(
            at=to_dt(at),
            kind="service_down",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"service_down:{service}",
            severity="critical",
            summary=summary,
            evidence=Evidence(
                event_ids=sorted(i.event_id for i in instances if i.event_id),
                figures={"instances": len(instances)},
            ),
            service=FindingService(name=service),
        )

    def _flapping_finding(self, inst: Instance, state: str, at: int) -> Finding:
        return make_finding(
            at=to_dt(at),
            kind="service_flapping",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"service_flapping:{inst.service}:{inst.instance}",
            severity="warning",
            summary=f"{inst.service} instance {inst.instance} went silent and came back "
            f"{len(inst.flaps)} times in {self.s.flap_window_s:g} s; further gaps are not paged"
            if state == "open"
            else f"{inst.service} instance {inst.instance} stable again",
            evidence=Evidence(figures={"flaps": len(inst.flaps)}),
            service=FindingService(name=inst.service, instance=FindingServiceInstance(id=inst.instance)),
        )
