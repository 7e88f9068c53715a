"""The compensation stage inside the embedded process: the same `Compensator` and budgeted
`Executor` as `paywatch compensate`, driven tick by tick instead of from Kafka.

Each tick sends the queries due and waits for their answers. The executor's budget runs on
the monotonic wall clock, so a channel never sees more than its configured QPS, even when
the demo compresses simulated time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from paywatch.compensation.adapters import build_adapters
from paywatch.compensation.engine import Compensator, Effects
from paywatch.compensation.executor import Executor, run_due
from paywatch.compensation.settings import CompensationSettings
from paywatch.contract import Event
from paywatch.finding import Finding


class CompensationStage:
    def __init__(self, settings: CompensationSettings) -> None:
        self.compensator = Compensator(settings)
        self._loop = asyncio.new_event_loop()
        self.executor = Executor(build_adapters(settings), settings)

    def on_event(self, event: Event) -> Effects:
        return self.compensator.on_event(event)

    def on_finding(self, finding: Finding) -> Effects:
        return self.compensator.on_finding(finding)

    def run_due(self, now: datetime) -> Effects:
        return self._loop.run_until_complete(run_due(self.compensator, self.executor, now))

    def close(self) -> None:
        self._loop.run_until_complete(self.executor.aclose())
        self._loop.close()
