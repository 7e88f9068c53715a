"""The embedded backend's storage: one SQLite file in WAL mode.

Holds what Elasticsearch holds in the Kafka deployment — events, findings, alerts and
actions, keyed by `event.id` so a re-delivered document is stored once — plus the
dead letters (input that broke the contract, kept with its reason and original bytes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from paywatch import private
from paywatch.clock import Clock, SystemClock
from paywatch.finding import INCIDENT_KINDS
from paywatch.store import Doc, get, latest_alerts, summarise_incidents

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    event_id    TEXT PRIMARY KEY,
    dataset     TEXT NOT NULL,
    ts          TEXT NOT NULL,   -- @timestamp, event time (RFC 3339, UTC)
    ingested    TEXT NOT NULL,   -- processing time
    kind        TEXT,            -- finding.kind, for the incidents query
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_dataset_ts ON docs(dataset, ts);
-- An alert can concern many orders (payment.order_id is then a list): one row per order.
CREATE TABLE IF NOT EXISTS doc_orders (
    order_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (order_id, event_id)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         BLOB NOT NULL
);
"""


def _iso(clock: Clock) -> str:
    return iso_ms(clock.now())


def iso_ms(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SqliteStore:
    """Thread-safe (one connection behind a lock): the ingest server writes from many threads."""

    def __init__(self, path: str | Path, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        private.create(self.path)  # events and findings: owner only, and the WAL follows the file's mode
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write(self, docs: Iterable[Doc], ingested_at: datetime | None = None) -> int:
        """Store documents, stamping `event.ingested` (`ingested_at`, else now); returns how many
        were new. The embedded pipeline passes the arrival time its detectors judged by, so a
        restart can replay the same stream in the same order (`events_since`)."""
        ingested = iso_ms(ingested_at) if ingested_at is not None else _iso(self._clock)
        rows, orders = [], []
        for doc in docs:
            body = dict(doc)
            body["event"] = {**body["event"], "ingested": ingested}
            event_id = body["event"]["id"]
            rows.append(
                (
                    event_id,
                    body["event"]["dataset"],
                    body["@timestamp"],
                    ingested,
                    get(body, "finding.kind"),
                    json.dumps(body, separators=(",", ":")),
                )
            )
            order_ids = get(body, "payment.order_id")
            for order_id in order_ids if isinstance(order_ids, list) else [order_ids] if order_ids else []:
                orders.append((order_id, event_id))
        with self._lock:
            self._db.execute("BEGIN")
            new = self._db.executemany("INSERT OR IGNORE INTO docs VALUES (?,?,?,?,?,?)", rows).rowcount
            self._db.executemany("INSERT OR IGNORE INTO doc_orders VALUES (?,?)", orders)
            self._db.execute("COMMIT")
            return new

    def dead_letter(self, source: str, reason: str, raw: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO dead_letters (received_at, source, reason, raw) VALUES (?,?,?,?)",
                (_iso(self._clock), source, reason, raw),
            )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        cur = self._query(
            "SELECT received_at, source, reason, raw FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [{"received_at": r[0], "source": r[1], "reason": r[2], "raw": bytes(r[3])} for r in cur]

    def count(self, dataset: str | None = None) -> int:
        if dataset is None:
            return self._query("SELECT count(*) FROM docs", ())[0][0]
        return self._query("SELECT count(*) FROM docs WHERE dataset = ?", (dataset,))[0][0]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _bodies(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._query(sql, params)]

    # HistoryReader
    def order_timeline(self, order_id: str) -> list[dict[str, Any]]:
        return self._bodies(
            "SELECT body FROM docs JOIN doc_orders USING (event_id) WHERE order_id = ? ORDER BY ts, event_id",
            (order_id,),
        )

    def alerts(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        docs = self._bodies("SELECT body FROM docs WHERE dataset = 'paywatch.alert' ORDER BY ts, event_id", ())
        return latest_alerts(docs, status, limit)

    def incidents(self, limit: int = 100) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(INCIDENT_KINDS))
        docs = self._bodies(
            f"SELECT body FROM docs WHERE dataset = 'paywatch.finding' AND kind IN ({marks}) ORDER BY ts, event_id",
            tuple(sorted(INCIDENT_KINDS)),
        )
        return summarise_incidents(docs)[:limit]

    def documents(self, dataset: str) -> list[dict[str, Any]]:
        """All documents of one dataset, oldest first (the incident report reads these)."""
        return self._bodies("SELECT body FROM docs WHERE dataset = ? ORDER BY ts, event_id", (dataset,))

    def ping(self, timeout_s: float = 2.0) -> bool:
        """The store answers within `timeout_s` (a write stuck holding the lock says no)."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            self._db.execute("SELECT 1").fetchone()
            return True
        finally:
            self._lock.release()

    def events_since(self, datasets: tuple[str, ...], since: datetime, batch: int = 5000) -> Iterator[str]:
        """Documents (JSON) of `datasets` that arrived at or after `since`, in arrival order (what a
        restart replays through the detectors), read in batches so memory stays flat."""
        marks = ",".join("?" * len(datasets))
        after: tuple[str, int] = (iso_ms(since), -1)
        while True:
            rows = self._query(
                f"SELECT ingested, rowid, body FROM docs WHERE dataset IN ({marks}) AND (ingested, rowid) > (?, ?) "
                "ORDER BY ingested, rowid LIMIT ?",
                (*datasets, *after, batch),
            )
            for row in rows:
                yield row[2]
            if len(rows) < batch:
                return
            after = (rows[-1][0], rows[-1][1])

    def paged(self, fingerprint: str, starts_at: str) -> bool:
        """Whether this firing alert episode (fingerprint, start) went out to a pager: a firing
        change was recorded with a delivery attempt (a change is stored after its delivery)."""
        for body in self._bodies(
            "SELECT body FROM docs WHERE dataset = 'paywatch.alert' AND body LIKE ?", (f'%"{fingerprint}"%',)
        ):
            alert = body["alert"]
            if (
                alert["fingerprint"] == fingerprint
                and alert["status"] == "firing"
                and alert["page"]
                and alert["starts_at"] == starts_at
                and alert["deliveries"]
            ):
                return True
        return False
