"""Slack incoming-webhook messages: a plain `text` fallback for notifications, plus Block Kit
blocks (a header and an mrkdwn section) for the channel. The webhook URL is a secret."""

from __future__ import annotations

from collections.abc import Sequence

from paywatch.alerts.delivery import HttpSink, Request
from paywatch.alerts.model import AlertChange
from paywatch.webhooks import Retry

HEADER_MAX = 150  # Slack's limit for a header block's plain_text
SECTION_MAX = 3000  # and for a section's text
ICONS = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}


def _escape(text: str) -> str:
    """Slack reads &, < and > as markup (`<!channel>` would ping everyone)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(change: AlertChange) -> dict:
    alert = change.alert
    resolved = alert.status == "resolved"
    icon = ":white_check_mark:" if resolved else ICONS.get(alert.labels.get("severity", ""), ":bell:")
    title = f"[{alert.status.upper()}] {alert.annotations.get('summary', alert.name)}"
    lines = [_escape(alert.annotations.get("description", ""))]
    links = [
        f"<{alert.annotations[key]}|{text}>"
        for key, text in (("kibana_url", "Evidence in Kibana"), ("runbook_url", "Runbook"))
        if key in alert.annotations
    ]
    if links:
        lines.append(" · ".join(links))
    labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    lines.append(f"`{_escape(labels)}`")
    return {
        "text": f"{icon} {_escape(title)}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:HEADER_MAX]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:SECTION_MAX]}},
        ],
    }


class SlackSink(HttpSink):
    name = "slack"
    resends = False

    def __init__(self, webhook_url: str, retry: Retry | None = None, **kw) -> None:
        super().__init__(retry, **kw)
        self._url = webhook_url

    def requests(self, changes: Sequence[AlertChange]) -> list[Request]:
        return [Request(self._url, slack_message(c), (c.alert.fingerprint,)) for c in changes]
