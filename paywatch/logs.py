"""Logging for paywatch's own processes: structlog, JSON lines (or console), PAN-masked.

paywatch logs about payments, so a card number in an error message would otherwise end
up in a log file; the masking processor runs on every event dict before rendering. Records
from the standard library's `logging` (the SDK's `paywatch.sdk`, librdkafka, the
Elasticsearch client) go through the same masking and renderer, so one process writes one
format. Every stage calls `configure_logging()` once at start-up.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

from paywatch.pan import mask_tree

# Libraries that log every request at INFO; their warnings and errors still show.
_CHATTY = ("elastic_transport", "httpx", "httpcore", "urllib3")


_JSON_NATIVE = (str, int, float, bool, dict, list, tuple, type(None))


def mask_card_numbers(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Other objects (exceptions, paths, structs) are rendered as text by the renderer, after this
    processor: they are turned to text here so that their card numbers are masked too."""
    return mask_tree({k: v if isinstance(v, _JSON_NATIVE) else str(v) for k, v in event_dict.items()})


class _PaywatchHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so calling it again replaces it."""


def configure_logging(level: str = "info", json: bool | None = None, stream: IO[str] | None = None) -> None:
    """JSON when the stream is not a terminal (collected by a log shipper), console otherwise."""
    stream = stream or sys.stderr
    json = (not stream.isatty()) if json is None else json
    level_no = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, mask_card_numbers, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = _PaywatchHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_card_numbers,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PaywatchHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level_no, logging.WARNING))
