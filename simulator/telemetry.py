"""How a simulated service instance emits its events.

`SdkTelemetry` is the real thing: every instance opens a `paywatch.collectors.sdk` logger
(driven by the simulation's ManualClock, delivering in-process), so the simulator exercises
the same field mapping, validation, PAN masking and encoding as a production service.
`DirectTelemetry` builds the identical contract events itself, several times faster, for
long file runs; a test holds the two byte-identical.

Event ids carry the emission sequence number, which is how the SDK path, whose drain
threads deliver in batches, restores the exact emission (= event-time) order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from paywatch.clock import Clock
from paywatch.collectors.sdk import open_logger
from paywatch.collectors.sdk_settings import SdkConfig
from paywatch.contract import (
    HEARTBEAT,
    PAYMENT,
    Event,
    EventMeta,
    Heartbeat,
    Payment,
    Service,
    ServiceInstance,
    TraceId,
)
from paywatch.pan import mask_event

VERSION = "2026.1"


class ServiceSender(Protocol):
    def payment(self, event_id: str, action: str, outcome: str | None, trace_id: str, fields: dict) -> None: ...
    def heartbeat(self, event_id: str, section: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class Telemetry(Protocol):
    def open(self, service: str, instance_id: str, clock: Clock | None = None) -> ServiceSender:
        """An emitter for one instance; `clock` (default: the simulation's) stamps its events."""
        ...

    def drain(self) -> list[Event]:
        """Every event emitted so far and not yet drained, in emission order."""
        ...

    def close(self) -> None: ...


class _DirectSender:
    __slots__ = ("_clock", "_out", "_service")

    def __init__(self, service: Service, clock: Clock, out: list[Event]) -> None:
        self._service, self._clock, self._out = service, clock, out

    def payment(self, event_id: str, action: str, outcome: str | None, trace_id: str, fields: dict) -> None:
        event = Event(
            timestamp=self._clock.now(),
            event=EventMeta(id=event_id, dataset=PAYMENT, action=action, outcome=outcome),  # type: ignore[arg-type]
            service=self._service,
            payment=Payment(**fields),
            trace=TraceId(id=trace_id),
        )
        self._out.append(mask_event(event))  # as the SDK does: a trace id may hold a Luhn-valid digit run

    def heartbeat(self, event_id: str, section: dict[str, Any]) -> None:
        self._out.append(
            Event(
                timestamp=self._clock.now(),
                event=EventMeta(id=event_id, dataset=HEARTBEAT),
                service=self._service,
                heartbeat=Heartbeat(**section),
            )
        )

    def close(self) -> None:
        pass


class DirectTelemetry:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._out: list[Event] = []

    def open(self, service: str, instance_id: str, clock: Clock | None = None) -> ServiceSender:
        svc = Service(name=service, instance=ServiceInstance(id=instance_id), version=VERSION)
        return _DirectSender(svc, clock or self._clock, self._out)

    def drain(self) -> list[Event]:
        out, self._out[:] = list(self._out), []
        return out

    def close(self) -> None:
        pass


class _SdkSender:
    __slots__ = ("_log",)

    def __init__(self, log: Any) -> None:
        self._log = log

    def payment(self, event_id: str, action: str, outcome: str | None, trace_id: str, fields: dict) -> None:
        self._log.payment(action, event_id=event_id, outcome=outcome, trace_id=trace_id, **fields)

    def heartbeat(self, event_id: str, section: dict[str, Any]) -> None:
        self._log.emit("heartbeat", None, {"heartbeat": section, "event_id": event_id})

    def close(self) -> None:
        self._log.close()


class SdkTelemetry:
    """One SDK logger per simulated instance, all delivering into this object."""

    def __init__(self, clock: Clock, order_key: Callable[[Event], int]) -> None:
        self._clock = clock
        self._order_key = order_key
        self._received: list[Event] = []
        self._loggers: list[Any] = []
        self._config = SdkConfig()
        # In-process delivery never fails, so nothing may ever be spilled to (or replayed from) disk.
        self._config.sdk.spill_max_bytes = 0
        self._config.sdk.spill_dir = Path("/nonexistent-paywatch-simulator")

    def open(self, service: str, instance_id: str, clock: Clock | None = None) -> ServiceSender:
        log = open_logger(
            service,
            version=VERSION,
            instance_id=instance_id,
            config=self._config,
            transport=self._received.extend,
            clock=clock or self._clock,
            heartbeat=False,  # simulated time: the simulation sends the beats
        )
        self._loggers.append(log)
        return _SdkSender(log)

    def drain(self) -> list[Event]:
        for log in self._loggers:
            log.flush(timeout=30)
        received, self._received[:] = self._received[:], []
        received.sort(key=self._order_key)
        return received

    def close(self) -> None:
        for log in self._loggers:
            log.close(timeout=5)
        self._loggers.clear()
