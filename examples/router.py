"""A payment router that follows paywatch's channel-health feed (docs/channels.md).

Given channels in order of preference, it routes to the first one paywatch does not report
`degraded` or `down`, switching away when the preferred channel degrades and back when it is
healthy again (paywatch's own hysteresis keeps this from flapping). It reads the feed either from
the embedded server (`GET /v1/channels`, bearer token from $PAYWATCH_INGEST_TOKEN) or from the
compacted Kafka topic `paywatch.channel-health` (read from the start: the latest state per key).

    python examples/router.py --url http://127.0.0.1:8686 alipay wechatpay unionpay
    python examples/router.py --kafka 127.0.0.1:19092 alipay wechatpay unionpay

Prints the chosen channel whenever it changes (`--once`: print it once and exit).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
import uuid

AVOID = {"degraded", "down"}


def choose(preferences: list[str], levels: dict[str, str]) -> str:
    """The first preferred channel not reported degraded or down (absent means healthy); if all
    are, the first one: routing somewhere beats refusing every payment."""
    return next((c for c in preferences if levels.get(c) not in AVOID), preferences[0])


def levels_from_http(url: str, token: str) -> dict[str, str]:
    request = urllib.request.Request(f"{url}/v1/channels", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        feed = json.load(reply)
    if feed["version"] != "1":
        raise SystemExit(f"channel feed version {feed['version']} is not one this router knows")
    return {s["key"]: s["level"] for s in feed["channels"]}


def follow_kafka(bootstrap: str, topic: str, preferences: list[str]) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"router-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    levels: dict[str, str] = {}
    route = None
    try:
        while True:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            status = json.loads(msg.value())
            if status["version"] == "1":
                levels[status["key"]] = status["level"]
            if (new := choose(preferences, levels)) != route:
                route = new
                print(route, flush=True)
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channels", nargs="+", help="channels in order of preference")
    parser.add_argument("--url", help="the embedded paywatch server")
    parser.add_argument("--kafka", help="Kafka bootstrap servers (Kafka backend)")
    parser.add_argument("--topic", default="paywatch.channel-health")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between polls (HTTP)")
    parser.add_argument("--once", action="store_true", help="print the route once and exit (HTTP)")
    args = parser.parse_args()
    if args.kafka:
        follow_kafka(args.kafka, args.topic, args.channels)
        return
    if not args.url:
        parser.error("give --url (embedded server) or --kafka (Kafka backend)")
    token = os.environ.get("PAYWATCH_INGEST_TOKEN", "")
    route = None
    while True:
        if (new := choose(args.channels, levels_from_http(args.url, token))) != route:
            route = new
            print(route, flush=True)
        if args.once:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
