"""The SDK's spill file: order, bounds, restart, and damage a crash can leave behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from paywatch.collectors.spool import Spool, SpoolBusyError, open_spool
from paywatch.collectors.transports import Record


def records(n: int, start: int = 0) -> list[Record]:
    return [Record("payments.events", f"o{i}", b'{"n":%d,"note":"tab\\there"}' % i) for i in range(start, start + n)]


def values(spool: Spool, limit: int = 10_000) -> list[bytes]:
    return [r.value for _, r in spool.peek(limit)]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ndjson"))


def test_records_come_back_in_order_across_segments_and_replayed_segments_are_deleted(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=4096)
    assert spool.empty
    assert spool.append(records(300)) == 300
    assert len(segments(tmp_path)) > 3 and not spool.empty
    assert values(spool) == [r.value for r in records(300)]
    batch = spool.peek(100)
    assert [r.key for _, r in batch] == [f"o{i}" for i in range(100)]
    spool.mark_done([pos for pos, _ in batch])
    assert values(spool, 1)[0] == records(1, 100)[0].value
    spool.mark_done([pos for pos, _ in spool.peek(1000)])
    assert spool.empty and spool.bytes == 0 and segments(tmp_path) == []
    assert spool.append(records(2, 500)) == 2  # a drained spool starts a new segment
    assert values(spool) == [r.value for r in records(2, 500)]


def test_the_disk_bound_is_kept(tmp_path):
    spool = Spool(tmp_path, max_bytes=2000, segment_bytes=4096)
    written = spool.append(records(100))
    assert 0 < written < 100 and spool.bytes <= 2000
    assert spool.append(records(1)) == 0


def test_a_restarted_process_resumes_after_what_was_delivered(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=4096)
    spool.append(records(200))
    spool.mark_done([pos for pos, _ in spool.peek(70)])
    spool.close()
    again = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=4096)
    assert values(again) == [r.value for r in records(130, 70)]


def test_delivered_records_after_an_undelivered_one_are_not_returned_again(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=4096)
    spool.append(records(10))
    batch = spool.peek(10)
    spool.mark_done([pos for i, (pos, _) in enumerate(batch) if i != 3])  # record 3 failed
    assert [r.key for _, r in spool.peek(10)] == ["o3"]
    spool.append(records(1, 10))
    assert [r.key for _, r in spool.peek(10)] == ["o3", "o10"]
    spool.mark_done([pos for pos, _ in spool.peek(10)])
    assert spool.empty


def test_a_torn_last_line_from_a_crash_is_cut_off(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=1_000_000)
    spool.append(records(5))
    spool.close()
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(b'["payments.events","o5",{"n":')
    again = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=1_000_000)
    assert again.corrupt_lines == 1
    assert values(again) == [r.value for r in records(5)]
    again.append(records(1, 6))
    assert [r.key for _, r in again.peek(10)] == ["o0", "o1", "o2", "o3", "o4", "o6"]


def test_an_unreadable_line_is_skipped_counted_and_logged(tmp_path, caplog):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=1_000_000)
    spool.append(records(2))
    spool.close()
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(b"this is not json\n")
    again = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=1_000_000)
    again.append(records(1, 2))
    assert [r.key for _, r in again.peek(10)] == ["o0", "o1", "o2"]
    assert again.corrupt_lines == 1
    assert "unreadable spill line" in caplog.text
    again.mark_done([pos for pos, _ in again.peek(10)])
    assert again.empty


def test_one_process_per_directory(tmp_path):
    first = open_spool(tmp_path, "payment gateway/eu", 10_000, 4096)
    second = open_spool(tmp_path, "payment gateway/eu", 10_000, 4096)
    assert first.directory.name == "payment_gateway_eu"
    assert second.directory.name == "payment_gateway_eu.1"
    with pytest.raises(SpoolBusyError):
        Spool(first.directory, 10_000, 4096)
    first.close()
    assert open_spool(tmp_path, "payment gateway/eu", 10_000, 4096).directory == first.directory
