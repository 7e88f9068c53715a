"""The HTML incident report renders its plots in a real (headless) browser, and its figures
stand alone: a checklist read from the DOM Chromium rendered (axis labels with units, a legend
entry per incident band, each page marker labelled and drawn only on the plots it concerns)."""

import html
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.app.report import CaughtIncident, ReportInput, render
from paywatch.clock import ManualClock

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def doc(i: int, dataset: str, seconds: float, **sections) -> dict:
    return {"@timestamp": ts(seconds), "event": {"id": f"{dataset}-{i}", "dataset": dataset}, **sections}


def incident_store(path) -> SqliteStore:
    store = SqliteStore(path, clock=ManualClock(T0))
    docs = []
    for i in range(600):
        channel = ("alipay", "wechatpay")[i % 2]
        docs.append(
            {
                **doc(i, "paywatch.payment", i * 2),
                "event": {"id": f"p{i}", "dataset": "paywatch.payment", "action": "payment_requested"},
                "payment": {"order_id": f"o{i}", "channel": channel},
            }
        )
        docs.append(doc(i, "paywatch.heartbeat", i * 2, service={"name": "gateway", "instance": {"id": "gw-1"}}))
    for i, (state, sec) in enumerate([("open", 300), ("open", 320), ("resolved", 700), ("resolved", 720)]):
        finding = {"kind": "paid_but_pending", "state": state, "fingerprint": f"pbp:{i % 2}"}
        docs.append(doc(i, "paywatch.finding", sec, finding=finding, payment={"channel": "alipay", "order_id": "o1"}))
    for i, (level, sec, rate) in enumerate([("degraded", 400, 0.4), ("healthy", 800, 0.01)]):
        figures = {"failure_rate": rate, "threshold": 0.12, "baseline": 0.02}
        finding = {"kind": "channel_health", "state": "open", "level": level, "fingerprint": "ch:alipay"}
        finding["evidence"] = {"figures": figures}
        docs.append(doc(10 + i, "paywatch.finding", sec, finding=finding, payment={"channel": "alipay"}))
    for i, (status, sec) in enumerate([("pending", 300), ("firing", 310), ("resolved", 730)]):
        labels = {"alertname": "PaidButPending", "channel": "alipay"}
        alert = {"fingerprint": "a1", "status": status, "labels": labels}
        docs.append(doc(i, "paywatch.alert", sec, alert=alert))
    for i, (status, sec) in enumerate([("firing", 410), ("resolved", 810)]):
        labels = {"alertname": "ChannelDegraded", "channel": "alipay"}
        alert = {"fingerprint": "a3", "status": status, "labels": labels}
        docs.append(doc(20 + i, "paywatch.alert", sec, alert=alert))
    for i, status in enumerate(["pending", "resolved"]):  # recorded, never paged: not in the report's pages
        alert = {"fingerprint": "a2", "status": status, "labels": {"alertname": "QueryUnavailable"}}
        docs.append(doc(10 + i, "paywatch.alert", 400 + i, alert=alert))
    for i in range(5):
        docs.append(
            {
                **doc(i, "paywatch.action", 330 + i),
                "event": {
                    "id": f"q{i}",
                    "dataset": "paywatch.action",
                    "action": "query",
                    "outcome": "success",
                },
                "payment": {"order_id": f"o{i}", "channel": "alipay"},
            }
        )
    store.write(docs)
    return store


def assert_renders_in_chromium(report, tmp_path) -> str:
    """Every plot of `report` renders in headless Chromium (a screenshot is saved under
    tmp_path); returns the rendered DOM."""
    plots = report.read_text().count('<figure class="plot"')
    assert plots > 0
    assert CHROMIUM, "Debian's chromium is required (.ci/run installs it)"
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f'data-plots="ok:{plots}"' in dom, dom[:500]
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
    return dom


def figures(dom: str) -> dict[str, set[str]]:
    """Caption -> every text and element id drawn in that figure's SVG."""
    out = {}
    for body in dom.split('<figure class="plot"')[1:]:
        caption = html.unescape(re.search(r"<figcaption>(.*?)</figcaption>", body).group(1))
        texts = {html.unescape(t).strip() for t in re.findall(r"<text[^>]*>([^<]+)</text>", body)}
        ids = set(re.findall(r'<g id="([^"]+)"', body))
        out[caption] = texts | ids
    return out


def test_report_renders_in_chromium_and_its_figures_stand_alone(tmp_path):
    """Every plot renders in headless Chromium; the checklist is read from what it rendered."""
    store = incident_store(tmp_path / "pw.sqlite")
    start, end = T0 + timedelta(seconds=240), T0 + timedelta(seconds=600)
    truth = [
        CaughtIncident(
            "inc-1",
            "callback_outage",
            start,
            end,
            True,
            12.5,
            "",
            start + timedelta(seconds=60),
            ("paid_but_pending_incident",),
            ("alipay",),
        ),
        CaughtIncident(
            "inc-2",
            "channel_down",
            T0 + timedelta(seconds=380),
            T0 + timedelta(seconds=780),
            True,
            3.0,
            "",
            T0 + timedelta(seconds=390),
            ("channel_health",),
            ("alipay",),
        ),
    ]
    out = render(ReportInput("Demo incident report", store, truth, {"seed": "7"}), tmp_path / "report.html")
    page = out.read_text()
    assert "12.5 s" in page and "callback_outage" in page
    pages = page.split("<h2>Pages</h2>")[1].split("</table>")[0]
    assert pages.count("PaidButPending") == 2 and "pending" not in pages.replace("PaidButPending", "")
    assert "QueryUnavailable" not in pages
    assert not re.search(r'(src|href)="(?!#)', page), "one self-contained file: nothing fetched"
    drawn = figures(assert_renders_in_chromium(out, tmp_path))
    units = {
        "Payments": "attempts per minute",
        "Stuck orders": "orders open",
        "Duplicate charges": "orders per minute",
        "Channel health": "health level",
        "Failure rate of alipay": "failed attempts (%)",
        "Heartbeats": "service/instance",
        "Compensating queries": "queries per minute",
    }
    assert set(drawn) == set(units)  # six timelines and alipay's failure rate
    for caption, texts in drawn.items():
        assert "time (UTC, 2026-11-22), event time" in texts, caption  # x axis: what, zone, date
        assert units[caption] in texts, caption  # y axis: what and unit
    stuck = drawn["Stuck orders"]
    # One labelled band per incident it concerns, in the legend and in its lane.
    assert {"band-inc-1", "incident inc-1: callback_outage on alipay", "inc-1"} <= stuck
    assert "band-inc-2" not in stuck  # a channel outage is not about stuck orders
    # Page markers, labelled with their alert, only where they belong.
    assert {"PaidButPending paged 10:05:10", "PaidButPending resolved 10:12:10"} <= stuck
    assert not any(t.startswith("ChannelDegraded") for t in stuck)
    health = drawn["Channel health"]
    assert "ChannelDegraded paged 10:06:50" in health and "band-inc-2" in health
    assert not any(t.startswith("PaidButPending") for t in health)
    assert not any(t.startswith(("PaidButPending", "ChannelDegraded")) for t in drawn["Heartbeats"])
    rate = drawn["Failure rate of alipay"]
    assert {"degraded above (detector's threshold)", "baseline (the channel's usual rate)", "degraded"} <= rate
    assert "ChannelDegraded paged 10:06:50" in rate
    for term in ("detectable after", "found after detectable", "first page after start"):
        assert f"<b>{term}</b>" in page  # each delay is defined where it is shown
    incidents = page.split("<h2>Incidents</h2>")[1].split("</table>")[0]
    assert "<td>60 s</td>" in incidents  # detectable 60 s after the start
    assert "<td>70 s</td>" in incidents  # first page (10:05:10) 70 s after the start (10:04:00)
