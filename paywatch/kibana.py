"""Kibana Discover links, shared by the alerts' evidence links and the dashboards' drill-downs.

Kibana keeps Discover state in rison in the URL fragment; only strings need care there
(`!` and `'` are escaped with `!`)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import Field

from paywatch.settings import Section


class KibanaSettings(Section):
    """The one Kibana every link and import goes to."""

    url: str = Field(
        "http://localhost:5601",
        description="Kibana base URL as people reach it: alerts' evidence links, Grafana's 'Raw events in "
        "Kibana Discover' links, and where `dashboards provision` imports saved objects. Empty: alerts carry "
        "no evidence link.",
    )


URL_SAFE = "():,'!*-._~"
"""Left unencoded in a link that is used as is: rison's own punctuation reads better plain."""


def rison_string(text: str) -> str:
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def discover_url(
    kibana_url: str,
    data_view: str,
    query: str,
    start: str,
    end: str | None,
    language: Literal["kuery", "lucene"] = "kuery",
    safe: str = URL_SAFE,
) -> str:
    """A Discover URL over [start, end] (ISO 8601 times; end None: 'now'). `safe` names the
    characters left unencoded: a Grafana link keeps `${...}` for Grafana to fill in."""
    to = rison_string(end) if end is not None else "now"
    state_g = f"(time:(from:{rison_string(start)},to:{to}))"
    state_a = (
        f"(dataSource:(dataViewId:{rison_string(data_view)},type:dataView),"
        f"query:(language:{language},query:{rison_string(query)}))"
    )
    return f"{kibana_url.rstrip('/')}/app/discover#/?_g={quote(state_g, safe=safe)}&_a={quote(state_a, safe=safe)}"
