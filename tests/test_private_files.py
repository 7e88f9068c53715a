"""Files paywatch creates hold payment events, findings and alerts: the SQLite database with its
WAL and shared-memory files, the SDK's spill files and the incident report are created 0600
(owner only) even under a permissive umask, as a real process leaves them on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.app.report import ReportInput, render
from paywatch.collectors.spool import open_spool
from paywatch.collectors.transports import Record


@pytest.fixture(autouse=True)
def permissive_umask():
    old = os.umask(0o002)  # what many desktop sessions run with: group-writable, world-readable
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_wal_and_shm_are_owner_only(tmp_path):
    store = SqliteStore(tmp_path / "pw.sqlite")
    store.write([{"@timestamp": "2026-01-15T10:00:00Z", "event": {"id": "e1", "dataset": "paywatch.app"}}])
    store.dead_letter("test", "line 1: bad", b"{")
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["pw.sqlite", "pw.sqlite-shm", "pw.sqlite-wal"]
    assert {name: mode(tmp_path / name) for name in made} == dict.fromkeys(made, 0o600)
    store.close()


def test_spill_files_are_owner_only(tmp_path):
    spool = open_spool(tmp_path, "payment-gateway", max_bytes=1 << 20, segment_bytes=1 << 10)
    spool.append([Record("paywatch.events", b"k", b'{"n": %d}' % i) for i in range(100)])
    spool.mark_done([position for position, _ in spool.peek(10)])  # writes the head file
    spool.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 2, files  # several segments and the lock
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    assert all(mode(d) == 0o700 for d in tmp_path.iterdir() if d.is_dir())


def test_the_incident_report_is_owner_only(tmp_path):
    store = SqliteStore(tmp_path / "pw.sqlite")
    out = render(ReportInput("report", store, [], {}), tmp_path / "report.html")
    assert "<html" in out.read_text()
    assert mode(out) == 0o600
    store.close()
