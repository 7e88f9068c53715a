"""Shared fixtures: REAL Kafka, Elasticsearch and Alertmanager on loopback (see paywatch/devstack.py).

Session servers use the default ports (Kafka 19092, Elasticsearch 19200). A server already running
there (another session, `paywatch devstack up`) is reused and left alone; one started by this session
is stopped at the end unless PAYWATCH_DEVSTACK_KEEP=1 (set it when several sessions share the box).
PAYWATCH_KAFKA_BOOTSTRAP / PAYWATCH_ES_URL point the fixtures at servers running elsewhere.

Tests that use these fixtures get the `kafka` / `elasticsearch` / `alertmanager` marker
automatically, so `pytest -m "not elasticsearch"` works without decorating every test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from paywatch import devstack as ds

_MARKERS = {
    "kafka_bootstrap": "kafka",
    "kafka_factory": "kafka",
    "es_url": "elasticsearch",
    "es": "elasticsearch",
    "es_factory": "elasticsearch",
    "alertmanager_factory": "alertmanager",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = _MARKERS.get(fixture)
            if marker:
                item.add_marker(marker)


def _keep() -> bool:
    return os.environ.get("PAYWATCH_DEVSTACK_KEEP", "") not in ("", "0", "false")


def _session_server(server: ds.Server) -> Iterator[ds.Server]:
    server.start()
    try:
        yield server
    finally:
        if not server.reused and not _keep():
            server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """bootstrap.servers of a real single-node KRaft broker (auto topic creation on, 6 partitions)."""
    external = os.environ.get("PAYWATCH_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    for server in _session_server(ds.KafkaServer()):
        yield server.bootstrap  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """URL of a real Elasticsearch 8.19 node (security off)."""
    external = os.environ.get("PAYWATCH_ES_URL")
    if external:
        yield external.rstrip("/")
        return
    for server in _session_server(ds.ElasticsearchServer()):
        yield server.url  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def es(es_url: str) -> Iterator[object]:
    """An `elasticsearch.Elasticsearch` client on `es_url`."""
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url, request_timeout=60)
    yield client
    client.close()


@pytest.fixture
def alertmanager_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ds.AlertmanagerServer]]:
    """make(config_yaml=..., port=None) -> started AlertmanagerServer (own free port and dir).

    Use `.url`, `.reload(new_yaml)`, `.stop()`. All are stopped at the end of the test."""
    started: list[ds.AlertmanagerServer] = []

    def make(config_yaml: str = ds.DEFAULT_AM_CONFIG, port: int | None = None) -> ds.AlertmanagerServer:
        am = ds.AlertmanagerServer(
            config_yaml, port=port or ds.free_port(), workdir=tmp_path_factory.mktemp("alertmanager")
        )
        am.start()
        started.append(am)
        return am

    yield make
    for am in started:
        am.stop()


@pytest.fixture
def kafka_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ds.KafkaServer]]:
    """make(port=None) -> an ISOLATED started KafkaServer for outage tests (stop/kill/start it freely;
    `start()` again reuses the same data dir). Stopped at the end of the test."""
    started: list[ds.KafkaServer] = []

    def make(port: int | None = None) -> ds.KafkaServer:
        port = port or ds.free_port()
        server = ds.KafkaServer(
            port=port, controller_port=ds.free_port(), workdir=tmp_path_factory.mktemp("kafka"), heap="512m"
        )
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def es_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ds.ElasticsearchServer]]:
    """make(port=None) -> an ISOLATED started ElasticsearchServer (own dir, 512m heap) for outage
    tests. Stopped at the end of the test."""
    started: list[ds.ElasticsearchServer] = []

    def make(port: int | None = None) -> ds.ElasticsearchServer:
        server = ds.ElasticsearchServer(
            port=port or ds.free_port(),
            transport_port=ds.free_port(),
            workdir=tmp_path_factory.mktemp("elasticsearch"),
            heap="512m",
        )
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
