"""Configuration of the embedded single-process backend (the `embedded:` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest accepted ingest request body.")
    tick_interval_s: float = Field(
        1.0, description="How often detectors, alerts and compensation are ticked with the wall clock."
    )
