"""Configuration of the embedded single-process backend (the `embedded:` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# Where `paywatch demo` writes by default; the operator commands fall back to its database.
DEMO_DIR = Path("paywatch-data/demo")
DEMO_DATABASE = DEMO_DIR / "demo.sqlite"


class EmbeddedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: Path = Field(
        Path("paywatch-data/paywatch.sqlite"),
        description="SQLite file (WAL mode) holding events, findings, alerts, actions and dead letters.",
    )
    listen_host: str = Field("127.0.0.1", description="Address the HTTP ingest endpoint binds to.")
    listen_port: int = Field(8686, description="Port of the HTTP ingest endpoint (`POST /v1/events`).")
    ingest_token_env: str = Field(
        "PAYWATCH_INGEST_TOKEN", description="Environment variable holding the ingest bearer token."
    )
    ingest_token_file: Path | None = Field(None, description="File holding the ingest bearer token.")
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest accepted ingest request body.")
    tick_interval_s: float = Field(
        1.0, description="How often detectors, alerts and compensation are ticked with the wall clock."
    )
    max_queued_events: int = Field(
        50_000,
        gt=0,
        description="Events stored but not yet judged that the pipeline holds; past it, ingest is refused "
        "(503, retry later) until the detectors catch up, so memory stays bounded.",
    )
    max_queued_alert_changes: int = Field(
        10_000,
        gt=0,
        description="Findings waiting for the alert worker, and page batches waiting at any one sink; past "
        "it (a receiver hung for long) new ones are only stored and counted (a sink records `delivery "
        "backlog full`), and /healthz is unhealthy.",
    )
    stuck_after_s: float = Field(
        30.0,
        gt=0,
        description="A part (detectors, alert delivery, compensating queries) busy this long on one item "
        "without progress is reported stuck by /healthz.",
    )
    stop_timeout_s: float = Field(
        10.0,
        gt=0,
        description="On SIGTERM, how long stored events still queued get to be judged and alerts delivered "
        "before the process exits anyway (they are replayed from the store on the next start).",
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Interval of the embedded process's own heartbeat (service `paywatch-embedded`)."
    )
