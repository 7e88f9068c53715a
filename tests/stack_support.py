"""What the whole-stack tests share: a config with this test's own topics, consumer groups and
data stream namespace; the real `paywatch <stage>` processes as subprocesses; polling waits
that say what they waited for; producing contract events the way a service would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from confluent_kafka import Producer
from polling import wait_for

from paywatch.app.config import Config
from paywatch.contract import Event, encode
from paywatch.devstack import free_port
from paywatch.kafka import ensure_topics, producer_config

PAYWATCH = str(Path(sys.executable).with_name("paywatch"))
T = TypeVar("T")
# Pages go nowhere but the log: tests that judge intake and detection must not wait on (or page
# into) whatever happens to listen on the default Alertmanager port.
NO_ALERTMANAGER: dict[str, Any] = {"alerts": {"alertmanager": {"urls": []}}}


def stack_config(tmp: Path, kafka_bootstrap: str, es_url: str, **sections: Any) -> tuple[Config, Path]:
    """A config isolated from every other test (topics, groups, namespace), written to tmp/paywatch.yaml."""
    tag = uuid.uuid4().hex[:8]
    topics = {
        name: f"{default}-{tag}" for name, default in Config().kafka.topics.model_dump().items()
    }  # e.g. payments.events-1a2b3c4d
    raw: dict[str, Any] = {
        "backend": "kafka",
        "kafka": {
            "bootstrap_servers": kafka_bootstrap,
            "topics": topics,
        },
        "elasticsearch": {"url": es_url, "namespace": f"t{tag}"},
        # its own metrics port: other collectors (tests, sessions) may hold the default one
        "collector": {"consumer_group": f"collect-{tag}", "metrics_port": free_port()},
        **NO_ALERTMANAGER,  # a test that judges pages brings its own
        **sections,
    }
    config = Config.model_validate(raw)
    path = tmp / "paywatch.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    ensure_topics(config.kafka, list(topics.values()))
    return config, path


class Stages:
    """Real `paywatch <command> --config FILE` processes, each logging to its own file."""

    def __init__(self, config_path: Path, logs: Path) -> None:
        self.config_path = config_path
        self.logs = logs
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.logs / f"{command}.log"
        proc = subprocess.Popen(
            [PAYWATCH, command, "--config", str(self.config_path), *args],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.running[command] = proc
        return proc

    def check_alive(self) -> None:
        """Fail with the stage's log when one of them exited on its own."""
        for command, proc in self.running.items():
            if proc.poll() is not None:
                raise AssertionError(f"paywatch {command} exited with {proc.returncode}:\n{self.tail(command)}")

    def wait_for(self, probe: Callable[[], T], timeout: float, what: str, every: float = 1.0) -> T:
        """`polling.wait_for` that fails at once when a stage died, and shows the stages' logs."""

        def probe_while_alive() -> T:
            self.check_alive()
            return probe()

        try:
            return wait_for(probe_while_alive, timeout, what, every)
        except AssertionError as exc:
            logs = "\n".join(f"--- {c}:\n{self.tail(c)}" for c in self.running)
            raise AssertionError(f"{exc}\n{logs}") from None

    def tail(self, command: str, lines: int = 40) -> str:
        path = self.logs / f"{command}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, command: str, timeout: float = 60) -> None:
        proc = self.running.pop(command)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for command in list(self.running):
            self.stop(command)


def produce(config: Config, events: Iterable[Event]) -> int:
    """Events onto their topics, keyed as the contract says (what the SDK's Kafka transport does)."""
    topic_of = config.kafka.topics.for_events()
    producer = Producer(producer_config(config.kafka))
    failed: list[str] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    n = 0
    for event in events:
        while True:
            try:
                producer.produce(topic_of[event.event.dataset], encode(event), event.key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        n += 1
    left = producer.flush(60)
    assert not left and not failed, f"{left} events undelivered; failures {failed[:3]}"
    return n
