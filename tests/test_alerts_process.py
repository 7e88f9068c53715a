"""`paywatch alert` end to end on REAL Kafka and a REAL Alertmanager: findings on the topic
become one page, state changes become documents on paywatch.alerts, a restart rebuilds
state without paging or publishing twice, and the resolve arrives once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import yaml
from alerts_support import Receiver, am_config, posts, rules, stuck
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from paywatch.alerts.runtime import build_stage
from paywatch.app.config import Config
from paywatch.finding import encode_finding
from paywatch.kafka import ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.alertmanager, pytest.mark.slow]


class Process:
    """`paywatch alert` in a thread: the same stage the command runs, stopped as SIGTERM would."""

    def __init__(self, config: Config) -> None:
        self.stage = build_stage(config.alerts, config, config.kibana.url)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stage.run()
        except BaseException as exc:
            self.error = exc
        finally:
            self.stage.handler.close()

    def ready(self) -> bool:
        """Partitions assigned and the findings topic replayed to its end."""
        handler = self.stage.handler
        return bool(handler.findings) and not handler.runner.catching_up

    def __enter__(self) -> Process:
        deadline = time.monotonic() + 60
        while not self.ready():
            assert self.error is None and time.monotonic() < deadline, f"never caught up: {self.error}"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stage.stop.set()
        self.thread.join(30)
        assert self.error is None, self.error


def read_all(bootstrap: str, topic: str) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}"})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    docs = []
    while messages := consumer.consume(1000, timeout=1.5):
        docs += [json.loads(m.value()) for m in messages if not m.error()]
    consumer.close()
    return sorted(docs, key=lambda d: d["@timestamp"])


@pytest.fixture
def run_id(kafka_bootstrap):
    """A prefix for this test's own topics, deleted afterwards from the shared broker."""
    run_id = uuid.uuid4().hex[:8]
    yield run_id
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"t-{run_id}-")]
    for future in admin.delete_topics(ours).values() if ours else ():
        future.result(30)


def test_findings_topic_to_one_page_and_documents_surviving_a_restart(
    kafka_bootstrap, alertmanager_factory, tmp_path, run_id
):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules(page_at=3).model_dump(mode="json")))
    with Receiver() as receiver:
        am = alertmanager_factory(am_config(receiver.url))
        config = Config.model_validate(
            {
                "kafka": {
                    "bootstrap_servers": kafka_bootstrap,
                    "topics": {f: f"t-{run_id}-{f}" for f in ("findings", "alerts", "heartbeats")},
                },
                "kibana": {"url": ""},
                "alerts": {
                    "rules_file": str(rules_file),
                    "alertmanager": {"urls": [am.url]},
                    "resend_interval_s": 1,
                    "tick_interval_s": 0.2,
                    "self_monitor": {"watched_services": []},
                    "delivery": {"backoff_base_s": 0.1, "max_attempts": 3},
                },
            }
        )
        topics = config.kafka.topics
        ensure_topics(config.kafka, [topics.findings, topics.alerts, topics.heartbeats])
        producer = Producer({"bootstrap.servers": kafka_bootstrap})

        def emit(state: str) -> None:
            now = datetime.now(UTC)
            for i in range(4):
                order = f"{run_id}-o{i}"
                producer.produce(topics.findings, key=order, value=encode_finding(stuck(order, now, state)))
            producer.flush(10)

        with Process(config):
            emit("open")
            receiver.wait_for(lambda r: len(posts(r)) >= 1, timeout=60)
            docs = read_all(kafka_bootstrap, topics.alerts)
            assert [(d["event"]["action"], d["alert"]["status"], d["alert"]["page"]) for d in docs] == [
                ("opened", "pending", False),
                ("fired", "firing", True),
            ]
            fired = docs[1]
            assert fired["event"]["dataset"] == "paywatch.alert" and fired["payment"]["channel"] == "alipay"
            assert len(fired["payment"]["order_id"]) == 3  # the third stuck order is the one that pages
            assert set(fired["payment"]["order_id"]) < {f"{run_id}-o{i}" for i in range(4)}
            delivered = {d["sink"]: d for d in fired["alert"]["deliveries"]}
            assert delivered["alertmanager"]["ok"] and delivered["log"]["ok"]
            receiver.wait_for(lambda r: len(posts(r, "/deadman")) == 1, timeout=30)
            watchdog = httpx.get(f"{am.url}/api/v2/alerts", params={"filter": 'alertname="PaywatchWatchdog"'}).json()
            assert len(watchdog) == 1
            beats = [
                b for b in read_all(kafka_bootstrap, topics.heartbeats) if b["service"]["name"] == "paywatch-alert"
            ]
            assert beats and beats[0]["heartbeat"]["checks"] == {"findings_lag": "ok"}

        with Process(config):  # replays the findings topic: same state, no second page
            emit("resolved")
            receiver.wait_for(lambda r: len(posts(r)) >= 2, timeout=60)

    assert [p["status"] for p in posts(receiver.received)] == ["firing", "resolved"]
    docs = read_all(kafka_bootstrap, topics.alerts)
    # The replay re-published opened/fired under the same event.id: Elasticsearch stores each once.
    by_id = {d["event"]["id"]: d["event"]["action"] for d in docs}
    assert sorted(by_id.values()) == ["fired", "opened", "resolved"]
    resolved = docs[-1]
    assert resolved["alert"]["status"] == "resolved" and resolved["alert"]["order_count"] == 4
