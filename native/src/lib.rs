//! paywatch's fast paths. This file is the collector's; `sdk.rs` is the SDK's, which shares the
//! contract's terms below.
//!
//! The collector's fast path proves that a message is a contract event exactly as paywatch's own
//! encoder writes it (msgspec's canonical JSON: fields in the contract's order, defaults omitted,
//! no whitespace), valid, of the expected dataset, holding no digit run a card number could hide
//! in outside its free text (`message`, `error.type`, `error.message`), and with no
//! `event.ingested` yet. For such a message, what the Python path would store is the message
//! itself with `event.ingested` added and its free text masked, so this writes that bulk line
//! directly. Free text holding a digit run is masked by the Python path's own judge
//! (`paywatch.pan.mask_text`, passed in), and only when the policy masks free text: no id can
//! then hold a run, so `mask_event` would make exactly those calls and change nothing else.
//!
//! Anything else (another form, an escape, non-ASCII text, a possible card number elsewhere or
//! under another policy, a value the contract refuses) is answered `None`: the Python path
//! (`paywatch.intake`, `paywatch.pan`) judges it, gives the reason, and masks. So this never
//! decides that an event is invalid; it only recognises, byte by byte, the common valid one.
//! `tests/test_native.py` holds it to the Python path's bytes, and to the contract's field orders
//! and terms (`contract_terms`).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

mod sdk;

/// paywatch.pan's MIN_PAN: a run of this many digits (separators ' ', '-', '.' between them
/// allowed) may be a card number; `may_contain_pan` then sends the event to masking.
pub(crate) const MIN_PAN: usize = 13;
pub(crate) const MAX_ID: usize = 256;
pub(crate) const MAX_INT: u64 = i64::MAX as u64;
const MAX_INTERVAL_S: f64 = 7.0 * 86400.0;

const EVENT: &[&str] = &[
    "@timestamp",
    "event",
    "service",
    "payment",
    "heartbeat",
    "log",
    "message",
    "error",
    "trace",
    "span",
    "labels",
];
const EVENT_META: &[&str] = &["id", "dataset", "action", "outcome", "ingested"];
const SERVICE: &[&str] = &["name", "instance", "version"];
const SERVICE_INSTANCE: &[&str] = &["id"];
pub(crate) const PAYMENT: &[&str] = &[
    "order_id",
    "attempt_id",
    "channel",
    "method",
    "merchant_id",
    "amount_minor",
    "currency",
    "status",
    "error_code",
    "error_category",
    "latency_ms",
];
const HEARTBEAT: &[&str] = &["interval_s", "seq", "status", "checks"];
const LOG: &[&str] = &["level"];
const ERROR: &[&str] = &["type", "message"];
const TRACE_ID: &[&str] = &["id"];

const DATASETS: &[&str] = &["paywatch.payment", "paywatch.heartbeat", "paywatch.app"];
pub(crate) const OUTCOMES: &[&str] = &["success", "failure", "unknown"];
pub(crate) const ERROR_CATEGORIES: &[&str] = &["user", "channel", "system", "limit"];
const HEARTBEAT_STATUSES: &[&str] = &["up", "degraded", "stopping"];
const CHECK_RESULTS: &[&str] = &["ok", "fail"];
const LOG_LEVELS: &[&str] = &[
    "trace", "debug", "info", "warn", "warning", "error", "critical", "fatal",
];
pub(crate) const PAYMENT_ACTIONS: &[&str] = &[
    "order_created",
    "payment_requested",
    "channel_callback",
    "channel_query_result",
    "order_paid",
    "order_closed",
    "refund_requested",
    "refund_succeeded",
];
pub(crate) const ATTEMPT_ACTIONS: &[&str] = &[
    "payment_requested",
    "channel_callback",
    "channel_query_result",
];
pub(crate) const CHANNEL_ACTIONS: &[&str] = &[
    "payment_requested",
    "channel_callback",
    "channel_query_result",
    "refund_requested",
    "refund_succeeded",
];

/// None: not recognised (the Python path judges the message).
type Seen<T> = Option<T>;

pub(crate) fn one_of(s: &[u8], terms: &[&str]) -> bool {
    terms.iter().any(|t| t.as_bytes() == s)
}

/// Every byte printable ASCII, no backslash: then no string holds an escape, and text in other
/// scripts (full-width digits a card number could hide in) goes to the Python path. One pass
/// the compiler vectorises.
pub(crate) fn printable(raw: &[u8]) -> bool {
    !raw.iter().fold(false, |bad, &c| {
        bad | !(0x20..0x80).contains(&c) | (c == b'\\')
    })
}

/// Text JSON writes as it is between its quotes: printable ASCII with no `"` or `\`.
pub(crate) fn unescaped(s: &[u8]) -> bool {
    printable(s) && !s.contains(&b'"')
}

/// Where the first `"` is, eight bytes at a time (most strings are short: no memchr set-up).
fn find_quote(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while at + 8 <= s.len() {
        let word = u64::from_le_bytes(s[at..at + 8].try_into().ok()?) ^ (ONES * u64::from(b'"'));
        // The lowest zero byte of `word` (a quote) is flagged exactly; higher flags may be false.
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    s[at..].iter().position(|&c| c == b'"').map(|p| at + p)
}

/// No run of digits a card number could be in this string (a short one holds none).
pub(crate) fn no_card_run(s: &[u8]) -> bool {
    s.len() < MIN_PAN || longest_digit_run(s) < MIN_PAN
}

/// The longest run of digits, separators (' ', '-', '.') between them not counted: the rule of
/// `paywatch.pan.may_contain_pan`.
fn longest_digit_run(s: &[u8]) -> usize {
    let (mut run, mut longest) = (0, 0);
    for &c in s {
        if c.is_ascii_digit() {
            run += 1;
            longest = longest.max(run);
        } else if !(c == b' ' || c == b'-' || c == b'.') {
            run = 0;
        }
    }
    longest
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self, c: u8) -> Seen<()> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn peek(&self) -> Seen<u8> {
        self.b.get(self.i).copied()
    }

    /// The bytes of a string, up to its closing quote (`printable` has checked them).
    fn quoted(&mut self) -> Seen<&'a [u8]> {
        self.byte(b'"')?;
        let start = self.i;
        let end = start + find_quote(&self.b[start..])?;
        self.i = end + 1;
        Some(&self.b[start..end])
    }

    /// An id, or free text other than `message` and `error.*`: also holding no digit run a card
    /// number could be.
    fn string(&mut self) -> Seen<&'a [u8]> {
        let s = self.quoted()?;
        no_card_run(s).then_some(s)
    }

    /// Free text a card number may be masked in (`message`, `error.*`): a string holding a digit
    /// run is read all the same, and its place noted in `runs`, for `bulk_line` to mask.
    fn text(&mut self, runs: &mut Vec<(usize, usize)>) -> Seen<()> {
        let s = self.quoted()?;
        if !no_card_run(s) {
            runs.push((self.i - 1 - s.len(), self.i - 1));
        }
        Some(())
    }

    fn id(&mut self) -> Seen<&'a [u8]> {
        let s = self.string()?;
        (!s.is_empty() && s.len() <= MAX_ID).then_some(s)
    }

    fn term(&mut self, terms: &[&str]) -> Seen<&'a [u8]> {
        let s = self.quoted()?; // one of the contract's words: no digits
        one_of(s, terms).then_some(s)
    }

    /// A non-negative int as msgspec writes it: no sign, no leading zero, within int64.
    fn count(&mut self) -> Seen<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        let canonical = n > 0 && n < MIN_PAN && (n == 1 || self.b[start] != b'0') && v <= MAX_INT;
        canonical.then_some(v)
    }

    /// A heartbeat interval: a float in plain decimal notation that is its own shortest
    /// round-trip form (what msgspec writes for it), within the contract's bounds.
    fn interval(&mut self) -> Seen<f64> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'.') = self.peek() {
            self.i += 1;
        }
        let text = &self.b[start..self.i];
        let digits = text.iter().filter(|c| c.is_ascii_digit()).count();
        if text.iter().filter(|&&c| c == b'.').count() != 1 || digits >= MIN_PAN {
            return None;
        }
        let v: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        let mut buf = ryu::Buffer::new();
        let shortest = buf.format_finite(v).as_bytes() == text;
        (shortest && v > 0.0 && v <= MAX_INTERVAL_S).then_some(v)
    }

    /// `@timestamp` in UTC, YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z, a real date; returns it as
    /// msgspec writes it (microseconds, or no fraction when they are zero), which is the form
    /// the Python path stores: milliseconds, as most loggers write them, gain three zeros.
    fn timestamp(&mut self) -> Seen<Timestamp> {
        let s = self.quoted()?; // its digit runs are at most 8 long: checked below, digit by digit
        let fraction = match s.len() {
            20 => &s[19..19],
            24 if s[19] == b'.' => &s[20..23],
            27 if s[19] == b'.' => &s[20..26],
            _ => return None,
        };
        let punctuation =
            s[4] == b'-' && s[7] == b'-' && s[10] == b'T' && s[13] == b':' && s[16] == b':';
        if !punctuation || s[s.len() - 1] != b'Z' || !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let num = |a: usize, b: usize| -> Seen<u32> {
            s[a..b].iter().try_fold(0u32, |v, &c| {
                c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
            })
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        if !(year >= 1 && (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60) {
            return None;
        }
        let mut ts = Timestamp {
            text: [b'0'; 27],
            len: 20,
        };
        ts.text[..19].copy_from_slice(&s[..19]);
        if fraction.iter().any(|&c| c != b'0') {
            ts.text[19] = b'.';
            ts.text[20..20 + fraction.len()].copy_from_slice(fraction);
            ts.len = 27;
        }
        ts.text[ts.len - 1] = b'Z';
        Some(ts)
    }

    /// An object whose keys come in the order of `keys`, each at most once; `field` reads the
    /// value of key number k. Returns the set of keys present, as bits.
    fn object(
        &mut self,
        keys: &[&str],
        mut field: impl FnMut(&mut Self, usize) -> Seen<()>,
    ) -> Seen<u32> {
        self.byte(b'{')?;
        let mut seen = 0u32;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(seen);
        }
        let mut next = 0;
        loop {
            // The key, compared in place with the names still allowed (no string to scan).
            self.byte(b'"')?;
            let rest = &self.b[self.i..];
            let named = |name: &&str| {
                rest.get(name.len()) == Some(&b'"') && rest.starts_with(name.as_bytes())
            };
            let k = next + keys[next..].iter().position(named)?;
            self.i += keys[k].len() + 1;
            self.byte(b':')?;
            field(self, k)?;
            seen |= 1 << k;
            next = k + 1;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(seen);
                }
                _ => return None,
            }
        }
    }

    /// A string → value map with distinct keys; `value` reads one value.
    fn map(&mut self, mut value: impl FnMut(&mut Self) -> Seen<()>) -> Seen<usize> {
        self.byte(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(0);
        }
        let mut keys: Vec<&[u8]> = Vec::new();
        loop {
            let key = self.string()?;
            if keys.len() >= 64 || keys.contains(&key) {
                return None;
            }
            keys.push(key);
            self.byte(b':')?;
            value(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(keys.len());
                }
                _ => return None,
            }
        }
    }
}

/// `@timestamp` as msgspec writes it.
#[derive(Default)]
struct Timestamp {
    text: [u8; 27],
    len: usize,
}

/// What the output and the cross-field rules need, read on the way.
#[derive(Default)]
struct Found<'a> {
    timestamp: Timestamp,
    timestamp_end: usize,
    id: &'a [u8],
    dataset: &'a [u8],
    action: Option<&'a [u8]>,
    meta_end: usize,
    payment: Option<u32>,
    heartbeat: bool,
    log: bool,
    message: bool,
    /// Where the free text holding digit runs is (`Reader::text`), in order.
    runs: Vec<(usize, usize)>,
}

/// The place of `name` among `keys`, at compile time.
pub(crate) const fn at(keys: &[&str], name: &str) -> usize {
    let mut k = 0;
    while k < keys.len() {
        if keys[k].len() == name.len() {
            let (a, b) = (keys[k].as_bytes(), name.as_bytes());
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return k;
            }
        }
        k += 1;
    }
    panic!("no such key")
}

const fn bit(keys: &[&str], name: &str) -> u32 {
    1 << at(keys, name)
}

const P_ORDER_ID: usize = at(PAYMENT, "order_id");
const P_ATTEMPT_ID: usize = at(PAYMENT, "attempt_id");
const P_AMOUNT_MINOR: usize = at(PAYMENT, "amount_minor");
const P_LATENCY_MS: usize = at(PAYMENT, "latency_ms");
const P_CURRENCY: usize = at(PAYMENT, "currency");
const P_ERROR_CATEGORY: usize = at(PAYMENT, "error_category");
const H_INTERVAL_S: usize = at(HEARTBEAT, "interval_s");
const H_SEQ: usize = at(HEARTBEAT, "seq");
const H_STATUS: usize = at(HEARTBEAT, "status");
const M_ID: usize = at(EVENT_META, "id");
const M_DATASET: usize = at(EVENT_META, "dataset");
const M_ACTION: usize = at(EVENT_META, "action");
const M_OUTCOME: usize = at(EVENT_META, "outcome");
const S_NAME: usize = at(SERVICE, "name");
const S_INSTANCE: usize = at(SERVICE, "instance");
const E_TIMESTAMP: usize = at(EVENT, "@timestamp");
const E_EVENT: usize = at(EVENT, "event");
const E_SERVICE: usize = at(EVENT, "service");
const E_PAYMENT: usize = at(EVENT, "payment");
const E_HEARTBEAT: usize = at(EVENT, "heartbeat");
const E_LOG: usize = at(EVENT, "log");
const E_MESSAGE: usize = at(EVENT, "message");
const E_ERROR: usize = at(EVENT, "error");
const E_TRACE: usize = at(EVENT, "trace");
const E_SPAN: usize = at(EVENT, "span");

fn payment(r: &mut Reader<'_>) -> Seen<u32> {
    let seen = r.object(PAYMENT, |r, k| match k {
        P_ORDER_ID | P_ATTEMPT_ID => r.id().map(drop),
        P_AMOUNT_MINOR | P_LATENCY_MS => r.count().map(drop),
        P_CURRENCY => {
            let s = r.string()?;
            (s.len() == 3 && s.iter().all(u8::is_ascii_uppercase)).then_some(())
        }
        P_ERROR_CATEGORY => r.term(ERROR_CATEGORIES).map(drop),
        _ => r.string().map(drop),
    })?;
    (seen & bit(PAYMENT, "order_id") != 0).then_some(seen)
}

fn heartbeat(r: &mut Reader<'_>) -> Seen<()> {
    let seen = r.object(HEARTBEAT, |r, k| match k {
        H_INTERVAL_S => r.interval().map(drop),
        H_SEQ => r.count().map(drop),
        H_STATUS => r.term(HEARTBEAT_STATUSES).map(drop),
        _ => r.map(|r| r.term(CHECK_RESULTS).map(drop)).map(drop),
    })?;
    let required = bit(HEARTBEAT, "interval_s") | bit(HEARTBEAT, "seq") | bit(HEARTBEAT, "status");
    (seen & required == required).then_some(())
}

fn with_id(r: &mut Reader<'_>) -> Seen<()> {
    let seen = r.object(TRACE_ID, |r, _| r.id().map(drop))?;
    (seen != 0).then_some(())
}

fn event<'a>(r: &mut Reader<'a>) -> Seen<Found<'a>> {
    let mut found = Found::default();
    let seen = r.object(EVENT, |r, k| match k {
        E_TIMESTAMP => r.timestamp().map(|ts| {
            found.timestamp = ts;
            found.timestamp_end = r.i;
        }),
        E_EVENT => {
            let meta = r.object(EVENT_META, |r, k| match k {
                M_ID => r.id().map(|s| found.id = s),
                M_DATASET => r.term(DATASETS).map(|s| found.dataset = s),
                M_ACTION => r.string().map(|s| found.action = Some(s)),
                M_OUTCOME => r.term(OUTCOMES).map(drop),
                _ => None, // `ingested` is paywatch's to set
            })?;
            found.meta_end = r.i - 1;
            let required = bit(EVENT_META, "id") | bit(EVENT_META, "dataset");
            (meta & required == required).then_some(())
        }
        E_SERVICE => {
            let seen = r.object(SERVICE, |r, k| match k {
                S_NAME => r.id().map(drop),
                S_INSTANCE => with_id(r),
                _ => r.string().map(drop),
            })?;
            let required = bit(SERVICE, "name") | bit(SERVICE, "instance");
            (seen & required == required).then_some(())
        }
        E_PAYMENT => payment(r).map(|seen| found.payment = Some(seen)),
        E_HEARTBEAT => heartbeat(r).map(|()| found.heartbeat = true),
        E_LOG => {
            let seen = r.object(LOG, |r, _| r.term(LOG_LEVELS).map(drop))?;
            found.log = seen != 0;
            found.log.then_some(())
        }
        E_MESSAGE => r.text(&mut found.runs).map(|()| found.message = true),
        E_ERROR => r.object(ERROR, |r, _| r.text(&mut found.runs)).map(drop),
        E_TRACE | E_SPAN => with_id(r),
        _ => r
            .map(|r| r.string().map(drop))
            .and_then(|n| (n > 0).then_some(())), // labels: {} is omitted
    })?;
    let required = bit(EVENT, "@timestamp") | bit(EVENT, "event") | bit(EVENT, "service");
    (seen & required == required && r.i == r.b.len()).then_some(found)
}

/// The contract's cross-field rules (`paywatch.contract.check`), for the dataset the topic carries.
fn complete(found: &Found<'_>, dataset: &[u8]) -> bool {
    if found.dataset != dataset {
        return false;
    }
    match dataset {
        b"paywatch.payment" => {
            let (Some(seen), Some(action)) = (found.payment, found.action) else {
                return false;
            };
            one_of(action, PAYMENT_ACTIONS)
                && (!one_of(action, CHANNEL_ACTIONS) || seen & bit(PAYMENT, "channel") != 0)
                && (!one_of(action, ATTEMPT_ACTIONS) || seen & bit(PAYMENT, "attempt_id") != 0)
        }
        b"paywatch.heartbeat" => found.heartbeat,
        b"paywatch.app" => found.log && found.message,
        _ => false,
    }
}

/// One message → its bulk line: `action` + `"<event.id>"}}\n` + the message with `@timestamp` as
/// msgspec writes it and `,"ingested":<ingested>` added to its `event` object + `\n`; None
/// unless it is a canonical contract event of `dataset`.
///
/// Free text holding a digit run is written as `mask` (paywatch.pan's `mask_text`, the one judge
/// of card numbers) returns it, when the card-number policy masks free text; without `mask`, or
/// when what it returns would need escaping, the message is left to the Python path.
fn bulk_line<'py>(
    py: Python<'py>,
    raw: &[u8],
    (dataset, action, mask): &Route<'py>,
    ingested: &[u8],
    buf: &mut Vec<u8>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if !printable(raw) {
        return Ok(None);
    }
    let Some(found) = event(&mut Reader { b: raw, i: 0 }) else {
        return Ok(None);
    };
    if !complete(&found, dataset) {
        return Ok(None);
    }
    buf.clear();
    for part in [
        action.as_slice(),
        b"\"",
        found.id,
        b"\"}}\n",
        b"{\"@timestamp\":\"", // the first field, rewritten
        &found.timestamp.text[..found.timestamp.len],
        &raw[found.timestamp_end - 1..found.meta_end],
        b",\"ingested\":",
        ingested,
    ] {
        buf.extend_from_slice(part);
    }
    let mut done = found.meta_end; // free text comes after the `event` object
    for &(start, end) in &found.runs {
        let Some(mask) = mask else {
            return Ok(None);
        };
        // Spans come in field order, after the `event` object, in text printable() has proved
        // ASCII: neither check below can fail, and neither is left to a panic.
        let (true, Ok(text)) = (start >= done, std::str::from_utf8(&raw[start..end])) else {
            return Ok(None);
        };
        let masked = mask.call1((text,))?;
        let masked = masked.downcast::<PyString>()?.to_str()?.as_bytes();
        if !unescaped(masked) {
            return Ok(None);
        }
        buf.extend_from_slice(&raw[done..start]);
        buf.extend_from_slice(masked);
        done = end;
    }
    buf.extend_from_slice(&raw[done..]);
    buf.push(b'\n');
    Ok(Some(PyBytes::new(py, buf)))
}

/// `f`'s result, with a panic (a bug here) turned into a RuntimeError: PyO3's own
/// PanicException is a BaseException, which the callers' `except Exception` would let through,
/// stopping the collector or the SDK's drain thread instead of only this batch's fast path.
pub(crate) fn unwound<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(pyo3::exceptions::PyRuntimeError::new_err(
            "paywatch._native: internal fault (a bug; please report it)",
        ))
    })
}

/// A topic's dataset, its bulk action line up to the `_id` value, and how free text holding a
/// digit run is masked (None: such a message is left to the Python path).
type Route<'py> = (Vec<u8>, Vec<u8>, Option<Bound<'py, PyAny>>);

/// For each message (`values[i]`, read from `topics[i]`): its bulk line when the topic's route
/// (`routes`: topic → (dataset, bulk action line up to the `_id` value, masking callable or
/// None)) carries contract events and the message, at most `max_bytes` long, is recognised; else
/// None. `ingested` is the JSON of the processing time.
#[pyfunction]
fn bulk_lines<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    topics: &Bound<'py, PyList>,
    routes: &Bound<'py, PyDict>,
    ingested: &[u8],
    max_bytes: usize,
) -> PyResult<Bound<'py, PyList>> {
    if values.len() != topics.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "values and topics differ in length",
        ));
    }
    unwound(|| {
        let mut out: Vec<PyObject> = Vec::with_capacity(values.len());
        let mut buf = Vec::with_capacity(1024);
        // Messages of one topic come in runs: its route is looked up once per run.
        let mut route: Option<(Bound<'py, PyAny>, Option<Route<'py>>)> = None;
        for (value, topic) in values.iter().zip(topics.iter()) {
            let same = match &route {
                Some((last, _)) => last.is(&topic) || last.eq(&topic)?,
                None => false,
            };
            if !same {
                let found = match routes.get_item(&topic)? {
                    Some(r) => Some(
                        r.extract::<(String, Vec<u8>, Option<Bound<'py, PyAny>>)>()
                            .map(|(d, a, m)| (d.into_bytes(), a, m))?,
                    ),
                    None => None,
                };
                route = Some((topic, found));
            }
            let line = match (&route, value.downcast::<PyBytes>()) {
                (Some((_, Some(route))), Ok(raw)) if raw.as_bytes().len() <= max_bytes => {
                    bulk_line(py, raw.as_bytes(), route, ingested, &mut buf)?
                }
                _ => None,
            };
            out.push(match line {
                Some(bytes) => bytes.into_any().unbind(),
                None => py.None(),
            });
        }
        PyList::new(py, out)
    })
}

/// The field orders and terms this module recognises, for the test that holds them to
/// `paywatch.contract` (a contract change then fails a test instead of silently diverging).
#[pyfunction]
fn contract_terms(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let terms = PyDict::new(py);
    let lists: [(&str, &[&str]); 18] = [
        ("Event", EVENT),
        ("EventMeta", EVENT_META),
        ("Service", SERVICE),
        ("ServiceInstance", SERVICE_INSTANCE),
        ("Payment", PAYMENT),
        ("Heartbeat", HEARTBEAT),
        ("Log", LOG),
        ("Error", ERROR),
        ("TraceId", TRACE_ID),
        ("Dataset", DATASETS),
        ("Outcome", OUTCOMES),
        ("ErrorCategory", ERROR_CATEGORIES),
        ("HeartbeatStatus", HEARTBEAT_STATUSES),
        ("CheckResult", CHECK_RESULTS),
        ("LogLevel", LOG_LEVELS),
        ("PaymentAction", PAYMENT_ACTIONS),
        ("ATTEMPT_ACTIONS", ATTEMPT_ACTIONS),
        ("CHANNEL_ACTIONS", CHANNEL_ACTIONS),
    ];
    for (name, values) in lists {
        terms.set_item(name, values.to_vec())?;
    }
    terms.set_item("MIN_PAN", MIN_PAN)?;
    terms.set_item("MAX_ID", MAX_ID)?;
    terms.set_item("MAX_INT", MAX_INT)?;
    terms.set_item("MAX_INTERVAL_S", MAX_INTERVAL_S)?;
    Ok(terms)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bulk_lines, m)?)?;
    m.add_function(wrap_pyfunction!(contract_terms, m)?)?;
    m.add_function(wrap_pyfunction!(sdk::payment_lines, m)?)?;
    Ok(())
}
