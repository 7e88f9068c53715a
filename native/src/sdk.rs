//! The SDK's fast path: a common payment call (the keywords of `log.payment(...)` as the caller's
//! processor chain hands them over) → the encoded contract event, exactly the bytes the SDK's
//! Python fast path (`paywatch.collectors.sdk._python_payment_records`) writes for it.
//!
//! It takes only the plainest calls: contract keywords only; exact `str`, `int` and UTC
//! `datetime` values; printable ASCII text with nothing to escape; no digit run a card number
//! could hide in; the contract's terms and cross-field rules. Anything else is answered `None`
//! and the Python paths make it (or say why it is invalid), so this never judges a call invalid.
//! `tests/test_native_sdk.py` holds it to the Python fast path's bytes.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::{
    PyBytes, PyDateAccess, PyDateTime, PyDict, PyInt, PyList, PyString, PyTimeAccess,
    PyTzInfoAccess,
};

use crate::{
    no_card_run, one_of, printable, unescaped, ATTEMPT_ACTIONS, CHANNEL_ACTIONS, ERROR_CATEGORIES,
    MAX_ID, MAX_INT, MIN_PAN, OUTCOMES, PAYMENT, PAYMENT_ACTIONS,
};

/// The counter part of the event ids drawn here (the random part is the caller's `id_prefix`,
/// drawn apart from the Python side's, so the two never meet).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A call's other keywords, after the payment fields (`PAYMENT`) in one index space.
const META: &[&str] = &[
    "event",
    "timestamp",
    "outcome",
    "event_id",
    "trace_id",
    "span_id",
];
const K_EVENT: usize = PAYMENT.len();
const K_TIMESTAMP: usize = K_EVENT + 1;
const K_OUTCOME: usize = K_EVENT + 2;
const K_EVENT_ID: usize = K_EVENT + 3;
const K_TRACE_ID: usize = K_EVENT + 4;
const K_SPAN_ID: usize = K_EVENT + 5;
const KEYS: usize = K_EVENT + META.len();

const P_ORDER_ID: usize = crate::at(PAYMENT, "order_id");
const P_ATTEMPT_ID: usize = crate::at(PAYMENT, "attempt_id");
const P_CHANNEL: usize = crate::at(PAYMENT, "channel");
const P_AMOUNT_MINOR: usize = crate::at(PAYMENT, "amount_minor");
const P_LATENCY_MS: usize = crate::at(PAYMENT, "latency_ms");
const P_CURRENCY: usize = crate::at(PAYMENT, "currency");
const P_ERROR_CATEGORY: usize = crate::at(PAYMENT, "error_category");

fn key_index(name: &str) -> Option<usize> {
    PAYMENT
        .iter()
        .position(|k| *k == name)
        .or_else(|| META.iter().position(|k| *k == name).map(|k| K_EVENT + k))
}

/// Text msgspec writes as it is (printable ASCII, no `"` or `\`), holding no digit run a card
/// number could be.
fn plain(s: &str) -> bool {
    unescaped(s.as_bytes()) && no_card_run(s.as_bytes())
}

fn text<'a>(v: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if !v.is_exact_instance_of::<PyString>() {
        return None;
    }
    let s = v.downcast::<PyString>().ok()?.to_str().ok()?;
    plain(s).then_some(s)
}

fn id<'a>(v: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    text(v).filter(|s| !s.is_empty() && s.chars().count() <= MAX_ID)
}

/// A non-negative int within int64, shorter than a card number.
fn count(v: &Bound<'_, PyAny>) -> Option<u64> {
    if !v.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let n: u64 = v.extract().ok()?;
    (n <= MAX_INT && n < 10u64.pow(MIN_PAN as u32 - 1)).then_some(n)
}

/// A UTC datetime at whole milliseconds, as msgspec writes it (the SDK's events carry
/// milliseconds, as most loggers do).
fn timestamp(v: &Bound<'_, PyAny>, utc: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Option<()> {
    if !v.is_exact_instance_of::<PyDateTime>() {
        return None;
    }
    let dt = v.downcast::<PyDateTime>().ok()?;
    if !dt.get_tzinfo()?.is(utc) {
        return None;
    }
    let ms = dt.get_microsecond() / 1000;
    let parts = [
        (u32::from(dt.get_month()), 2),
        (u32::from(dt.get_day()), 2),
        (u32::from(dt.get_hour()), 2),
        (u32::from(dt.get_minute()), 2),
        (u32::from(dt.get_second()), 2),
    ];
    let year = u32::try_from(dt.get_year()).ok()?;
    digits(out, year, 4);
    for (k, (value, width)) in parts.into_iter().enumerate() {
        out.push(b"--T::"[k]);
        digits(out, value, width);
    }
    if ms != 0 {
        out.push(b'.');
        digits(out, ms, 3);
        out.extend_from_slice(b"000");
    }
    out.push(b'Z');
    Some(())
}

fn digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for at in (start..start + width).rev() {
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// One call → its encoded event in `out`, or None.
fn payment_line(
    call: &Bound<'_, PyAny>,
    service: &[u8],
    utc: &Bound<'_, PyAny>,
    id_prefix: &str,
    out: &mut Vec<u8>,
) -> Option<()> {
    if !call.is_exact_instance_of::<PyDict>() {
        return None;
    }
    let call = call.downcast::<PyDict>().ok()?;
    let mut values: [Option<Bound<'_, PyAny>>; KEYS] = Default::default();
    for (key, value) in call.iter() {
        if !key.is_exact_instance_of::<PyString>() {
            return None;
        }
        let k = key_index(key.downcast::<PyString>().ok()?.to_str().ok()?)?;
        if !value.is_none() {
            values[k] = Some(value);
        }
    }
    let action =
        text(values[K_EVENT].as_ref()?).filter(|a| one_of(a.as_bytes(), PAYMENT_ACTIONS))?;
    let given = |k: usize| values[k].is_some();
    if values[P_ORDER_ID].is_none()
        || (one_of(action.as_bytes(), CHANNEL_ACTIONS) && !given(P_CHANNEL))
        || (one_of(action.as_bytes(), ATTEMPT_ACTIONS) && !given(P_ATTEMPT_ID))
    {
        return None;
    }
    // None is UNSET's opposite for a trace or span id: the Python paths refuse it.
    for k in [K_TRACE_ID, K_SPAN_ID] {
        if call.contains(META[k - K_EVENT]).ok()? && values[k].is_none() {
            return None;
        }
    }
    out.clear();
    out.extend_from_slice(b"{\"@timestamp\":\"");
    timestamp(values[K_TIMESTAMP].as_ref()?, utc, out)?;
    out.extend_from_slice(b"\",\"event\":{\"id\":");
    match &values[K_EVENT_ID] {
        Some(v) => quoted(out, id(v)?),
        None => {
            // No 12-hex-digit counter makes a digit run with the prefix (checked per batch); a
            // 13th digit (2^48 ids later) could, so the Python paths draw those.
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            if n >= 1 << 48 {
                return None;
            }
            quoted(out, &format!("{id_prefix}{n:012x}"));
        }
    }
    out.extend_from_slice(b",\"dataset\":\"paywatch.payment\",\"action\":");
    quoted(out, action);
    if let Some(v) = &values[K_OUTCOME] {
        out.extend_from_slice(b",\"outcome\":");
        quoted(out, text(v).filter(|o| one_of(o.as_bytes(), OUTCOMES))?);
    }
    out.extend_from_slice(b"},\"service\":");
    out.extend_from_slice(service);
    out.extend_from_slice(b",\"payment\":{");
    let mut first = true;
    for (k, name) in PAYMENT.iter().enumerate() {
        let Some(v) = &values[k] else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        quoted(out, name);
        out.push(b':');
        match k {
            P_ORDER_ID | P_ATTEMPT_ID => quoted(out, id(v)?),
            P_AMOUNT_MINOR | P_LATENCY_MS => {
                out.extend_from_slice(count(v)?.to_string().as_bytes())
            }
            P_CURRENCY => quoted(
                out,
                text(v).filter(|s| s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase()))?,
            ),
            P_ERROR_CATEGORY => quoted(
                out,
                text(v).filter(|s| one_of(s.as_bytes(), ERROR_CATEGORIES))?,
            ),
            _ => quoted(out, text(v)?),
        }
    }
    out.push(b'}');
    for (k, name) in [(K_TRACE_ID, "trace"), (K_SPAN_ID, "span")] {
        if let Some(v) = &values[k] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":{\"id\":");
            quoted(out, id(v)?);
            out.push(b'}');
        }
    }
    out.push(b'}');
    Some(())
}

/// For each payment call: its encoded event when it is a plain common call and its event is at
/// most `max_bytes` long, else None. `service` is the emitter's encoded service section, `utc`
/// the `datetime.UTC` object, `id_prefix` the random part of the event ids drawn here.
#[pyfunction]
pub fn payment_lines<'py>(
    py: Python<'py>,
    calls: &Bound<'py, PyList>,
    service: &[u8],
    utc: &Bound<'py, PyAny>,
    id_prefix: &str,
    max_bytes: usize,
) -> PyResult<Bound<'py, PyList>> {
    let usable = printable(service)
        && no_card_run(service)
        // the ids drawn here: the prefix with the counter at its most digit-like, and short enough
        && plain(&format!("{id_prefix}000000000000"))
        && id_prefix.len() + 12 <= MAX_ID;
    crate::unwound(|| {
        let mut out: Vec<PyObject> = Vec::with_capacity(calls.len());
        let mut buf = Vec::with_capacity(512);
        for call in calls.iter() {
            let made = usable && payment_line(&call, service, utc, id_prefix, &mut buf).is_some();
            out.push(if made && buf.len() <= max_bytes {
                PyBytes::new(py, &buf).into_any().unbind()
            } else {
                py.None()
            });
        }
        PyList::new(py, out)
    })
}
