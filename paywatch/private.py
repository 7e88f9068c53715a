"""Files paywatch writes hold payment events, findings, alerts and reports: readable by their owner
only (0600), whatever the process's umask. Used where each such file is created."""

from __future__ import annotations

import os
from pathlib import Path

MODE = 0o600


def opener(path: str | os.PathLike[str], flags: int) -> int:
    """`open(path, mode, opener=private.opener)`: a new file is created 0600."""
    return os.open(path, flags, MODE)


def create(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist yet, for a file a library opens itself
    (SQLite then gives its -wal and -shm files the database file's mode)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, MODE))
