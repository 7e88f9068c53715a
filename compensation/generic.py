"""Any HTTP/JSON query API, described in the config by a path template and a field mapping
(which JSON field holds the status, which values mean paid / failed / refunded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from paywatch.compensation.channels import HttpAdapter, QueryRequest, QueryResult
from paywatch.compensation.settings import GenericSettings
from paywatch.secrets import read_secret


def dotted(body: Any, path: str) -> Any:
    for part in path.split("."):
        body = body[part]
    return body


@dataclass(eq=False)
class GenericAdapter(HttpAdapter):
    name = "generic"

    mapping: GenericSettings
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: GenericSettings) -> GenericAdapter:
        return cls(base_url, timeout_s, s, read_secret(s.token_env, s.token_file))

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        path = self.mapping.path.format(
            attempt_id=quote(request.attempt_id, safe=""), order_id=quote(request.order_id, safe="")
        )
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return (
            self._request(self.mapping.method, path, headers=headers),
            {"method": self.mapping.method, "url": self.base_url + path},
        )

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        m = self.mapping
        if status in m.not_found_http:
            return QueryResult(request, "unknown", channel_status="not_found", not_found=True)
        if status in (401, 403):
            return QueryResult(request, "unknown", credentials=f"HTTP {status}")
        if status != 200:
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status}")
        value = str(dotted(body, m.status_field))
        if value in m.success or value in m.refunded:
            return QueryResult(request, "success", channel_status=value, refunded=value in m.refunded)
        if value in m.failure:
            return QueryResult(request, "failure", channel_status=value)
        return QueryResult(request, "unknown", channel_status=value)
