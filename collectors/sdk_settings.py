"""Configuration of the emitter SDK (the `sdk:` section of paywatch.yaml).

The defaults suit a payment service emitting up to a few thousand events per second: the
in-memory buffer holds well over one send timeout's worth of traffic, so a hung transport is
absorbed in memory until the drain thread moves it to disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from paywatch.pan import PanSettings
from paywatch.settings import Backend, KafkaSettings, Section


class SdkSettings(Section):
    transport: Literal["kafka", "http"] | None = Field(
        None,
        description="Where events go: `kafka` (the topics in `kafka.topics`, keyed by `Event.key`) or "
        "`http` (the embedded backend's NDJSON ingest at `ingest_url`). Default (null): the one the "
        "`backend` reads, `http` for `embedded` and `kafka` for `kafka`. An in-process callable can only "
        "be passed in code (`open_logger(transport=fn)`).",
    )
    ingest_url: str = Field(
        "http://127.0.0.1:8686/v1/events",
        description="URL of the embedded backend's ingest endpoint, used when `transport` is `http`.",
    )
    ingest_token_env: str = Field(
        "PAYWATCH_INGEST_TOKEN",
        description="Environment variable holding the bearer token for the HTTP ingest.",
    )
    ingest_token_file: Path | None = Field(
        None, description="File holding the HTTP ingest bearer token (e.g. a mounted secret)."
    )
    buffer_events: int = Field(
        20_000,
        ge=1,
        description="Events held in memory between the caller and the drain thread. When full, new "
        "events are dropped and counted (`dropped_buffer_full`); the caller is never made to wait.",
    )
    batch_events: int = Field(
        2_000, ge=1, description="Most events handed to the transport (or replayed from disk) in one send."
    )
    send_timeout_s: float = Field(
        5.0,
        gt=0,
        description="How long a send may go unanswered before newer events are written to the spill "
        "file instead of waiting in memory; for the HTTP ingest, also the request timeout (after which "
        "the batch itself is spilled).",
    )
    delivery_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Kafka only: how long librdkafka keeps retrying a batch already handed to it "
        "(`message.timeout.ms`; the idempotent producer's retries never duplicate). A slow or "
        "restarting broker within this time gets each of those events once; after it they go to the "
        "spill file and are replayed.",
    )
    retry_interval_s: float = Field(
        1.0,
        gt=0,
        description="First wait before trying an unavailable transport again; doubles on each failure.",
    )
    retry_max_interval_s: float = Field(
        10.0, gt=0, description="Longest wait between tries of an unavailable transport."
    )
    spill_dir: Path = Field(
        Path("~/.local/state/paywatch/spool"),
        description="Directory for the spill file (append-only segments; `~` is the user's home). Each "
        "service uses its own sub-directory, locked, so several processes of one service each get one.",
    )
    spill_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Disk bound of the spill file. Past it, events are dropped, counted "
        "(`dropped_spill_full`) and logged. 0 disables spilling.",
    )
    spill_segment_bytes: int = Field(
        8 * 1024 * 1024,
        ge=4096,
        description="Size at which the spill file starts a new segment; replayed segments are deleted.",
    )
    app_log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info",
        description="Least severe application log (`log.info(...)` etc.) sent as a `paywatch.app` event; "
        "less severe calls return at once. Payment events and heartbeats are always sent.",
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Seconds between heartbeats (also sent as `heartbeat.interval_s`)."
    )
    flush_timeout_s: float = Field(
        5.0,
        ge=0,
        description="Default time `close()` spends delivering what is buffered; whatever is left then "
        "is written to the spill file and replayed by the next process of the same service.",
    )
    problem_log_interval_s: float = Field(
        10.0,
        gt=0,
        description="At most one log line per kind of problem (drops, invalid events, transport down) "
        "in this many seconds; each line carries the counts since the last.",
    )


class SdkConfig(BaseModel):
    """The part of paywatch.yaml a payment service's SDK reads. The service imports only the SDK,
    so this view knows only its own sections and ignores the rest (the paywatch processes, whose
    `Config` extends this view, validate the whole file)."""

    model_config = ConfigDict(extra="ignore")

    backend: Backend = Field(
        "embedded",
        description="`embedded`: one process, HTTP ingest, SQLite. `kafka`: Kafka transport, Elasticsearch storage, "
        "one process per stage. Detection and alerting are the same code either way.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    pan: PanSettings = Field(default_factory=PanSettings)
    sdk: SdkSettings = Field(default_factory=SdkSettings)
