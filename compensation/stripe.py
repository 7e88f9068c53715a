"""Stripe: retrieve the PaymentIntent (`GET /v1/payment_intents/{id}`, attempt id = the
PaymentIntent id, as Stripe integrations store it), authenticated with the secret key as a
bearer token. 404 `resource_missing` is "not found".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from paywatch.compensation.channels import HttpAdapter, Outcome, QueryRequest, QueryResult, require_secret
from paywatch.compensation.settings import StripeSettings

# requires_payment_method right after a failed confirmation (last_payment_error set) is that
# attempt's failure; without an error the customer has not paid yet.
STATUSES: dict[str, Outcome] = {
    "succeeded": "success",
    "canceled": "failure",
    "processing": "unknown",
    "requires_action": "unknown",
    "requires_confirmation": "unknown",
    "requires_capture": "unknown",
    "requires_payment_method": "unknown",
}


class StripeAdapter(HttpAdapter):
    name = "stripe"

    def __init__(self, base_url: str, timeout_s: float, *, secret_key: str, api_version: str | None = None) -> None:
        super().__init__(base_url, timeout_s)
        self._secret_key = secret_key
        self.api_version = api_version

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: StripeSettings) -> StripeAdapter:
        key = require_secret("Stripe secret key", s.secret_key_env, s.secret_key_file)
        return cls(base_url, timeout_s, secret_key=key, api_version=s.api_version)

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        path = f"/v1/payment_intents/{quote(request.attempt_id, safe='')}"
        headers = {"Authorization": f"Bearer {self._secret_key}"}
        if self.api_version:
            headers["Stripe-Version"] = self.api_version
        return self._request("GET", path, headers=headers), {"method": "GET", "url": self.base_url + path}

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        error = body.get("error") if isinstance(body, dict) else None
        if status == 404 and isinstance(error, dict) and error.get("code") == "resource_missing":
            return QueryResult(request, "unknown", channel_status="resource_missing", not_found=True)
        if status != 200 or not isinstance(body, dict) or body.get("object") != "payment_intent":
            code = error.get("code") or error.get("type") if isinstance(error, dict) else None
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status} {code or ''}".strip())
        pi_status = body["status"]
        if pi_status not in STATUSES:
            raise ValueError(f"unknown PaymentIntent status {pi_status!r}")
        outcome = STATUSES[pi_status]
        if pi_status == "requires_payment_method" and body.get("last_payment_error"):
            outcome = "failure"
        return QueryResult(request, outcome, channel_status=pi_status)
