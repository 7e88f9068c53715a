"""One definition of every dashboard panel: what it asks Elasticsearch and what question it answers.

Grafana (`grafana.py`), Kibana (`kibana.py`) and the docs (`docs/dashboards.md`) are all
generated from these specs, so a panel's query is written once. Queries use Lucene syntax
because both Grafana's Elasticsearch data source and Kibana run it unchanged through
`query_string`, which is also what the tests run against real Elasticsearch.

Panels use only aggregations built into Elasticsearch's server (terms, date histogram,
filters, percentiles, max, cardinality, raw documents): no painless scripts and no x-pack
aggregations (rate, top_metrics, moving_fn), so every panel runs on any 8.x cluster,
including the bare one the tests use. Ratios are drawn by Grafana (percent stacking), and
"latest state" tables group raw documents with a Grafana transformation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PAYMENT, HEARTBEAT = "paywatch.payment", "paywatch.heartbeat"
FINDING, ALERT, ACTION = "paywatch.finding", "paywatch.alert", "paywatch.action"
ALL = "paywatch.*"  # every dataset at once

# Grafana template variables, and the document field each one filters. The environment is not
# a field: it is the data stream namespace, so it picks the data source (one per namespace).
VARIABLE_FIELDS: dict[str, str] = {"channel": "payment.channel", "merchant": "payment.merchant_id"}
# Attempt results: the actions where a channel said whether the money moved.
ATTEMPT_RESULTS = (
    "event.action:(payment_requested OR channel_callback OR channel_query_result) "
    "AND event.outcome:(success OR failure)"
)
CUSTOMER_FAILURE = "payment.error_category:(user OR limit)"
CHANNEL_FAILURE = "payment.error_category:(channel OR system)"


MetricType = Literal["count", "percentiles", "max", "cardinality", "raw_data"]


def variable_clause(name: str) -> str:
    """Keep documents whose field matches the variable, and those that do not carry the field:
    with "All" (`*`) nothing is filtered out, and a finding that names no merchant is never
    hidden by the merchant picker (it cannot be attributed, so it stays visible)."""
    field = VARIABLE_FIELDS[name]
    return f"NOT (_exists_:{field} AND NOT {field}:${name})"


@dataclass(frozen=True)
class Metric:
    type: MetricType
    field: str | None = None
    percents: tuple[str, ...] = ()
    size: int = 500  # raw_data: how many documents, newest first
    id: str = "1"


@dataclass(frozen=True)
class Bucket:
    type: Literal["terms", "date_histogram", "filters"]
    field: str | None = None
    size: int = 10
    interval: str = "auto"
    filters: tuple[tuple[str, str], ...] = ()  # (label, Lucene query)
    id: str = "10"


Viz = Literal["timeseries", "table", "bargauge", "barchart", "statetimeline"]


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    question: str
    viz: Viz
    dataset: str
    query: str
    metrics: tuple[Metric, ...]
    buckets: tuple[Bucket, ...] = ()
    variables: tuple[str, ...] = ()
    unit: str = "none"  # Grafana unit id: "none" for documents and states (dates get a date unit)
    width: int = 12
    # Raw-document panels: the columns shown; the first is the row's identity.
    columns: tuple[str, ...] = ()
    # Keep only the newest document per value of this field (Grafana groupBy transformation).
    latest_by: str | None = None
    # State timelines over raw documents: one row per value of this field (partitionByValues).
    partition_by: str | None = None
    repeat: str | None = None  # one panel per value of this template variable
    percent: bool = False  # stack series to 100%: shares instead of counts
    # The panel's rows name an order (or service): link each to everything stored about it.
    row_field: str | None = None

    def lucene(self, with_variables: bool = True) -> str:
        """The full query string: dataset, the panel's own clause, and the template-variable filters."""
        dataset = self.dataset if "*" in self.dataset else f'"{self.dataset}"'  # quoted unless a wildcard
        clauses = [f"event.dataset:{dataset}", f"({self.query})" if self.query else ""]
        if with_variables:
            clauses += [variable_clause(v) for v in self.variables]
        return " AND ".join(c for c in clauses if c)


@dataclass(frozen=True)
class PromPanel:
    """A panel on paywatch's own Prometheus metrics (what Elasticsearch cannot know)."""

    key: str
    title: str
    question: str
    expr: str
    legend: str
    unit: str = "short"
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel | PromPanel, ...]

    @property
    def es_panels(self) -> tuple[Panel, ...]:
        return tuple(p for p in self.panels if isinstance(p, Panel))


PAYMENT_VARS = ("channel", "merchant")
CHANNEL_VARS = ("channel",)
OVER_TIME = Bucket("date_histogram", "@timestamp", id="20")
PER_CHANNEL = Bucket("terms", "payment.channel", size=20, id="10")
COUNT = (Metric("count"),)
LEVEL_COLORS = {"healthy": "green", "up": "green", "degraded": "orange", "down": "red", "stopping": "red"}

PAYMENTS = Dashboard(
    "paywatch-payments",
    "paywatch · Payments overview",
    "Traffic, outcomes and latency per channel; who is failing, the customer or the channel.",
    (
        Panel(
            "attempts",
            "Attempts by channel",
            "How much traffic is each channel taking (attempts per interval), and did one suddenly go quiet?",
            "timeseries",
            PAYMENT,
            "event.action:payment_requested",
            COUNT,
            (PER_CHANNEL, OVER_TIME),
            PAYMENT_VARS,
            unit="short",
        ),
        Panel(
            "latency",
            "Channel latency p50 / p95 / p99",
            "How long do channels take to answer, typical and worst case?",
            "timeseries",
            PAYMENT,
            "_exists_:payment.latency_ms",
            (Metric("percentiles", "payment.latency_ms", percents=("50", "95", "99")),),
            (PER_CHANNEL, OVER_TIME),
            PAYMENT_VARS,
            unit="ms",
        ),
        Panel(
            "outcomes",
            "Attempt outcomes on $channel (share)",
            "Of the attempts this channel answered, what share succeeded? (one panel per channel)",
            "timeseries",
            PAYMENT,
            ATTEMPT_RESULTS,
            COUNT,
            (Bucket("terms", "event.outcome", size=3, id="10"), OVER_TIME),
            PAYMENT_VARS,
            unit="short",  # counts, drawn stacked to 100 %: the axis shows shares
            repeat="channel",
            percent=True,
            width=24,
        ),
        Panel(
            "failure_side",
            "Customer vs channel failures",
            "Are failures the customers' own (wrong password, no funds, limits) or the channel's?",
            "timeseries",
            PAYMENT,
            "event.outcome:failure",
            COUNT,
            (
                Bucket(
                    "filters",
                    filters=(("customer", CUSTOMER_FAILURE), ("channel", CHANNEL_FAILURE)),
                    id="10",
                ),
                OVER_TIME,
            ),
            PAYMENT_VARS,
            unit="short",
        ),
        Panel(
            "top_error_codes",
            "Top error codes",
            "Which error codes dominate? A sudden jump of one code (e.g. limit exceeded) is news.",
            "bargauge",
            PAYMENT,
            "event.outcome:failure AND _exists_:payment.error_code",
            COUNT,
            (Bucket("terms", "payment.error_code", size=10, id="10"),),
            PAYMENT_VARS,
            unit="short",
        ),
    ),
)

STUCK = Dashboard(
    "paywatch-stuck-orders",
    "paywatch · Stuck orders",
    "Orders the channel says are paid while the business still shows them pending.",
    (
        Panel(
            "stuck_open",
            "Paid-but-pending orders: latest state",
            "Which orders are paid at the channel but still pending here, and which are still open?",
            "table",
            FINDING,
            "finding.kind:paid_but_pending",
            (Metric("raw_data", size=2000),),
            variables=PAYMENT_VARS,
            width=24,
            columns=("payment.order_id", "@timestamp", "finding.state", "payment.channel", "payment.merchant_id"),
            latest_by="payment.order_id",
            row_field="payment.order_id",
        ),
        Panel(
            "stuck_count",
            "Orders getting stuck, by channel",
            "How many orders got stuck per channel, and when did it start?",
            "timeseries",
            FINDING,
            "finding.kind:paid_but_pending AND finding.state:open",
            COUNT,
            (PER_CHANNEL, OVER_TIME),
            PAYMENT_VARS,
            unit="short",
        ),
        Panel(
            "stuck_since",
            "Stuck orders by when they got stuck",
            "How old are the stuck orders: a burst minutes ago (callbacks late) or a tail of hours "
            "(callbacks lost)? A bar's age is now minus its time, plus the detector's grace period.",
            "barchart",
            FINDING,
            "finding.kind:paid_but_pending AND finding.state:open",
            COUNT,
            (OVER_TIME,),
            PAYMENT_VARS,
            unit="short",
        ),
        Panel(
            "stuck_incidents",
            "Stuck-order incidents",
            "Is a paid-but-pending incident open on a channel now, and how many orders does it hold?",
            "table",
            FINDING,
            "finding.kind:paid_but_pending_incident",
            (Metric("raw_data", size=200),),
            variables=CHANNEL_VARS,
            columns=("@timestamp", "payment.channel", "finding.state", "finding.evidence.figures.orders"),
        ),
        Panel(
            "compensating_queries",
            "Compensating queries by outcome",
            "Is the compensating-query job asking channels, and what do they answer "
            "(success: paid, failure: not paid, unknown: no usable answer)?",
            "timeseries",
            ACTION,
            "event.action:query",
            COUNT,
            (Bucket("terms", "event.outcome", size=10, id="10"), OVER_TIME),
            CHANNEL_VARS,
            unit="short",
        ),
        Panel(
            "repairs",
            "Repairs (status corrections)",
            "Which orders were corrected, from what status to what, by whom and why?",
            "table",
            ACTION,
            "event.action:(repair OR repair_declined)",
            (Metric("raw_data", size=500),),
            variables=CHANNEL_VARS,
            width=24,
            columns=(
                "payment.order_id",
                "@timestamp",
                "payment.channel",
                "event.action",
                "action.from_status",
                "action.to_status",
                "action.actor",
                "action.reason",
            ),
            row_field="payment.order_id",
        ),
    ),
)

DUPLICATES = Dashboard(
    "paywatch-duplicate-charges",
    "paywatch · Duplicate charges",
    "Orders charged more than once, counted per business order across channels.",
    (
        Panel(
            "duplicates_by_channel",
            "Duplicate charges by channel",
            "Which channels carry the extra successful charges?",
            "timeseries",
            FINDING,
            "finding.kind:duplicate_charge AND finding.state:open",
            COUNT,
            (PER_CHANNEL, OVER_TIME),
            PAYMENT_VARS,
            unit="short",
        ),
        Panel(
            "duplicates_by_merchant",
            "Orders charged twice, by merchant",
            "Which merchants' customers were charged more than once?",
            "bargauge",
            FINDING,
            "finding.kind:duplicate_charge AND finding.state:open",
            (Metric("cardinality", "payment.order_id"),),
            (Bucket("terms", "payment.merchant_id", size=20, id="10"),),
            PAYMENT_VARS,
            unit="short",
        ),
        Panel(
            "refund_candidates",
            "Refund candidates",
            "Which extra charges should be refunded (after one more query to the channel)?",
            "table",
            ACTION,
            "event.action:refund_candidate",
            (Metric("raw_data", size=500),),
            variables=CHANNEL_VARS,
            width=24,
            columns=(
                "payment.order_id",
                "@timestamp",
                "payment.attempt_id",
                "payment.channel",
                "action.reason",
                "action.dry_run",
            ),
            row_field="payment.order_id",
        ),
    ),
)

CHANNELS = Dashboard(
    "paywatch-channel-health",
    "paywatch · Channel health",
    "Each channel's health as the detectors judged it, and its failures against its own baseline.",
    (
        Panel(
            "channel_state",
            "Channel state",
            "When was each channel healthy, degraded or down?",
            "statetimeline",
            FINDING,
            "finding.kind:channel_health",
            (Metric("raw_data", size=2000),),
            variables=CHANNEL_VARS,
            width=24,
            columns=("@timestamp", "payment.channel", "finding.level"),
            partition_by="payment.channel",
        ),
        Panel(
            "channel_failure_rate",
            "Failure rate vs baseline (as the detector saw it)",
            "Is the channel failing more than it usually does (customer failures excluded)?",
            "timeseries",
            FINDING,
            "finding.kind:channel_health AND _exists_:finding.evidence.figures.baseline",
            (
                Metric("max", "finding.evidence.figures.failure_rate", id="1"),
                Metric("max", "finding.evidence.figures.baseline", id="2"),
            ),
            (PER_CHANNEL, OVER_TIME),
            CHANNEL_VARS,
            unit="percentunit",
        ),
        Panel(
            "channel_failures",
            "Channel-side failures by channel",
            "How many attempts did each channel fail through its own fault (customer failures excluded)?",
            "timeseries",
            PAYMENT,
            f"event.outcome:failure AND NOT {CUSTOMER_FAILURE}",
            COUNT,
            (PER_CHANNEL, OVER_TIME),
            PAYMENT_VARS,
            unit="short",
        ),
    ),
)

HEARTBEATS = Dashboard(
    "paywatch-heartbeats",
    "paywatch · Heartbeats",
    "Every service and instance, its last heartbeat and its status; silence is the signal.",
    (
        Panel(
            "heartbeat_grid",
            "Service × instance: last heartbeat",
            "Which instances are alive, and when was each last heard from?",
            "table",
            HEARTBEAT,
            "",
            (Metric("max", "@timestamp", id="1"), Metric("max", "heartbeat.seq", id="2")),
            (
                Bucket("terms", "service.name", size=100, id="10"),
                Bucket("terms", "service.instance.id", size=100, id="11"),
            ),
            width=24,
            row_field="service.name",
        ),
        Panel(
            "heartbeats_received",
            "Heartbeats received per service",
            "Did a service stop beating? A gap in its line is silence.",
            "timeseries",
            HEARTBEAT,
            "",
            COUNT,
            (Bucket("terms", "service.name", size=100, id="10"), OVER_TIME),
            unit="short",
        ),
        Panel(
            "heartbeat_status",
            "Heartbeats by reported status",
            "Do services say they are up, degraded or stopping, and since when?",
            "timeseries",
            HEARTBEAT,
            "",
            COUNT,
            (Bucket("terms", "heartbeat.status", size=3, id="10"), OVER_TIME),
            unit="short",
        ),
        Panel(
            "silent_services",
            "Silent services (heartbeat findings)",
            "Which services did the monitor declare missing or down, and are they back?",
            "table",
            FINDING,
            "finding.kind:(heartbeat_missing OR service_down OR service_flapping)",
            (Metric("raw_data", size=500),),
            width=24,
            columns=("service.name", "@timestamp", "finding.kind", "finding.state", "finding.summary"),
            latest_by="service.name",
            row_field="service.name",
        ),
    ),
)

SELF = Dashboard(
    "paywatch-self-health",
    "paywatch · paywatch's own health",
    "Is the monitor itself keeping up? Stored events, findings and alerts from Elasticsearch; "
    "consumer lag and dead letters from paywatch's Prometheus metrics.",
    (
        Panel(
            "collector_throughput",
            "Events stored by the collector, by dataset",
            "Is the collector keeping up with traffic (documents per interval, by processing time)?",
            "timeseries",
            ALL,
            "_exists_:event.ingested",
            COUNT,
            (Bucket("terms", "event.dataset", size=10, id="10"), Bucket("date_histogram", "event.ingested", id="20")),
            unit="short",
        ),
        Panel(
            "detector_output",
            "Findings by kind",
            "Are the detectors producing findings, and of which kinds?",
            "timeseries",
            FINDING,
            "",
            COUNT,
            (Bucket("terms", "finding.kind", size=20, id="10"), OVER_TIME),
            unit="short",
        ),
        Panel(
            "alert_changes",
            "Alert state changes",
            "Which alerts opened, fired and resolved?",
            "timeseries",
            ALERT,
            "",
            COUNT,
            (Bucket("terms", "alert.status", size=10, id="10"), OVER_TIME),
            unit="short",
        ),
        Panel(
            "alert_deliveries",
            "Alert deliveries by sink: delivered vs failed",
            "Do pages actually get out, or are deliveries to a sink failing?",
            "bargauge",
            ALERT,
            "_exists_:alert.delivery_results",
            COUNT,
            # One "sink: outcome" keyword per delivery: a terms bucket over the deliveries' own
            # sub-fields would pair every sink with every outcome of the same alert document.
            (Bucket("terms", "alert.delivery_results", size=20, id="10"),),
            unit="short",
        ),
        PromPanel(
            "consumer_lag",
            "Kafka consumer lag",
            "Is the collector falling behind the topics it reads?",
            "sum by (topic) (paywatch_collector_consumer_lag)",
            "{{topic}}",
        ),
        PromPanel(
            "dead_letters",
            "Dead letters per second",
            "Are producers sending events that break the contract?",
            "sum by (kind) (rate(paywatch_collector_dead_letters_total[5m]))",
            "{{kind}}",
            unit="reqps",
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (PAYMENTS, STUCK, DUPLICATES, CHANNELS, HEARTBEATS, SELF)
