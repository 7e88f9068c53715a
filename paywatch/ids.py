"""Deterministic document ids: the same input always gets the same id, so a redelivered
event, finding or audit record overwrites its first copy instead of being stored twice."""

from __future__ import annotations

import hashlib


def content_id(data: bytes) -> str:
    """128 bits of SHA-256: collision-free in practice, and short enough for an `_id`."""
    return hashlib.sha256(data).hexdigest()[:32]


def stable_id(*parts: object) -> str:
    """The id of the record these parts identify (joined with `|`, as stored ids always were)."""
    return content_id("|".join(str(p) for p in parts).encode())
