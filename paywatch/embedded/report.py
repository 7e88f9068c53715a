"""The HTML incident report: one self-contained file to paste into a post-mortem.

Timelines of payments per channel, stuck (paid-but-pending) orders, duplicate charges,
channel health, heartbeats and compensating queries, each marked with the alerts that
fired and resolved and with the injected incidents' windows when a ground truth is
known. Plots are PNGs embedded as data URIs: the file opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from paywatch.embedded.sqlite_store import SqliteStore
from paywatch.pan import mask_text
from paywatch.store import get

LEVELS = {"healthy": 0, "degraded": 1, "down": 2}


@dataclass
class CaughtIncident:
    """One injected incident and how paywatch did on it (from replay scoring)."""

    id: str
    scenario: str
    start: datetime
    end: datetime
    caught: bool
    delay_s: float | None
    detail: str = ""


@dataclass
class ReportInput:
    title: str
    store: SqliteStore
    incidents: Sequence[CaughtIncident] = ()
    notes: dict[str, str] = field(default_factory=dict)


def _frame(docs: list[dict[str, Any]], **columns: str) -> pd.DataFrame:
    rows = [{"ts": d["@timestamp"], **{name: get(d, path) for name, path in columns.items()}} for d in docs]
    frame = pd.DataFrame(rows, columns=["ts", *columns])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


class _Marks:
    """Alerts and injected incidents, drawn the same way on every timeline."""

    def __init__(self, alerts: pd.DataFrame, incidents: Sequence[CaughtIncident], span: tuple[Any, Any]) -> None:
        self.alerts = alerts
        self.incidents = incidents
        self.span = span  # every timeline shows the same window, so they read as one story

    def draw(self, ax: plt.Axes) -> None:
        for inc in self.incidents:
            ax.axvspan(inc.start, inc.end, color="0.85", zorder=0)
        for row in self.alerts.itertuples():
            colour, style = ("tab:red", "--") if row.status == "firing" else ("tab:green", ":")
            ax.axvline(row.ts.to_pydatetime(), color=colour, linestyle=style, linewidth=0.9, alpha=0.7)
        if self.span[0] is not None:
            ax.set_xlim(*self.span)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(alpha=0.3)


def _x(times: pd.Series | pd.DatetimeIndex) -> Any:
    """UTC instants as naive datetime64, which matplotlib plots natively on a date axis."""
    if isinstance(times, pd.Series):
        return times.dt.tz_convert(None).to_numpy()
    return times.tz_convert(None).to_numpy()


def _lines(ax: plt.Axes, frame: pd.DataFrame, steps: bool = False) -> None:
    """One line per column, plotted with matplotlib's own dates so the markers share the axis."""
    for column in frame.columns:
        ax.plot(
            _x(frame.index),
            frame[column],
            drawstyle="steps-post" if steps else "default",
            linewidth=1.2,
            label=str(column),
        )
    ax.legend(fontsize=8, ncol=5, loc="upper left")


def _figure(title: str) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(11, 3.2))
    ax.set_title(title, loc="left", fontsize=11)
    return fig, ax


def _payments(payments: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Payment attempts per minute, by channel")
    attempts = payments[payments.action == "payment_requested"]
    if not attempts.empty:
        per_minute = attempts.groupby([pd.Grouper(key="ts", freq="1min"), "channel"]).size().unstack(fill_value=0)
        _lines(ax, per_minute)
    marks.draw(ax)
    return _png(fig)


def _stuck_orders(findings: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Paid-but-pending orders open (the channel says paid, the business still shows pending)")
    stuck = findings[findings.kind == "paid_but_pending"].sort_values("ts")
    if not stuck.empty:
        stuck = stuck.assign(delta=stuck.state.map({"open": 1, "resolved": -1}).fillna(0))
        for channel, rows in stuck.groupby("channel"):
            ax.step(_x(rows.ts), rows.delta.cumsum(), where="post", label=str(channel))
        ax.legend(fontsize=8, loc="upper left")
    marks.draw(ax)
    return _png(fig)


def _duplicates(findings: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Orders charged more than once (new duplicate-charge findings per minute)")
    dup = findings[(findings.kind == "duplicate_charge") & (findings.state == "open")]
    if not dup.empty:
        per_minute = dup.groupby([pd.Grouper(key="ts", freq="1min"), "channel"]).size().unstack(fill_value=0)
        _lines(ax, per_minute, steps=True)
    marks.draw(ax)
    return _png(fig)


def _channel_health(findings: pd.DataFrame, marks: _Marks, end: pd.Timestamp | None) -> str:
    fig, ax = _figure("Channel health (0 healthy, 1 degraded, 2 down)")
    health = findings[findings.kind == "channel_health"].sort_values("ts")
    for offset, (channel, rows) in enumerate(health.groupby("channel")):
        levels = rows.level.map(LEVELS).fillna(0)
        xs, ys = list(_x(rows.ts)), list(levels)
        if end is not None:
            xs.append(end.tz_convert(None).to_datetime64())
            ys.append(ys[-1])
        ax.step(xs, [y + offset * 0.04 for y in ys], where="post", label=str(channel))
    if not health.empty:
        ax.legend(fontsize=8, loc="upper left")
    ax.set_yticks([0, 1, 2], ["healthy", "degraded", "down"])
    marks.draw(ax)
    return _png(fig)


def _heartbeats(beats: pd.DataFrame, findings: pd.DataFrame, marks: _Marks) -> str:
    instances = sorted(beats.instance.dropna().unique()) if not beats.empty else []
    fig, ax = plt.subplots(figsize=(11, max(2.5, 0.28 * len(instances) + 1)))
    ax.set_title("Heartbeats per service instance (gaps are silence; ✕ = missing-heartbeat finding)", loc="left")
    ypos = {name: i for i, name in enumerate(instances)}
    if instances:
        ax.scatter(_x(beats.ts), beats.instance.map(ypos), s=4, color="tab:blue")
        missing = findings[findings.kind.isin(["heartbeat_missing", "service_down"]) & (findings.state == "open")]
        for row in missing.itertuples():
            for name, y in ypos.items():
                if row.instance == name or (row.kind == "service_down" and name.startswith(f"{row.service}/")):
                    ax.scatter([row.ts], [y], marker="x", color="tab:red", s=40)
        ax.set_yticks(list(ypos.values()), list(ypos))
    marks.draw(ax)
    return _png(fig)


def _queries(actions: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Compensating queries per minute, by mapped outcome")
    queries = actions[actions.action == "query"]
    if not queries.empty:
        per_minute = queries.groupby([pd.Grouper(key="ts", freq="1min"), "outcome"]).size().unstack(fill_value=0)
        _lines(ax, per_minute, steps=True)
    marks.draw(ax)
    return _png(fig)


def _text(value: Any) -> str:
    """Report text, HTML-escaped. Stored data was masked on the way in; masked again here because
    a report is handed around, and summaries reach it from every stage (the tables name no ids)."""
    return html.escape(mask_text("" if value is None else str(value)))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(report: ReportInput, out: Path) -> Path:
    store = report.store
    payments = _frame(
        store.documents("paywatch.payment"), action="event.action", channel="payment.channel", outcome="event.outcome"
    )
    findings = _frame(
        store.documents("paywatch.finding"),
        kind="finding.kind",
        state="finding.state",
        level="finding.level",
        channel="payment.channel",
        service="service.name",
        instance="service.instance.id",
        summary="finding.summary",
    )
    beats = _frame(store.documents("paywatch.heartbeat"), service="service.name", instance="service.instance.id")
    if not beats.empty:
        beats["instance"] = beats.service + "/" + beats.instance
    findings["instance"] = findings.service.fillna("") + "/" + findings.instance.fillna("")
    alert_docs = store.documents("paywatch.alert")
    alerts = _frame(
        alert_docs,
        status="alert.status",
        name="alert.labels.alertname",
        summary="alert.annotations.summary",
        fingerprint="alert.fingerprint",
    )
    # Pages only: `pending` alerts are recorded and never sent to anyone, and an alert that
    # never fired has no resolve worth marking; both would drown the pages.
    fired = set(alerts.fingerprint[alerts.status == "firing"])
    alerts = alerts[alerts.fingerprint.isin(fired) & alerts.status.isin(["firing", "resolved"])].sort_values("ts")
    actions = _frame(
        store.documents("paywatch.action"),
        action="event.action",
        outcome="event.outcome",
        order="payment.order_id",
        channel="payment.channel",
    )
    end = payments.ts.max() if not payments.empty else None
    start = payments.ts.min() if not payments.empty else None
    span = (
        (None, None)
        if start is None
        else (start.tz_convert(None).to_datetime64(), end.tz_convert(None).to_datetime64())
    )
    marks = _Marks(alerts, report.incidents, span)
    plots = [
        ("Payments", _payments(payments, marks)),
        ("Stuck orders", _stuck_orders(findings, marks)),
        ("Duplicate charges", _duplicates(findings, marks)),
        ("Channel health", _channel_health(findings, marks, end)),
        ("Heartbeats", _heartbeats(beats, findings, marks)),
        ("Compensating queries", _queries(actions, marks)),
    ]
    incident_rows = [
        (
            i.id,
            i.scenario,
            i.start.strftime("%H:%M:%S"),
            "yes" if i.caught else "MISSED",
            "—" if i.delay_s is None else f"{i.delay_s:.1f} s",
            i.detail,
        )
        for i in report.incidents
    ]
    alert_rows = [(r.ts.strftime("%H:%M:%S"), r.name, r.status, r.summary) for r in alerts.itertuples()]
    repairs = actions[actions.action.isin(["repair", "refund_candidate"])]
    repair_rows = [
        (action, channel, len(rows), rows.ts.min().strftime("%H:%M:%S"), rows.ts.max().strftime("%H:%M:%S"))
        for (action, channel), rows in repairs.groupby(["action", "channel"])
    ]
    notes = "".join(f"<li><b>{_text(k)}</b>: {_text(v)}</li>" for k, v in report.notes.items())
    figures = "".join(
        f'<figure><img class="plot" alt="{html.escape(t)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, png in plots
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1.5em 0; }} figcaption {{ color: #666; font-size: 13px; }}
img.plot {{ max-width: 100%; }}
.legend {{ color: #555; font-size: 13px; }}
</style></head>
<body data-plots="pending">
<h1>{html.escape(report.title)}</h1>
<ul>{notes}</ul>
<p class="legend">Grey bands: injected incidents (ground truth). Red dashed lines: alerts firing;
green dotted lines: alerts resolved. Times are event time, UTC.</p>
<h2>Incidents</h2>{_table(["incident", "scenario", "started", "caught", "detection delay", "how"], incident_rows)}
<h2>Pages</h2>{_table(["time", "alert", "status", "summary"], alert_rows)}
<h2>Timelines</h2>{figures}
<h2>Repairs and refund candidates</h2>
<p class="legend">Repairs tell the order system to mark a confirmed-paid order paid; refund candidates are
re-confirmed duplicate charges (nothing is refunded automatically). Every one is in the audit trail:
<code>paywatch orders show ORDER_ID</code>.</p>
{_table(["action", "channel", "orders", "first", "last"], repair_rows)}
<script>
// Lets a headless browser check that every plot decoded and rendered.
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img.plot")];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.plots = ok === imgs.length ? `ok:${{ok}}` : `broken:${{imgs.length - ok}}`;
}});
</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    return out
