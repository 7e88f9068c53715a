"""Card-number (PAN) masking, applied in the SDK and again in the collector.

A PAN is 13–19 digits, optionally grouped by single spaces or dashes, that passes the
Luhn check. It is masked to its first six and last four digits (what PCI DSS allows to
be shown). Identifier fields (event, order, attempt, trace ids) are exempt: they are
keys, and numeric ids such as snowflake order numbers pass Luhn one time in ten, so
masking them would silently merge orders. Every free-text field is masked.
"""

from __future__ import annotations

import re
from typing import Any, Final

from paywatch.contract import Event

_CANDIDATE: Final = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
# may_contain_pan: every ASCII digit → "0", every other byte → "."; separators are deleted.
_DIGITS_AS_ZERO: Final = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))
_MIN_PAN_ZEROS: Final = b"0" * 13
MASK_CHAR: Final = "*"

# Keys whose values are identifiers, wherever they appear in a document tree.
ID_KEYS: Final = frozenset(
    {"id", "order_id", "attempt_id", "fingerprint", "refund_id", "event_id", "event_ids", "dedup_key"}
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_match(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = "".join(c for c in text if c.isdigit())
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
        return text
    return digits[:6] + MASK_CHAR * (len(digits) - 10) + digits[-4:]


def may_contain_pan(raw: bytes) -> bool:
    """A cheap, conservative pre-check on a raw JSON message: False proves that no string in
    it holds a PAN, so field-by-field masking can be skipped (most messages).

    With separators deleted and digits turned to "0", any PAN becomes a run of 13+ zeros. This
    holds in the raw bytes because JSON escapes other than \\u never produce a digit, space or
    dash; non-ASCII text and \\u escapes answer True. One C-speed pass, ~10x cheaper than the
    regex; false positives (long numbers) only cost the full masking."""
    if not raw.isascii() or b"\\u" in raw:
        return True
    return _MIN_PAN_ZEROS in raw.translate(_DIGITS_AS_ZERO, b" -")


def mask_text(text: str) -> str:
    """Mask every PAN inside a free-text string; other text is returned unchanged (same object)."""
    if _CANDIDATE.search(text) is None:
        return text
    return _CANDIDATE.sub(_mask_match, text)


def mask_tree(value: Any, key: str | None = None) -> Any:
    """Mask PANs in every string of a JSON-like tree, except under identifier keys."""
    if isinstance(value, str):
        return value if key in ID_KEYS else mask_text(value)
    if isinstance(value, dict):
        return {mask_text(k): mask_tree(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_tree(v, key) for v in value]
    return value


def mask_event(event: Event) -> Event:
    """Mask the free-text fields of a contract event in place; returns it for chaining."""
    p = event.payment
    if p is not None:
        for name in ("channel", "method", "merchant_id", "status", "error_code"):
            v = getattr(p, name)
            if v is not None:
                setattr(p, name, mask_text(v))
    if event.message is not None:
        event.message = mask_text(event.message)
    if event.error is not None:
        if event.error.message is not None:
            event.error.message = mask_text(event.error.message)
        if event.error.type is not None:
            event.error.type = mask_text(event.error.type)
    if event.labels:
        event.labels = {mask_text(k): mask_text(v) for k, v in event.labels.items()}
    if event.heartbeat is not None and event.heartbeat.checks:
        event.heartbeat.checks = {mask_text(k): v for k, v in event.heartbeat.checks.items()}
    event.service.name = mask_text(event.service.name)
    if event.service.version is not None:
        event.service.version = mask_text(event.service.version)
    if event.event.action is not None:
        event.event.action = mask_text(event.event.action)
    return event


def mask_bytes(raw: bytes) -> bytes:
    """Mask PANs in raw bytes that may not even be JSON or UTF-8 (dead letters).

    Latin-1 maps every byte to one character and back, and card digits are ASCII, so any
    byte string round-trips unchanged except for the masked digits.
    """
    return mask_text(raw.decode("latin-1")).encode("latin-1")
