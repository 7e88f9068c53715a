"""The card-number corpus the PAN tests share: card numbers of every major scheme and length, in
the shapes people write them (separators, full-width digits, JSON escapes) and the company they
keep (amounts, CVVs, expiry dates, phone numbers, URLs); the false positives that must come
through intact (Luhn-valid order ids, timestamps, amounts, phone numbers); and `survives`, which
looks for a card number in anything paywatch wrote, however it was encoded there.

Card numbers are built here from IIN prefixes (the schemes' published ranges) with Luhn check
digits computed by `luhn_complete`, an implementation independent of paywatch's prefix-sum one.
"""

from __future__ import annotations

import html
import itertools
import json
import random
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import unquote


def luhn_complete(body: str) -> str:
    """body + the check digit that makes it Luhn-valid (textbook right-to-left doubling)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def make_pan(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return luhn_complete(body)


# (scheme, IIN prefix, lengths): every major scheme, at every length it issues.
SCHEMES = [
    ("Visa", "4", (13, 16, 19)),
    ("Mastercard", "51", (16,)),
    ("Mastercard", "2720", (16,)),
    ("American Express", "37", (15,)),
    ("American Express", "34", (15,)),
    ("Discover", "6011", (16, 19)),
    ("Discover", "65", (16,)),
    ("JCB", "3530", (16, 19)),
    ("UnionPay", "62", (16, 17, 18, 19)),
    ("Diners Club", "36", (14,)),
    ("Diners Club", "300", (14, 16)),
    ("Maestro", "6759", (13, 15, 18, 19)),
    ("Mir", "2200", (16,)),
]
# The schemes' own published test numbers, next to generated ones.
KNOWN = ["4111111111111111", "4012888888881881", "4222222222222", "5555555555554444", "378282246310005",
         "371449635398431", "30569309025904", "6011111111111117", "3530111333300000", "6200000000000005"]  # fmt: skip

_rng = random.Random(14)
PANS: list[str] = KNOWN + [make_pan(p, n, _rng) for _, p, lengths in SCHEMES for n in lengths]


def _groups(pan: str) -> list[str]:
    if len(pan) == 15:  # Amex prints 4-6-5
        return [pan[:4], pan[4:10], pan[10:]]
    return [pan[i : i + 4] for i in range(0, len(pan), 4)]


FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")

# How a card number is written: name → formatter.
FORMATS: dict[str, Callable[[str], str]] = {
    "plain": lambda p: p,
    "space": lambda p: " ".join(_groups(p)),
    "double space": lambda p: "  ".join(_groups(p)),
    "dash": lambda p: "-".join(_groups(p)),
    "dot": lambda p: ".".join(_groups(p)),
    "nbsp": lambda p: "\u00a0".join(_groups(p)),
    "thin space": lambda p: "\u2009".join(_groups(p)),
    "spaced dash": lambda p: " - ".join(_groups(p)),
    "full-width": lambda p: p.translate(FULL_WIDTH),
    "full-width spaced": lambda p: "\u3000".join(_groups(p.translate(FULL_WIDTH))),
    "json-escaped": lambda p: "".join(f"\\u{ord(c):04x}" for c in p),
    "json-escaped grouped": lambda p: "\\u0020".join("".join(f"\\u{ord(c):04x}" for c in g) for g in _groups(p)),
}

# The company a card number keeps in free text.
CONTEXTS = [
    "{pan}",
    "card {pan} declined",
    "amount 100 {pan}",
    "CNY 1250 {pan}",
    "{pan} 737",
    "{pan} cvv 123",
    "{pan} 12/27",
    "{pan} 1227",
    "378 {pan} 0928",
    "phone +86 138 0013 8000 card {pan}",
    "call 13800138000 {pan}",
    "https://pay.example.com/cb?card={pan}&amount=1250",
    "card={pan};exp=1227;cvv=999",
    '{{"pan":"{pan}"}}',
    "100{pan}",
    "{pan}7",
]


def corpus() -> list[tuple[str, str, str]]:
    """(card number, format name, text) for every card × format × context: thousands of cases."""
    return [
        (pan, name, context.format(pan=fmt(pan)))
        for pan in PANS
        for name, fmt in FORMATS.items()
        for context in CONTEXTS
    ]


def sample(n: int) -> list[tuple[str, str, str]]:
    """n cases that still cover every card, every format and every context (cycled together)."""
    formats, contexts = itertools.cycle(FORMATS.items()), itertools.cycle(CONTEXTS)
    pans = itertools.cycle(PANS)
    out = []
    for _ in range(n):
        pan, (name, fmt), context = next(pans), next(formats), next(contexts)
        out.append((pan, name, context.format(pan=fmt(pan))))
    return out


# Luhn-valid numeric order ids (snowflake-like, as payment systems issue them): not card numbers
# by the scheme rule (no major scheme's IIN prefix at that length), so ids keep them whole.
ORDER_IDS = [
    "2026112600000003",
    "2026112600000011",
    "2026112600000029",
    "2026112600000037",
    "2026112600000045",
    "2026112600000052",
    "1099511627776000005",
    luhn_complete("90000000000000000"),
]
# Free text that must come through unmasked: timestamps, amounts, phone numbers.
INTACT_TEXT = [
    "at 2026-11-26T13:52:01.123Z",
    "at 2026-11-26 13:52:01 UTC",
    "Thu, 26 Nov 2026 13:52:01 +0000",
    "epoch 1764165121000",
    "amount 1250 CNY",
    "amount 1,250,000.00 USD",
    "refund 99.95 EUR",
    "tel +86 138 0013 8000",
    "tel +1 (415) 555-2671",
    "tel +44 20 7946 0958",
    "tel 13800138000",
]

_ESCAPE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_SEPARATORS = " -.\u00a0\u2007\u2009\u202f\u3000\u2010\u2011\u2012\u2013\uff0d\uff0e"


def normalise(data: str | bytes) -> str:
    """What a reader could recover: escapes, percent- and HTML-encoding undone, every kind of
    digit made ASCII, separators removed, so `pan in normalise(x)` finds it in any shape."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for _ in range(2):  # double escaping (JSON inside JSON)
        text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
        text = html.unescape(unquote(text))
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else "" if c in _SEPARATORS else c for c in text)


def survivors(data: str | bytes, pans: list[str] | None = None) -> list[str]:
    """The card numbers of the corpus found in data."""
    flat = normalise(data)
    return [pan for pan in (PANS if pans is None else pans) if pan in flat]


def beyond_six_and_four(data: str | bytes, pan: str) -> list[str]:
    """Seven digits in a row of `pan` found in data: each reaches into the card number's middle,
    and PCI DSS 3.4 shows at most its first six and last four."""
    flat = normalise(data)
    return [pan[i : i + 7] for i in range(len(pan) - 6) if pan[i : i + 7] in flat]


# ---------------------------------------------------------------- events carrying the corpus
NOW = datetime.now(UTC).replace(microsecond=0)
TS = NOW.isoformat().replace("+00:00", "Z")

Setter = Callable[[dict, str], None]


def _label_value(doc: dict, text: str) -> None:
    doc.setdefault("labels", {})["note"] = text


def _label_key(doc: dict, text: str) -> None:
    doc.setdefault("labels", {})[text] = "v"


def _error(key: str) -> Setter:
    return lambda doc, text: doc.setdefault("error", {}).__setitem__(key, text)


def _payment(key: str) -> Setter:
    return lambda doc, text: doc["payment"].__setitem__(key, text)


def _service(key: str) -> Setter:
    return lambda doc, text: doc["service"].__setitem__(key, text)


# Every string field of the contract that is free text, and a label key and value.
FIELDS: dict[str, Setter] = {
    "message": lambda doc, text: doc.__setitem__("message", text),
    "labels.note": _label_value,
    "label key": _label_key,
    "error.type": _error("type"),
    "error.message": _error("message"),
    "payment.channel": _payment("channel"),
    "payment.method": _payment("method"),
    "payment.status": _payment("status"),
    "payment.error_code": _payment("error_code"),
    "service.name": _service("name"),
    "service.version": _service("version"),
    "service.instance.id": lambda doc, text: doc["service"].__setitem__("instance", {"id": text}),
    "trace.id": lambda doc, text: doc.__setitem__("trace", {"id": text}),
    "span.id": lambda doc, text: doc.__setitem__("span", {"id": text}),
}


def payment_doc(event_id: str, action: str, order_id: str, **payment: object) -> dict:
    return {
        "@timestamp": TS,
        "event": {"id": event_id, "dataset": "paywatch.payment", "action": action},
        "service": {"name": "gateway", "instance": {"id": "gw-1"}},
        "payment": {"order_id": order_id, **payment},
    }


def corpus_lines() -> list[bytes]:
    """300 corpus cases, each in one free-text field (cycled), on payment, app and heartbeat events."""
    lines = []
    names = list(FIELDS)
    for i, (pan, _fmt, text) in enumerate(sample(300)):
        doc = payment_doc(f"corpus-{i}", "payment_requested", f"c-{i}", attempt_id=f"c-{i}-a", channel="wechat")
        FIELDS[names[i % len(names)]](doc, text)
        raw = json.dumps(doc, ensure_ascii=i % 2 == 0)
        if i % 7 == 0:  # digits JSON-escaped in the raw message itself
            raw = raw.replace(pan, "".join(f"\\u{ord(c):04x}" for c in pan))
        lines.append(raw.encode())
    for i, pan in enumerate(PANS):
        lines.append(
            json.dumps(
                {
                    "@timestamp": TS,
                    "event": {"id": f"app-{i}", "dataset": "paywatch.app", "action": f"charge {pan}"},
                    "service": {"name": "checkout", "instance": {"id": "co-1"}},
                    "log": {"level": "error"},
                    "message": f"card {pan} declined",
                }
            ).encode()
        )
        lines.append(
            json.dumps(
                {
                    "@timestamp": TS,
                    "event": {"id": f"hb-{i}", "dataset": "paywatch.heartbeat"},
                    "service": {"name": "checkout", "instance": {"id": "co-1"}},
                    "heartbeat": {"interval_s": 3600, "seq": i, "status": "up", "checks": {f"db {pan}": "ok"}},
                }
            ).encode()
        )
    return lines


def id_field_lines() -> list[bytes]:
    """A card number as an id: rejected with a reason, never stored, never mangled into storage."""
    docs = []
    for i, pan in enumerate(PANS):
        where = i % 4
        doc = payment_doc(f"id-{i}", "payment_requested", pan if where == 0 else f"i-{i}", attempt_id=f"i-{i}-a")
        doc["payment"]["channel"] = "wechat"
        if where == 1:
            doc["payment"]["attempt_id"] = pan
        elif where == 2:
            doc["payment"]["merchant_id"] = pan
        elif where == 3:
            doc["labels"] = {"refund_id": pan}
        docs.append(json.dumps(doc).encode())
    return docs


def broken_lines() -> list[bytes]:
    """Dead letters: not JSON, wrong contract, digits escaped and full-width."""
    out = []
    for i, pan in enumerate(PANS):
        escaped = "".join(f"\\u{ord(c):04x}" for c in pan)
        out.append(b'{"broken": "card %s' % pan.encode())
        out.append(b'{"message": "%s", "order_id": "%s"}' % (escaped.encode(), ORDER_IDS[i % 6].encode()))
        out.append(('{"x": "' + pan.translate(str.maketrans("0123456789", "０１２３４５６７８９")) + '"').encode())
    return out


def stuck_order_lines() -> list[bytes]:
    """Six orders paid at alipay but never marked paid: enough to page (page_at: 5)."""
    lines = []
    for n, order in enumerate(ORDER_IDS[:6]):
        pan = PANS[n]
        note = {"note": f"customer typed {pan}", "refund_no": ORDER_IDS[6], "phone": INTACT_TEXT[-4]}
        created = payment_doc(f"{order}-c", "order_created", order, amount_minor=1250, currency="CNY")
        created["message"] = f"order {order} created {INTACT_TEXT[n % len(INTACT_TEXT)]}"
        requested = payment_doc(f"{order}-r", "payment_requested", order, attempt_id=f"{order}01", channel="alipay")
        requested["payment"].update(amount_minor=1250, currency="CNY")
        callback = payment_doc(
            f"{order}-s", "channel_callback", order, attempt_id=f"{order}01", channel="alipay", status="TRADE_SUCCESS"
        )
        callback["event"]["outcome"] = "success"
        callback["labels"] = note
        callback["message"] = f"callback for {order}: card {pan} charged 1250 CNY"
        lines += [json.dumps(d).encode() for d in (created, requested, callback)]
    return lines
