"""The SDK's spill file: where events wait, in order, while the transport is unavailable.

Append-only NDJSON segments (`000000000001.ndjson`, one `[topic, key, event]` array a line,
readable with `jq`) under a directory that one process holds locked. The head (the first
record not yet delivered) is kept in a small `head` file, so a restarted process replays
exactly what is left; fully replayed segments are deleted. Used only by the drain thread.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import msgspec

from paywatch import private
from paywatch.collectors.transports import Record

log = logging.getLogger("paywatch.sdk")

_SUFFIX = ".ndjson"
_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(tuple[str, str, msgspec.Raw])


class Position(NamedTuple):
    """Where a record's line ends: segment number and byte offset just after its newline."""

    segment: int
    offset: int


class SpoolBusyError(OSError):
    """Another live process holds this spool directory."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self._lock = _lock_directory(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._sizes: dict[int, int] = {}  # segment number -> bytes, in order
        for path in sorted(directory.glob("*" + _SUFFIX)):
            self._sizes[int(path.stem)] = path.stat().st_size
        self._writer: IO[bytes] | None = None
        self._done: set[Position] = set()  # delivered records after the head, when a batch was partly sent
        self.corrupt_lines = 0
        self._repair_torn_tail()
        self._head = self._read_head()
        self._drop_finished_segments()

    # ---- state

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def empty(self) -> bool:
        return not self._sizes or (self._head.segment == self._last and self._head.offset >= self._sizes[self._last])

    @property
    def _last(self) -> int:
        return next(reversed(self._sizes))

    # ---- writing

    def append(self, records: list[Record]) -> int:
        """Append in order; returns how many fit under the disk bound (the rest are not written)."""
        total = self.bytes
        written = 0
        for r in records:
            line = _line_encoder.encode((r.topic, r.key, msgspec.Raw(r.value))) + b"\n"
            if total + len(line) > self._max_bytes:
                break
            size = self._sizes[self._last] if self._writer is not None else 0
            if self._writer is None or (size and size + len(line) > self._segment_bytes):
                self._open_segment()
            assert self._writer is not None
            self._writer.write(line)
            self._sizes[self._last] += len(line)
            total += len(line)
            written += 1
        if self._writer is not None:
            self._writer.flush()
        return written

    def _open_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
        number = self._last + 1 if self._sizes else self._head.segment + 1
        if not self._sizes:
            self._head = Position(number, 0)
        self._writer = open(self._path(number), "ab", opener=private.opener)  # noqa: SIM115 - stays open
        self._sizes[number] = 0

    # ---- replaying

    def peek(self, limit: int) -> list[tuple[Position, Record]]:
        """The next records not yet delivered, oldest first, without consuming them."""
        out: list[tuple[Position, Record]] = []
        for pos, line in self._lines_from_head():
            if pos in self._done:
                continue
            try:
                topic, key, raw = _line_decoder.decode(line)
            except msgspec.DecodeError:
                self._corrupt(pos, line)
                continue
            out.append((pos, Record(topic, key, bytes(raw))))
            if len(out) >= limit:
                break
        return out

    def mark_done(self, positions: list[Position]) -> None:
        """Consume delivered (or given-up) records; the head moves over the delivered prefix."""
        self._done.update(positions)
        head = self._head
        for pos, _line in self._lines_from_head():
            if pos not in self._done:
                break
            self._done.discard(pos)
            head = pos
        if head != self._head:
            self._head = head
            self._write_head()
            self._drop_finished_segments()

    def _lines_from_head(self) -> Iterator[tuple[Position, bytes]]:
        for segment in [s for s in self._sizes if s >= self._head.segment]:
            start = self._head.offset if segment == self._head.segment else 0
            with open(self._path(segment), "rb") as f:
                f.seek(start)
                offset = start
                for line in f:
                    offset += len(line)
                    yield Position(segment, offset), line

    def _corrupt(self, pos: Position, line: bytes) -> None:
        self.corrupt_lines += 1
        log.error(
            "paywatch sdk: skipping unreadable spill line %s:%d (%r…)",
            self._path(pos.segment),
            pos.offset,
            line[:80],
        )
        self._done.add(pos)

    def _drop_finished_segments(self) -> None:
        for segment in list(self._sizes):
            finished = segment < self._head.segment or (
                segment == self._head.segment and self._head.offset >= self._sizes[segment]
            )
            if not finished:
                break
            if segment == self._last and self._writer is not None:
                self._writer.close()
                self._writer = None
            self._path(segment).unlink(missing_ok=True)
            del self._sizes[segment]

    # ---- files

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}{_SUFFIX}"

    def _read_head(self) -> Position:
        first = next(iter(self._sizes), 0)
        try:
            segment, offset = (int(x) for x in (self.directory / "head").read_text().split())
        except (OSError, ValueError):
            return Position(first, 0)
        return Position(segment, offset) if segment >= first else Position(first, 0)

    def _write_head(self) -> None:
        tmp = self.directory / "head.tmp"
        with open(tmp, "w", opener=private.opener) as f:
            f.write(f"{self._head.segment} {self._head.offset}\n")
        os.replace(tmp, self.directory / "head")

    def _repair_torn_tail(self) -> None:
        """A crash mid-write can leave half a line at the end of the last segment; cut it off."""
        if not self._sizes:
            return
        path = self._path(self._last)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.error("paywatch sdk: cutting a torn last line (%d bytes) off %s", len(data) - keep, path)
            self.corrupt_lines += 1
            with open(path, "r+b") as f:
                f.truncate(keep)
            self._sizes[self._last] = keep

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._lock.close()


def _lock_directory(directory: Path) -> IO[str]:
    handle = open(directory / "lock", "a", opener=private.opener)  # noqa: SIM115 - held for the spool's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolBusyError(f"spool directory {directory} is in use by another process") from None
    return handle


def open_spool(base: Path, service: str, max_bytes: int, segment_bytes: int, tries: int = 64) -> Spool:
    """The service's spool: `<base>/<service>`, or `<service>.1`, `.2`, … when other processes
    of the same service hold the first ones (each keeps its own order; any leftover is replayed
    by whichever process claims that directory next)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service) or "service"
    for n in range(tries):
        try:
            return Spool(base / (safe if n == 0 else f"{safe}.{n}"), max_bytes, segment_bytes)
        except SpoolBusyError:
            continue
    raise SpoolBusyError(f"all {tries} spool directories for {service} under {base} are in use")
