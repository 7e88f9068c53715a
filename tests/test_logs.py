"""paywatch's own logs: one format for structlog and standard-library records, cards masked."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from paywatch.logs import configure_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_cards_masked_from_structlog_and_stdlib(restore_logging):
    out = io.StringIO()
    configure_logging(level="info", json=True, stream=out)
    structlog.get_logger().info("charge failed", card="4111 1111 1111 1111", order_id="o1")
    structlog.get_logger().debug("below the level")
    logging.getLogger("paywatch.sdk").warning("callback body had 4111111111111111 in it")
    logging.getLogger("elastic_transport").info("POST /_bulk 200")  # chatty library, held back
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "charge failed" and first["level"] == "info"
    assert first["card"] == "4111 11** **** 1111" and first["order_id"] == "o1"
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "callback body had 411111******1111 in it"
    assert second["logger"] == "paywatch.sdk" and second["level"] == "warning"
    assert "4111111111111111" not in out.getvalue()


def test_console_rendering_and_reconfiguring_replaces_the_handler(restore_logging):
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    configure_logging(json=False, stream=out)
    logging.getLogger("paywatch.collector").error("bulk failed for 4111-1111-1111-1111")
    text = out.getvalue()
    assert text.count("bulk failed") == 1
    assert "4111-11**-****-1111" in text and not text.lstrip().startswith("{")
