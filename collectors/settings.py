"""Configuration of the Kafka → Elasticsearch collector (the `collector:` section)."""

from __future__ import annotations

from pydantic import Field

from paywatch.contract import MAX_EVENT_BYTES
from paywatch.settings import Section


class CollectorSettings(Section):
    consumer_group: str = Field(
        "paywatch-collector",
        description="Kafka consumer group. Run several collectors with the same group to share the "
        "partitions; each partition's offsets move only after Elasticsearch acknowledged its events.",
    )
    batch_size: int = Field(
        5000,
        ge=1,
        description="Most messages taken from Kafka per batch (one bulk request, one offset commit). "
        "Big batches keep the per-event CPU cost low.",
    )
    poll_timeout_s: float = Field(
        0.5,
        gt=0,
        description="How long one poll waits for a full batch before indexing what it has; bounds "
        "the extra latency a quiet topic adds.",
    )
    bulk_max_bytes: int = Field(
        10 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest bulk request body sent to Elasticsearch; a batch above it is split.",
    )
    max_event_bytes: int = Field(
        MAX_EVENT_BYTES,
        ge=1024,
        description="Messages larger than this go to the dead-letter topic as oversized.",
    )
    retry_initial_s: float = Field(
        0.5,
        gt=0,
        description="First wait after Elasticsearch (or Kafka, for the dead-letter topic) fails; "
        "doubles on every further failure. Consumption stays paused meanwhile, nothing is lost.",
    )
    retry_max_s: float = Field(
        15.0, gt=0, description="Longest wait between retries while a downstream stays unavailable."
    )
    install_templates: bool = Field(
        True,
        description="Install paywatch's index and component templates at start-up (idempotent). "
        "Turn off when templates are managed elsewhere and the collector's user may not write them.",
    )
    metrics_port: int | None = Field(
        9464,
        description="Port of the Prometheus scrape endpoint (/metrics) for the collector's health "
        "metrics: consumer lag, events/s, bulk latency, dead-letter count. null disables it.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the scrape endpoint listens on.")
