"""Card numbers (PANs): found wherever people write them, masked per PCI DSS 3.4; ids kept whole.

One routine, `mask_text`, is applied everywhere a string is stored, logged, paged or rendered.
It finds **every** Luhn-valid window of 13–19 digits inside a run of digits, so a card number
next to an amount, a CVV or an expiry date is found too (`amount 100 4111111111111111`). A run
is made of digits (ASCII, full-width or any Unicode decimal digit, or a JSON `\\u00XX` escape of
one) joined by at most three of the separators people type between digit groups (spaces, dashes,
dots, non-breaking and thin spaces, the same JSON-escaped). Each window is checked in O(1) from
prefix Luhn sums, so a run of n digits costs at most 7·n checks: linear in the input. Within a
card number every digit but the first six and the last four becomes `*`; separators stay.

Identifier fields are not free text: numeric order ids (snowflakes) pass Luhn one time in ten,
and masking them would make an order impossible to find. Ids are never masked; an id that *is*
a card number by the stricter `scheme` rule (IIN prefix of a major scheme, that scheme's length,
Luhn) is handled by the policy (`pan.id_policy`, default: reject the event with a reason).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
import unicodedata
from collections.abc import Collection, Iterable
from itertools import accumulate, compress
from typing import Any, Final, Literal

import msgspec
from pydantic import Field

from paywatch.contract import APP, ATTEMPT_ACTIONS, CHANNEL_ACTIONS, PAYMENT, ContractError, Event, encode
from paywatch.settings import Section

MASK_CHAR: Final = "*"
MIN_PAN, MAX_PAN = 13, 19
KEEP_FIRST, KEEP_LAST = 6, 4

# A digit: any Unicode decimal digit (`\d` on str: ASCII, full-width, …) or a JSON escape of an
# ASCII or full-width one, escaped once or more (JSON inside JSON). A separator: what people
# type between digit groups, or its escape. An escape is matched from its first backslash only
# (the look-behind), so a long row of backslashes costs one pass, not one per backslash.
_DIGIT: Final = r"(?:\d|(?<!\\)\\+u003[0-9]|(?<!\\)\\+u[fF]{2}1[0-9])"
_SEP: Final = (
    r"(?:[ \-.\u00a0\u2007\u2009\u202f\u3000\u2010-\u2013\uff0d\uff0e]"
    r"|(?<!\\)\\+u(?:00(?:[aA]0|20|2[dDeE])|20(?:0[79]|1[0-3]|2[fF])|3000|[fF]{2}0[dDeE]))"
)
SEPARATORS: Final = " -.\u00a0\u2007\u2009\u202f\u3000\u2010\u2011\u2012\u2013\uff0d\uff0e"
MAX_SEPARATORS: Final = 3
_RUN: Final = re.compile(rf"{_DIGIT}(?:{_SEP}{{0,{MAX_SEPARATORS}}}{_DIGIT}){{{MIN_PAN - 1},}}")
# Within a run: a digit (group 1) or a whole separator, so the digits of `\u0020` are no digits.
_TOKEN: Final = re.compile(rf"({_DIGIT})|{_SEP}")
# Luhn: a doubled digit counts as the sum of the digits of its double.
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_AS_VALUE: Final = bytes.maketrans(b"0123456789", bytes(range(10)))
_AS_DOUBLED: Final = bytes.maketrans(b"0123456789", bytes(_DOUBLED))
# may_contain_pan: every ASCII digit → "0", every other byte → "."; separators are deleted.
_DIGITS_AS_ZERO: Final = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))
_MIN_PAN_ZEROS: Final = b"0" * MIN_PAN

# ---------------------------------------------------------------- the policy

Action = Literal["mask", "drop_field", "reject_event"]

# Label keys that name an id (order numbers, refund numbers): matched case-sensitively.
DEFAULT_ID_LABELS: Final = ("id", "*_id", "*_ids", "*-id", "*.id", "*Id", "*_no")


class PanSettings(Section):
    """What happens to card numbers in events (the `pan:` section). Masking can be made stricter,
    never turned off: logs, pages and reports are always masked."""

    text_policy: Action = Field(
        "mask",
        description="A card number in a free-text field (message, error, labels, channel, …): `mask` it "
        "(first six and last four digits kept), `drop_field` (the field is removed; a field the "
        "contract requires rejects the event instead), or `reject_event` (dead-lettered with the reason).",
    )
    id_policy: Action = Field(
        "reject_event",
        description="An id field (event.id, payment.order_id / attempt_id / merchant_id, id labels) that "
        "is a card number by `id_rule`: `reject_event` (dead-lettered: 'payment.order_id is a card "
        "number'), `drop_field`, or `mask` (the id is then mangled, and the order cannot be looked up).",
    )
    id_rule: Literal["scheme", "luhn"] = Field(
        "scheme",
        description="When an id is a card number. `scheme`: one of its digit runs, as a whole, has a "
        "major scheme's IIN prefix and length and passes Luhn (Luhn-valid order ids such as "
        "2026112600000003 are kept). `luhn`: any whole run of 13–19 digits that passes Luhn.",
    )
    id_labels: list[str] = Field(
        list(DEFAULT_ID_LABELS),
        description="Label keys (glob patterns, case-sensitive) whose values are ids, exempt from masking "
        "like payment.order_id (e.g. `refund_id`, `out_trade_no`, `refundId`).",
    )


DEFAULT: Final = PanSettings()

# Schemes by IIN prefix range (inclusive, compared on equal-length prefixes) and PAN lengths.
_L16_19: Final = (16, 17, 18, 19)
SCHEMES: Final[tuple[tuple[str, tuple[tuple[str, str], ...], tuple[int, ...]], ...]] = (
    ("Visa", (("4", "4"),), (13, 16, 19)),
    ("Mastercard", (("51", "55"), ("2221", "2720")), (16,)),
    ("American Express", (("34", "34"), ("37", "37")), (15,)),
    ("Discover", (("6011", "6011"), ("644", "649"), ("65", "65"), ("622126", "622925")), _L16_19),
    ("JCB", (("3528", "3589"),), _L16_19),
    ("UnionPay", (("62", "62"), ("81", "81")), _L16_19),
    ("Diners Club", (("300", "305"), ("3095", "3095"), ("36", "36"), ("38", "39")), (14, *_L16_19)),
    (
        "Maestro",
        tuple((p, p) for p in ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763")),
        (13, 14, 15, *_L16_19),
    ),
    ("Mir", (("2200", "2204"),), _L16_19),
    ("RuPay", (("60", "60"), ("508", "508")), (16,)),
)


# The IIN ranges by first digit, so that most numbers are ruled out by one dict look-up.
_RANGES: Final[dict[str, list[tuple[str, str, str, tuple[int, ...]]]]] = {}
for _name, _prefixes, _lengths in SCHEMES:
    for _lo, _hi in _prefixes:
        _RANGES.setdefault(_lo[0], []).append((_lo, _hi, _name, _lengths))


def scheme_of(digits: str) -> str | None:
    """The major scheme whose IIN prefix and length `digits` has, if it also passes Luhn."""
    for lo, hi, name, lengths in _RANGES.get(digits[:1], ()):
        if len(digits) in lengths and lo <= digits[: len(lo)] <= hi:
            return name if luhn_ok(digits) else None
    return None


def luhn_ok(digits: str) -> bool:
    """The Luhn check of ASCII digits: every second digit from the right doubled, by byte tables."""
    raw = digits.encode()
    return (sum(raw[::-2].translate(_AS_VALUE)) + sum(raw[-2::-2].translate(_AS_DOUBLED))) % 10 == 0


# ---------------------------------------------------------------- finding and masking


class _Flatten(dict[int, str | int | None]):
    """str.translate table: any decimal digit → "0", any separator → `separator`, other characters
    kept, so runs are found at C speed. Filled lazily (Unicode has ~700 decimal digits)."""

    def __init__(self, separator: str | None) -> None:
        super().__init__()
        self._separator = separator

    def __missing__(self, code: int) -> str | int | None:
        ch = chr(code)
        value = "0" if ch.isdecimal() else self._separator if ch in SEPARATORS else code
        self[code] = value
        return value


_FLAT: Final = _Flatten("-")
_FLAT_JOINED: Final = _Flatten(None)  # separators deleted: any run becomes 13+ zeros in a row
# _FLAT for ASCII text, as a bytes table (a str table is a dict lookup per character).
_FLAT_ASCII: Final = bytes(48 if 48 <= b <= 57 else 45 if b < 128 and chr(b) in SEPARATORS else b for b in range(256))
_ZEROS: Final = "0" * MIN_PAN
_FLAT_CHUNK: Final = re.compile(r"0[0-]*")
_FLAT_RUN: Final = re.compile(rf"0(?:-{{0,{MAX_SEPARATORS}}}0){{{MIN_PAN - 1},}}")


def _value(token: str) -> str:
    if len(token) > 1:  # a JSON escape
        token = chr(int(token[-4:], 16))
    return token if "0" <= token <= "9" else str(unicodedata.decimal(token))


Run = tuple[list[tuple[int, int]], str]  # the spans of a run's digits in the text, and its digits in ASCII


def _has_run(text: str) -> bool:
    """False proves `text` holds no run of 13+ digits (so no card number): two C-speed passes
    (ASCII text, nearly all, through may_contain_pan's byte table)."""
    if len(text) < MIN_PAN:
        return False
    if "\\u" in text:
        return True
    if text.isascii():
        return may_contain_pan(text.encode())  # exact for ASCII text without \u escapes
    return _ZEROS in text.translate(_FLAT_JOINED)


def _runs(text: str) -> Iterable[Run]:
    """Every run of 13+ digits, in a text that `_has_run`. Text without JSON escapes (nearly
    all) is flattened by one str.translate and scanned by single-character regexes."""
    if "\\u" in text:
        for run in _RUN.finditer(text):
            at = run.start()
            tokens = [(at + t.start(), at + t.end(), t.group()) for t in _TOKEN.finditer(run.group()) if t.group(1)]
            yield [(a, b) for a, b, _ in tokens], "".join(_value(t) for _, _, t in tokens)
        return
    flat = text.encode().translate(_FLAT_ASCII).decode() if text.isascii() else text.translate(_FLAT)
    for chunk in _FLAT_CHUNK.finditer(flat):  # digits and separators: single-character steps
        if chunk.group().count("0") < MIN_PAN:
            continue
        for run in _FLAT_RUN.finditer(flat, chunk.start(), chunk.end()):
            start, end = run.span()
            if "-" in (group := run.group()):
                positions: Iterable[int] = [start + i for i, c in enumerate(group) if c == "0"]
                digits = "".join(text[p] for p in positions)
            else:  # no separator, as card numbers in text mostly are: one slice
                positions, digits = range(start, end), text[start:end]
            yield [(p, p + 1) for p in positions], digits if digits.isascii() else "".join(map(_value, digits))


def _masked_digits(digits: str) -> list[bool]:
    """Which digits of a run belong to the middle of a Luhn-valid 13–19-digit window.

    Prefix sums `sums[p][k]` hold the Luhn weight of digits before k when digit j is doubled
    iff (j + p) is odd; a window ending at b uses p = b % 2 (its last digit is never doubled).
    Built by translate, slices and accumulate: only the windows are a Python loop. A run that is
    itself a Luhn-valid card number (nearly every one found) is answered at once: every window
    inside it masks part of what its own window masks."""
    n = len(digits)
    if MIN_PAN <= n <= MAX_PAN and luhn_ok(digits):
        return [False] * KEEP_FIRST + [True] * (n - KEEP_FIRST - KEEP_LAST) + [False] * KEEP_LAST
    raw = digits.encode()
    plain, doubled = list(raw.translate(_AS_VALUE)), list(raw.translate(_AS_DOUBLED))
    even, odd = plain[:], doubled[:]  # digit j doubled iff j is odd; iff j is even
    even[1::2], odd[1::2] = doubled[1::2], plain[1::2]
    sums = (list(accumulate(even, initial=0)), list(accumulate(odd, initial=0)))
    masked = [False] * len(digits)
    for b in range(MIN_PAN - 1, len(digits)):
        prefix = sums[b % 2]
        end = prefix[b + 1]
        for a in range(max(0, b - MAX_PAN + 1), b - MIN_PAN + 2):
            if (end - prefix[a]) % 10 == 0:
                masked[a + KEEP_FIRST : b + 1 - KEEP_LAST] = [True] * (b + 1 - KEEP_LAST - a - KEEP_FIRST)
    return masked


def mask_text(text: str, keep: Collection[str] = ()) -> str:
    """Mask every card number inside a string; a string without one is returned as is (same object).

    `keep` holds the digits of ids known not to be card numbers (the event's own order id): a
    run whose digits are exactly one of them is left whole, so a message naming its order
    still names it."""
    if not _has_run(text):
        return text
    out: list[str] = []
    last = 0
    for spans, digits in _runs(text):
        if digits in keep:
            continue
        hidden = list(compress(spans, _masked_digits(digits)))
        if hidden and hidden[-1][1] - hidden[0][0] == len(hidden):  # one-character digits, no gap
            out += (text[last : hidden[0][0]], MASK_CHAR * len(hidden))  # nearly always: one slice
            last = hidden[-1][1]
            continue
        for start, end in hidden:
            out += (text[last:start], MASK_CHAR)
            last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _glued(text: str, spans: list[tuple[int, int]]) -> bool:
    """A digit run inside an alphanumeric token (a hex event id): part of the token, not a number
    written on its own. About 1 in 10,000 random 24-hex ids holds a 14-digit run that a scheme
    prefix and Luhn would call a card; rejecting those events would lose them for nothing."""
    start, end = spans[0][0], spans[-1][1]
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return (before.isascii() and before.isalpha()) or (after.isascii() and after.isalpha())


def _loose_runs(value: str) -> list[tuple[list[tuple[int, int]], str]]:
    """The digit runs of an id or token that stand on their own."""
    if not _has_run(value):
        return []
    return [(spans, digits) for spans, digits in _runs(value) if not _glued(value, spans)]


def card_in_id(value: str, settings: PanSettings = DEFAULT) -> str | None:
    """Why an id is a card number by `settings.id_rule`, or None. Only whole digit runs standing on
    their own count: an id is a key, and a 19-digit snowflake holds a Luhn-valid 13-digit window
    half the time."""
    for _spans, digits in _loose_runs(value):
        if settings.id_rule == "luhn":
            if len(digits) <= MAX_PAN and luhn_ok(digits):
                return f"a {len(digits)}-digit Luhn-valid number"
        elif scheme := scheme_of(digits):
            return f"a {scheme} card number"
    return None


def id_digits(ids: Iterable[str | None]) -> frozenset[str]:
    """The digit runs of ids, for `mask_text(keep=...)`."""
    return frozenset(digits for value in ids if value and _has_run(value) for _spans, digits in _runs(value))


def may_contain_pan(raw: bytes) -> bool:
    """A cheap, conservative pre-check on a raw JSON message: False proves that no string in
    it holds a PAN, so field-by-field masking can be skipped (most messages).

    With ASCII separators deleted and digits turned to "0", any PAN becomes a run of 13+ zeros.
    This holds in the raw bytes because JSON escapes other than \\u never produce a digit or a
    separator; non-ASCII text (full-width digits, non-breaking spaces) and \\u escapes answer
    True. One C-speed pass; false positives (long numbers) only cost the full masking."""
    if not raw.isascii() or (b"\\" in raw and b"\\u" in raw):  # one byte is found at memchr speed
        return True
    return _MIN_PAN_ZEROS in raw.translate(_DIGITS_AS_ZERO, b" -.")


# ---------------------------------------------------------------- events


class _Judge:
    """Applies the policy to one event's fields; raises ContractError when it says reject."""

    def __init__(self, settings: PanSettings, ids_have_runs: bool) -> None:
        self.settings = settings
        self.ids_have_runs = ids_have_runs  # False: no id of the event can be a card number
        self.keep: frozenset[str] = frozenset()

    def id(self, value: str | None, field: str, required: bool) -> str | None:
        if value is None or not self.ids_have_runs:
            return value
        why = card_in_id(value, self.settings)
        if why is None:
            return value
        return self._act(self.settings.id_policy, mask_text(value), field, required, f"{field} is {why}")

    def text(self, value: str | None, field: str, required: bool = False) -> str | None:
        if value is None or len(value) < MIN_PAN:  # too short to hold a card number
            return value
        masked = mask_text(value, self.keep)
        if masked is value:
            return value
        return self._act(self.settings.text_policy, masked, field, required, f"{field} holds a card number")

    def _act(self, action: Action, masked: str, field: str, required: bool, why: str) -> str | None:
        if action == "mask":
            return masked
        if action == "drop_field" and not required:
            return None
        required_note = " (a required field cannot be dropped)" if action == "drop_field" else ""
        raise ContractError(f"{why}: card numbers must not be sent to paywatch{required_note}")


@functools.lru_cache(maxsize=16)
def _id_label_pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")


def is_id_label(key: str, settings: PanSettings = DEFAULT) -> bool:
    return _id_label_pattern(tuple(settings.id_labels)).match(key) is not None


def _event_strings(event: Event, settings: PanSettings) -> tuple[str, list[str]]:
    """An event's free text, one string per line (a line break is no separator, so no run spans
    two), and its ids."""
    e, p, s = event.event, event.payment, event.service
    ids = [e.id]
    text = [e.action, event.message, s.name, s.version, s.instance.id]
    for key, value in event.labels.items():
        text.append(key)
        (ids if is_id_label(key, settings) else text).append(value)
    if p is not None:
        ids += (p.order_id, p.attempt_id, p.merchant_id)
        text += (p.channel, p.method, p.status, p.error_code)
    if event.error is not None:
        text += (event.error.type, event.error.message)
    if event.trace is not None:
        text.append(event.trace.id)
    if event.span is not None:
        text.append(event.span.id)
    if event.heartbeat is not None and event.heartbeat.checks:
        text += event.heartbeat.checks
    return "\n".join(filter(None, text)), [i for i in ids if i]


def mask_event(event: Event, settings: PanSettings = DEFAULT) -> Event:
    """Apply the card-number policy to every string of a contract event, in place; returns it.

    Ids are judged first, so that the ids that are not card numbers can be kept whole where
    free text names them. Raises ContractError (with a reason that holds no card number)
    when the policy rejects the event."""
    text, ids = _event_strings(event, settings)
    ids_have_runs = _has_run("\n".join(ids))
    if not _has_run(text) and (not ids_have_runs or all(card_in_id(i, settings) is None for i in ids)):
        return event  # nearly every event: no digit run in its text, no card number as an id
    judge = _Judge(settings, ids_have_runs)
    e, p = event.event, event.payment
    e.id = judge.id(e.id, "event.id", required=True)  # type: ignore[assignment]
    if p is not None:
        p.order_id = judge.id(p.order_id, "payment.order_id", required=True)  # type: ignore[assignment]
        p.attempt_id = judge.id(p.attempt_id, "payment.attempt_id", required=e.action in ATTEMPT_ACTIONS)
        p.merchant_id = judge.id(p.merchant_id, "payment.merchant_id", required=False)
    id_labels = {  # a reason names the label by its key, masked: a key is text a producer wrote
        k: judge.id(v, f"labels.{mask_text(k)}", required=False)
        for k, v in event.labels.items()
        if is_id_label(k, settings)
    }
    ids = [e.id, *id_labels.values()] + ([p.order_id, p.attempt_id, p.merchant_id] if p is not None else [])
    if ids_have_runs:
        judge.keep = id_digits(ids)
    labels: dict[str, str] = {}
    for key, value in event.labels.items():  # in their order; a dropped key or value drops the label
        shown = judge.text(key, "a label key")  # an id label's key is free text all the same
        if shown is None:
            continue
        kept = id_labels[key] if key in id_labels else judge.text(value, f"labels.{shown}")
        if kept is not None:
            labels[shown] = kept
    event.labels = labels
    if p is not None:
        p.channel = judge.text(p.channel, "payment.channel", required=e.action in CHANNEL_ACTIONS)
        for name in ("method", "status", "error_code"):
            setattr(p, name, judge.text(getattr(p, name), f"payment.{name}"))
    e.action = judge.text(e.action, "event.action", required=e.dataset == PAYMENT)
    event.message = judge.text(event.message, "message", required=e.dataset == APP)
    if event.error is not None:
        event.error.message = judge.text(event.error.message, "error.message")
        event.error.type = judge.text(event.error.type, "error.type")
    if event.heartbeat is not None and event.heartbeat.checks:
        event.heartbeat.checks = {
            name: v
            for k, v in event.heartbeat.checks.items()
            if (name := judge.text(k, "a heartbeat check name")) is not None
        }
    s = event.service
    s.name = judge.text(s.name, "service.name", required=True)  # type: ignore[assignment]
    s.version = judge.text(s.version, "service.version")
    s.instance.id = judge.text(s.instance.id, "service.instance.id", required=True)  # type: ignore[assignment]
    for name in ("trace", "span"):
        ref = getattr(event, name)
        if ref is not None:
            ref.id = judge.text(ref.id, f"{name}.id")
            if ref.id is None:  # dropped: the whole trace/span reference goes
                setattr(event, name, None)
    return event


def encode_masked(event: Event, settings: PanSettings = DEFAULT) -> bytes:
    """The event's contract JSON with the card-number policy applied: `encode(mask_event(event))`,
    byte for byte, with the same ContractError, but at the cost of one encoding and one C-speed
    scan for nearly every event. The scan (`may_contain_pan`) sees every string of the event in
    its JSON; only an event whose bytes may hold a card number goes through `mask_event` (which
    masks it in place, as ever) and is encoded again. For whoever encodes events anyway: the SDK
    before buffering, the collector before indexing."""
    encoded = encode(event)
    if not may_contain_pan(encoded):
        return encoded
    return encode(mask_event(event, settings))


# ---------------------------------------------------------------- documents, bytes, logs

# Keys whose values are ids wherever they appear in a document tree (alerts, actions, log
# lines), except where the full path says otherwise: infrastructure ids are free text.
ID_KEYS: Final = frozenset(
    {"id", "order_id", "attempt_id", "merchant_id", "fingerprint", "refund_id", "event_id", "event_ids", "dedup_key"}
)
NOT_ID_PATHS: Final = frozenset({"service.instance.id", "trace.id", "span.id"})


def _is_id_path(path: tuple[str, ...], settings: PanSettings) -> bool:
    if not path or ".".join(path[-3:]) in NOT_ID_PATHS or ".".join(path[-2:]) in NOT_ID_PATHS:
        return False
    return path[-1] in ID_KEYS or (len(path) > 1 and path[-2] == "labels" and is_id_label(path[-1], settings))


def mask_tree(value: Any, settings: PanSettings = DEFAULT) -> Any:
    """Mask card numbers in every string of a JSON-like tree (a stored document, a log line).
        Ids (by key) are kept, and so are they where its text names them (an alert's description
        lists its orders), unless they are card numbers by `id_rule`, which a stored document
        cannot reject: those are masked. Integers are masked only when they are a card by the scheme
    rule (so epoch milliseconds, which pass Luhn one time in ten, stay numbers)."""
    return _mask_tree(value, settings, (), id_digits(_tree_ids(value, settings)))


def _mask_tree(value: Any, settings: PanSettings, path: tuple[str, ...], keep: frozenset[str]) -> Any:
    if isinstance(value, str):
        if _is_id_path(path, settings):
            return mask_text(value) if card_in_id(value, settings) else value
        return mask_text(value, keep)
    if isinstance(value, dict):
        return {mask_text(k, keep): _mask_tree(v, settings, (*path, k), keep) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_tree(v, settings, path, keep) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** (MIN_PAN - 1):
        # A number is a number (epoch milliseconds, amounts, counters keep their mapped type): only
        # one that is a card by the scheme rule is masked, and becomes text.
        text = str(abs(value))
        return mask_text(text) if scheme_of(text) else value
    return value


def _tree_ids(node: Any, settings: PanSettings, path: tuple[str, ...] = ()) -> list[str]:
    """The id strings of a tree that are not card numbers."""
    if isinstance(node, dict):
        return [i for k, v in node.items() for i in _tree_ids(v, settings, (*path, k))]
    if isinstance(node, list | tuple):
        return [i for v in node for i in _tree_ids(v, settings, path)]
    if isinstance(node, str) and _is_id_path(path, settings) and card_in_id(node, settings) is None:
        return [node]
    return []


def _ids_in(raw: bytes, settings: PanSettings) -> frozenset[str]:
    try:
        return id_digits(_tree_ids(msgspec.json.decode(raw), settings))
    except (msgspec.DecodeError, UnicodeError, RecursionError):  # not JSON, not UTF-8, too deep: no ids to keep
        return frozenset()


def mask_bytes(raw: bytes, settings: PanSettings = DEFAULT) -> bytes:
    """Mask card numbers in raw bytes that may not even be JSON or UTF-8 (dead letters), keeping
    every other byte; ids of a JSON message that are not card numbers stay whole.

    UTF-8 with surrogateescape round-trips any byte string, and decodes full-width digits."""
    text = raw.decode("utf-8", "surrogateescape")
    masked = mask_text(text, _ids_in(raw, settings) if _has_run(text) else ())
    return raw if masked is text else masked.encode("utf-8", "surrogateescape")


class MaskingFilter(logging.Filter):
    """Masks card numbers in standard-library log records (message, arguments, traceback) before
    any handler sees them: the SDK's diagnostics run inside the payment service's own logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose format does not fit its arguments: keep both, as text
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def mask_id(value: str, settings: PanSettings = DEFAULT) -> str:
    """An id as it may be shown: whole, unless it is a card number by `id_rule` (which only
    gets this far from a producer that bypassed ingest: pages and links cannot reject)."""
    return mask_text(value) if card_in_id(value, settings) else value
