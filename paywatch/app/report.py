"""The HTML incident report: one self-contained file to paste into a post-mortem.

Timelines of payments per channel, stuck (paid-but-pending) orders, duplicate charges,
channel health, each degraded channel's failure rate against its threshold, heartbeats and
compensating queries. Each plot has labelled axes with units, one labelled band per injected
incident it concerns (when a ground truth is known) and a labelled marker for every page of
the alerts it concerns, and nothing else: a plot about duplicates does not carry the heartbeat
pages. Plots are inline SVG with real text, so the file opens anywhere, offline, and a test
can read every label.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from paywatch import private
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.pan import mask_text
from paywatch.store import get

LEVELS = {"healthy": 0, "degraded": 1, "down": 2}
BAND_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
# Which finding kinds each plot is about: its incident bands and page markers are those of
# incidents expecting, and alerts raised from, these kinds.
PLOT_KINDS: dict[str, frozenset[str]] = {
    "payments": frozenset({"channel_health", "error_code_spike", "paid_but_pending_incident"}),
    "stuck": frozenset({"paid_but_pending", "paid_but_pending_incident"}),
    "duplicates": frozenset({"duplicate_charge", "duplicate_charge_incident"}),
    "health": frozenset({"channel_health", "error_code_spike"}),
    "failure_rate": frozenset({"channel_health"}),
    "heartbeats": frozenset({"service_down", "heartbeat_missing", "service_flapping", "paywatch_stalled"}),
    "queries": frozenset({"compensation_gave_up", "query_unavailable", "paid_but_pending_incident"}),
}
# Incidents a plot shows beyond those expecting its kinds: customers who see "unpaid" during a
# callback outage pay again, so the outage is where duplicate charges come from.
CAUSES: dict[str, frozenset[str]] = {"duplicates": frozenset({"paid_but_pending_incident"})}
# Attempt results (the channel said whether the money moved) and whose failure it was.
RESULT_ACTIONS = ("payment_requested", "channel_callback", "channel_query_result")
CUSTOMER_CATEGORIES = ("user", "limit")

plt.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, selectable, testable


@cache
def alert_kinds() -> dict[str, frozenset[str]]:
    """Alert name -> the finding kinds its rules match (the shipped rules, as the demo runs)."""
    from paywatch.alerts.rules import load_rules

    kinds: dict[str, set[str]] = {}
    for rule in load_rules(None).rules:
        kinds.setdefault(rule.alertname, set()).add(rule.kind)
    return {name: frozenset(k) for name, k in kinds.items()}


@dataclass
class CaughtIncident:
    """One injected incident and how paywatch did on it (from replay scoring)."""

    id: str
    scenario: str
    start: datetime
    end: datetime
    caught: bool
    delay_s: float | None  # first finding minus detect_from (the scoring's delay)
    detail: str = ""
    detect_from: datetime | None = None  # when the events alone first made it detectable
    kinds: tuple[str, ...] = ()  # finding kinds expected of it
    subjects: tuple[str, ...] = ()  # channels or services it hit

    @property
    def label(self) -> str:
        on = f" on {', '.join(self.subjects)}" if self.subjects else ""
        return f"{self.id}: {self.scenario}{on}"


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


def _svg(fig: plt.Figure, key: str) -> str:
    """The figure as inline SVG; ids are salted per plot so several SVGs share one page."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"paywatch-{key}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _utc(at: Any) -> Any:
    """A UTC instant as naive datetime64, which matplotlib plots natively on a date axis."""
    return pd.Timestamp(at).tz_convert(None).to_datetime64()


class _Marks:
    """Injected incidents and pages, drawn only on the plots they concern."""

    def __init__(self, alerts: pd.DataFrame, incidents: Sequence[CaughtIncident], span: tuple[Any, Any]) -> None:
        self.alerts = alerts
        self.incidents = list(incidents)
        self.colours = {inc.id: BAND_COLOURS[i % len(BAND_COLOURS)] for i, inc in enumerate(self.incidents)}
        self.span = span  # every timeline shows the same window, so they read as one story

    def draw(self, ax: plt.Axes, plot: str, subject: str | None = None, ylabel: str = "") -> None:
        """Bands of this plot's incidents (each in its own labelled lane at the top), labelled
        page markers of this plot's alerts, UTC date axis, units, and one legend for all."""
        kinds = PLOT_KINDS[plot] | CAUSES.get(plot, frozenset())
        handles = ax.get_legend_handles_labels()[0]
        concerned = [
            inc for inc in self.incidents if set(inc.kinds) & kinds and (subject is None or subject in inc.subjects)
        ]
        lane = 0.06
        for i, inc in enumerate(concerned):
            colour = self.colours[inc.id]
            band = ax.axvspan(_utc(inc.start), _utc(inc.end), color=colour, alpha=0.12, zorder=0)
            band.set_gid(f"band-{inc.id}")
            top = 1 - i * lane
            ax.axvspan(
                _utc(inc.start), _utc(inc.end), ymin=top - lane * 0.8, ymax=top, color=colour, alpha=0.8, zorder=1
            )
            ax.text(
                _utc(inc.start),
                top - lane * 0.45,
                f" {inc.id}",
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="center",
                color="white",
                fontweight="bold",
                zorder=2,
            )
            handles.append(Patch(facecolor=colour, alpha=0.5, label=f"incident {inc.label}"))
        previous = None
        for number, row in enumerate(self._pages(plot, subject).itertuples()):
            # a label starts low, or halfway up when the previous marker is too close to read both
            close = previous is not None and (row.ts - previous[0]).total_seconds() < 120 and previous[1] < 0.3
            height, previous = (0.5 if close else 0.02), (row.ts, 0.5 if close else 0.02)
            firing = row.status == "firing"
            colour, style = ("tab:red", "--") if firing else ("tab:green", ":")
            line = ax.axvline(_utc(row.ts), color=colour, linestyle=style, linewidth=1.1, zorder=3)
            line.set_gid(f"page-{row.name}-{row.status}-{number}")
            what = "paged" if firing else "resolved"
            ax.text(
                _utc(row.ts),
                height,
                f" {row.name} {what} {row.ts:%H:%M:%S}",
                rotation=90,
                fontsize=7,
                color=colour,
                transform=ax.get_xaxis_transform(),
                va="bottom",
                ha="right",
                zorder=3,
            )
        if self._pages(plot, subject).shape[0]:
            handles += [
                plt.Line2D([], [], color="tab:red", linestyle="--", label="page sent (alert firing)"),
                plt.Line2D([], [], color="tab:green", linestyle=":", label="alert resolved"),
            ]
        if handles:
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        if self.span[0] is not None:
            ax.set_xlim(*self.span)
            ax.set_xlabel(f"time (UTC, {pd.Timestamp(self.span[0]):%Y-%m-%d}), event time")
        else:
            ax.set_xlabel("time (UTC), event time")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(alpha=0.3)

    def _pages(self, plot: str, subject: str | None) -> pd.DataFrame:
        kinds = PLOT_KINDS[plot]
        names = {name for name, k in alert_kinds().items() if k & kinds}
        pages = self.alerts[self.alerts.name.isin(names)]
        if subject is not None:
            pages = pages[(pages.channel == subject) | (pages.service == subject)]
        return pages


def _lines(ax: plt.Axes, frame: pd.DataFrame, steps: bool = False) -> None:
    """One line per column, plotted with matplotlib's own dates so the markers share the axis."""
    for column in frame.columns:
        ax.plot(
            frame.index.tz_convert(None).to_numpy(),
            frame[column],
            drawstyle="steps-post" if steps else "default",
            linewidth=1.2,
            label=str(column),
        )


def _figure(title: str, height: float = 3.4) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(11, height))
    ax.set_title(title, loc="left", fontsize=11)
    return fig, ax


def _per_minute(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    return frame.groupby([pd.Grouper(key="ts", freq="1min"), by]).size().unstack(fill_value=0)


def _payments(payments: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Payment attempts per minute, by channel")
    attempts = payments[payments.action == "payment_requested"]
    if not attempts.empty:
        _lines(ax, _per_minute(attempts, "channel"))
    marks.draw(ax, "payments", ylabel="attempts per minute")
    return _svg(fig, "payments")


def _stuck_orders(findings: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Paid-but-pending orders open (the channel says paid, the business still shows pending)")
    stuck = findings[findings.kind == "paid_but_pending"].sort_values("ts")
    if not stuck.empty:
        stuck = stuck.assign(delta=stuck.state.map({"open": 1, "resolved": -1}).fillna(0))
        for channel, rows in stuck.groupby("channel"):
            ax.step(rows.ts.dt.tz_convert(None).to_numpy(), rows.delta.cumsum(), where="post", label=str(channel))
    marks.draw(ax, "stuck", ylabel="orders open")
    return _svg(fig, "stuck")


def _duplicates(findings: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Orders charged more than once (new duplicate-charge findings per minute)")
    dup = findings[(findings.kind == "duplicate_charge") & (findings.state == "open")]
    if not dup.empty:
        _lines(ax, _per_minute(dup, "channel"), steps=True)
    marks.draw(ax, "duplicates", ylabel="orders per minute")
    return _svg(fig, "duplicates")


def _channel_health(findings: pd.DataFrame, marks: _Marks, end: pd.Timestamp | None) -> str:
    fig, ax = _figure("Channel health as the detectors judged it")
    health = findings[findings.kind == "channel_health"].sort_values("ts")
    for offset, (channel, rows) in enumerate(health.groupby("channel")):
        levels = rows.level.map(LEVELS).fillna(0)
        xs, ys = list(rows.ts.dt.tz_convert(None).to_numpy()), list(levels)
        if end is not None:
            xs.append(_utc(end))
            ys.append(ys[-1])
        ax.step(xs, [y + offset * 0.04 for y in ys], where="post", label=str(channel))
    ax.set_yticks([0, 1, 2], ["healthy", "degraded", "down"])
    marks.draw(ax, "health", ylabel="health level")
    return _svg(fig, "health")


def _failure_rate(payments: pd.DataFrame, findings: pd.DataFrame, channel: str, marks: _Marks) -> str:
    """The channel's own failures per minute (customer failures excluded) against the
    detector's threshold and baseline, with what the detector saw when it changed its mind."""
    fig, ax = _figure(f"{channel}: channel-side failure rate vs the detector's threshold")
    results = payments[
        (payments.channel == channel)
        & payments.action.isin(RESULT_ACTIONS)
        & payments.outcome.isin(["success", "failure"])
    ]
    if not results.empty:
        failed = (results.outcome == "failure") & ~results.category.isin(CUSTOMER_CATEGORIES)
        minute = results.assign(failed=failed).groupby(pd.Grouper(key="ts", freq="1min")).failed
        rate = (minute.sum() / minute.count()).dropna() * 100
        ax.plot(
            rate.index.tz_convert(None).to_numpy(),
            rate,
            linewidth=1.2,
            color="tab:blue",
            label="failure rate per minute (customer failures excluded)",
        )
    judged = findings[(findings.kind == "channel_health") & (findings.channel == channel)].sort_values("ts")
    if not judged.empty:
        xs = judged.ts.dt.tz_convert(None).to_numpy()
        lines = (
            ("threshold", "degraded above (detector's threshold)", {"color": "tab:red"}),
            ("baseline", "baseline (the channel's usual rate)", {"color": "0.4", "linestyle": "-."}),
        )
        for column, label, style in lines:
            ax.step(xs, judged[column] * 100, where="post", linewidth=1, label=label, **style)
        ax.scatter(xs, judged.rate * 100, color="black", zorder=4, s=18, label="rate when the detector changed level")
        for row in judged.itertuples():
            ax.annotate(
                str(row.level), (_utc(row.ts), row.rate * 100), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    marks.draw(ax, "failure_rate", subject=channel, ylabel="failed attempts (%)")
    return _svg(fig, f"failure-rate-{channel}")


def _heartbeats(beats: pd.DataFrame, findings: pd.DataFrame, marks: _Marks) -> str:
    instances = sorted(beats.instance.dropna().unique()) if not beats.empty else []
    fig, ax = _figure(
        "Heartbeats per service instance (gaps are silence; x = missing-heartbeat finding)",
        max(2.8, 0.28 * len(instances) + 1.4),
    )
    ypos = {name: i for i, name in enumerate(instances)}
    if instances:
        ax.scatter(
            beats.ts.dt.tz_convert(None).to_numpy(),
            beats.instance.map(ypos),
            s=4,
            color="tab:blue",
            label="heartbeat received",
        )
        missing = findings[findings.kind.isin(["heartbeat_missing", "service_down"]) & (findings.state == "open")]
        for row in missing.itertuples():
            for name, y in ypos.items():
                if row.instance == name or (row.kind == "service_down" and name.startswith(f"{row.service}/")):
                    ax.scatter([_utc(row.ts)], [y], marker="x", color="tab:red", s=40)
        ax.set_yticks(list(ypos.values()), list(ypos))
    marks.draw(ax, "heartbeats", ylabel="service/instance")
    return _svg(fig, "heartbeats")


def _queries(actions: pd.DataFrame, marks: _Marks) -> str:
    fig, ax = _figure("Compensating queries per minute, by mapped outcome")
    queries = actions[actions.action == "query"]
    if not queries.empty:
        _lines(ax, _per_minute(queries, "outcome"), steps=True)
    marks.draw(ax, "queries", ylabel="queries per minute")
    return _svg(fig, "queries")


def _text(value: Any) -> str:
    """Report text, HTML-escaped. Stored data was masked on the way in; masked again here because
    a report is handed around, and summaries reach it from every stage (the tables name no ids)."""
    return html.escape(mask_text("" if value is None else str(value)))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _after(at: Any, since: Any) -> str:
    if at is None or since is None or pd.isna(at):
        return "—"
    return f"{(pd.Timestamp(at) - pd.Timestamp(since)).total_seconds():.0f} s"


def _first_page(alerts: pd.DataFrame, inc: CaughtIncident) -> pd.Timestamp | None:
    """The first page (an alert firing) raised from a kind this incident expects, naming one
    of its channels or services (or none, as duplicate charges are per order), from its start."""
    names = {name for name, kinds in alert_kinds().items() if kinds & set(inc.kinds)}
    pages = alerts[
        (alerts.status == "firing")
        & alerts.name.isin(names)
        & (alerts.ts >= pd.Timestamp(inc.start))
        & (
            alerts.channel.isin(inc.subjects)
            | alerts.service.isin(inc.subjects)
            | (alerts.channel.isna() & alerts.service.isna())
        )
    ]
    return None if pages.empty else pages.ts.min()


def render(report: ReportInput, out: Path) -> Path:
    store = report.store
    payments = _frame(
        store.documents("paywatch.payment"),
        action="event.action",
        channel="payment.channel",
        outcome="event.outcome",
        category="payment.error_category",
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
        rate="finding.evidence.figures.failure_rate",
        threshold="finding.evidence.figures.threshold",
        baseline="finding.evidence.figures.baseline",
    )
    beats = _frame(store.documents("paywatch.heartbeat"), service="service.name", instance="service.instance.id")
    if not beats.empty:
        beats["instance"] = beats.service + "/" + beats.instance
    findings["instance"] = findings.service.fillna("") + "/" + findings.instance.fillna("")
    alerts = _frame(
        store.documents("paywatch.alert"),
        status="alert.status",
        name="alert.labels.alertname",
        summary="alert.annotations.summary",
        fingerprint="alert.fingerprint",
        channel="alert.labels.channel",
        service="alert.labels.service",
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
    span = (None, None) if start is None else (_utc(start), _utc(end))
    marks = _Marks(alerts, report.incidents, span)
    degraded = sorted(
        findings.channel[(findings.kind == "channel_health") & findings.level.isin(["degraded", "down"])]
        .dropna()
        .unique()
    )
    plots = [
        ("Payments", _payments(payments, marks)),
        ("Stuck orders", _stuck_orders(findings, marks)),
        ("Duplicate charges", _duplicates(findings, marks)),
        ("Channel health", _channel_health(findings, marks, end)),
        *[(f"Failure rate of {c}", _failure_rate(payments, findings, c, marks)) for c in degraded],
        ("Heartbeats", _heartbeats(beats, findings, marks)),
        ("Compensating queries", _queries(actions, marks)),
    ]
    incident_rows = []
    for i in report.incidents:
        first_finding = None
        if i.detect_from is not None and i.delay_s is not None:
            first_finding = pd.Timestamp(i.detect_from) + pd.Timedelta(seconds=i.delay_s)
        incident_rows.append(
            (
                i.id,
                i.scenario,
                ", ".join(i.subjects),
                f"{i.start:%H:%M:%S}",
                _after(i.detect_from, i.start),
                "—" if i.delay_s is None else f"{i.delay_s:.1f} s",
                _after(first_finding, i.start),
                _after(_first_page(alerts, i), i.start),
                "yes" if i.caught else "MISSED",
                i.detail,
            )
        )
    alert_rows = [
        (f"{r.ts:%H:%M:%S}", r.name, "paged" if r.status == "firing" else r.status, r.summary)
        for r in alerts.itertuples()
    ]
    repairs = actions[actions.action.isin(["repair", "refund_candidate"])]
    repair_rows = [
        (action, channel, len(rows), f"{rows.ts.min():%H:%M:%S}", f"{rows.ts.max():%H:%M:%S}")
        for (action, channel), rows in repairs.groupby(["action", "channel"])
    ]
    notes = "".join(f"<li><b>{_text(k)}</b>: {_text(v)}</li>" for k, v in report.notes.items())
    figures = "".join(
        f'<figure class="plot" data-title="{html.escape(t)}">{svg}<figcaption>{html.escape(t)}</figcaption></figure>'
        for t, svg in plots
    )
    day = f"{start:%Y-%m-%d}" if start is not None else ""
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1250px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1.5em 0; }} figcaption {{ color: #666; font-size: 13px; }}
figure.plot svg {{ max-width: 100%; height: auto; }}
.legend {{ color: #555; font-size: 13px; }}
</style></head>
<body data-plots="pending">
<h1>{html.escape(report.title)}</h1>
<ul>{notes}</ul>
<p class="legend">All times are event time in UTC ({day}). On every plot, a coloured band (with
its id in a lane at the top, and in the legend) is an injected incident that plot is about; a
red dashed line is a page sent to on-call and a green dotted line its resolution, labelled with
the alert's name, drawn only on the plots of what that alert is about.</p>
<h2>Incidents</h2>
<p class="legend">How fast, measured three ways from the incident's <b>start</b> (when it was
injected): <b>detectable after</b> is when the events alone first made it visible (e.g. the
first stuck order passing the detector's grace period for its callback);
<b>found after detectable</b> is the detection delay proper, from that moment to paywatch's first matching
finding; <b>first finding after start</b> and <b>first page after start</b> are what the
customers lived through: from the start to the first finding, and to the first page on-call
received (an alert raised from a finding kind the incident expects, naming its channel or
service).</p>
{
        _table(
            [
                "incident",
                "scenario",
                "on",
                "started (UTC)",
                "detectable after start",
                "found after detectable",
                "first finding after start",
                "first page after start",
                "caught",
                "expected findings",
            ],
            incident_rows,
        )
    }
<h2>Pages</h2>{_table(["time (UTC)", "alert", "status", "summary"], alert_rows)}
<h2>Timelines</h2>{figures}
<h2>Repairs and refund candidates</h2>
<p class="legend">Repairs tell the order system to mark a confirmed-paid order paid; refund candidates are
re-confirmed duplicate charges (nothing is refunded automatically). Every one is in the audit trail:
<code>paywatch orders show ORDER_ID</code>.</p>
{_table(["action", "channel", "orders", "first (UTC)", "last (UTC)"], repair_rows)}
<script>
// Lets a headless browser check that every plot rendered: each SVG has a drawn size.
window.addEventListener("load", () => {{
  const plots = [...document.querySelectorAll("figure.plot svg")];
  const ok = plots.filter(p => p.getBoundingClientRect().width > 0 && p.getBBox().width > 0).length;
  document.body.dataset.plots = ok === plots.length ? `ok:${{ok}}` : `broken:${{plots.length - ok}}`;
}});
</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", opener=private.opener) as f:
        f.write(doc)
    return out
