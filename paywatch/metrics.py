"""Health metrics of every paywatch process: OpenTelemetry instruments, scraped by Prometheus.

Stages record through OpenTelemetry (`meter(name)`), so the instruments stay vendor-neutral;
one Prometheus reader per process turns them into a `/metrics` page that
`start_metrics_server(port)` serves. Names are dotted OTel names (`paywatch.collector.events`);
Prometheus sees them with underscores and unit/total suffixes (`paywatch_collector_events_total`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider

_lock = threading.Lock()
_provider: MeterProvider | None = None


def _meter_provider() -> MeterProvider:
    """The process's one provider; a second Prometheus reader would register its metrics twice."""
    global _provider
    with _lock:
        if _provider is None:
            from opentelemetry import metrics as otel_metrics
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider

            _provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
            # Global too, so instruments of libraries in this process (the SDK's own counters, which
            # use the OTel API as a library should) appear on paywatch's /metrics page.
            otel_metrics.set_meter_provider(_provider)
        return _provider


def meter(name: str) -> Meter:
    """A meter for one stage (e.g. "paywatch.collector"); instruments record even before scraping."""
    return _meter_provider().get_meter(name)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve /metrics on host:port in a daemon thread; `.shutdown()` on the result stops it."""
    from prometheus_client import start_http_server

    _meter_provider()
    server, _thread = start_http_server(port, addr=host)
    return server
