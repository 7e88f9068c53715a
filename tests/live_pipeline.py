"""The embedded pipeline behind its real HTTP ingest, on a manual clock the test ticks: what the
ingest verdict and time-sanity tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from stack_support import NO_ALERTMANAGER

from paywatch.app.config import Config
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.pipeline import Pipeline
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.clock import ManualClock
from paywatch.finding import Finding
from paywatch.intake import Intake

TOKEN = "time-sanity-token"


class Live:
    """The embedded pipeline behind its real HTTP ingest, on a manual clock ticked by the test."""

    def __init__(self, tmp_path: Path, start: datetime) -> None:
        self.clock = ManualClock(start)
        self.store = SqliteStore(tmp_path / "db.sqlite", clock=self.clock)
        self.pipeline = Pipeline(Config.model_validate(NO_ALERTMANAGER), self.store, started_at=start, clock=self.clock)
        self.findings: list[Finding] = []
        self.pipeline.listeners.append(self.findings.append)
        self.server = IngestServer(self.pipeline.ingest, self.store, TOKEN, "127.0.0.1", 0, 1 << 20, Intake())

    def post(self, *lines: bytes) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}/v1/events", content=b"\n".join(lines), headers={"Authorization": f"Bearer {TOKEN}"}
        )

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.pipeline.tick(self.clock.advance(1))

    def opened(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.finding.kind == kind and f.finding.state == "open"]


@contextmanager
def running(tmp_path: Path) -> Iterator[Live]:
    """A Live started at the present (to the second), stopped and closed afterwards."""
    env = Live(tmp_path, datetime.now(UTC).replace(microsecond=0))
    env.server.start()
    try:
        yield env
    finally:
        env.server.stop()
        env.store.close()
