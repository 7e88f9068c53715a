"""Configuration of the embedded single-process backend (the `embedded:` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from paywatch.settings import Section

# Where `paywatch demo` writes by default; the operator commands fall back to its database.
DEMO_DIR = Path("paywatch-data/demo")
DEMO_DATABASE = DEMO_DIR / "demo.sqlite"


class EmbeddedSettings(Section):
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
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        description="Largest accepted ingest request body, on the wire and again after gzip/zstd decoding "
        "(a larger one is answered 413 as soon as it is seen to be larger).",
    )
    inflight_bytes: int = Field(
        64 * 1024 * 1024,
        description="Request bodies held at once (being read, waiting for the pipeline or being stored); "
        "past it a request is answered 429 with Retry-After, so overload costs a retry, not memory. "
        "At least max_body_bytes.",
    )
    body_timeout_s: float = Field(30.0, description="Time a client has to send a whole request body (else 408).")
    keepalive_timeout_s: float = Field(
        15.0, description="An idle keep-alive connection is closed after this long (the SDK reuses its connection)."
    )
    listen_backlog: int = Field(1024, description="Connections the kernel queues before they are accepted.")
    stuck_after_s: float = Field(
        30.0,
        description="`/healthz` answers 503 when a part (the ingest worker, the detectors, alert delivery, "
        "compensating queries) has been busy with one item, or the detectors have not ticked, for this long.",
    )
    shutdown_timeout_s: float = Field(
        10.0,
        description="After SIGTERM/SIGINT, in-flight requests get this long to finish, then stored events "
        "still queued get this long to be judged and their alerts delivered; the process exits at the latest "
        "after twice this (acknowledged events are stored and replayed on the next start).",
    )
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
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Interval of the embedded process's own heartbeat (service `paywatch-embedded`)."
    )

    @model_validator(mode="after")
    def _one_body_fits(self) -> EmbeddedSettings:
        if self.inflight_bytes < self.max_body_bytes:
            raise ValueError("embedded.inflight_bytes must be at least embedded.max_body_bytes")
        return self
