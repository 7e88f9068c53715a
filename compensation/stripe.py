"""Stripe: find the attempt's PaymentIntent and read its charge.

By id (`lookup: payment_intent`, the attempt id is the PaymentIntent id, as most Stripe
integrations store it): `GET /v1/payment_intents/{id}?expand[]=latest_charge`. By the
merchant's own attempt id (`lookup: metadata`): `GET /v1/payment_intents/search?query=
metadata['KEY']:'ID'&expand[]=data.latest_charge` (Stripe's search index lags by about a
minute, which the not-found grace covers). Authenticated with the secret key as a bearer
token; `Stripe-Account` names the connected account for Connect platforms. Stripe does not
sign API answers: they are trusted over HTTPS only (`base_url` must be https://).

The refund view is the expanded charge's `amount_refunded`. 404 `resource_missing` (or an
empty search) is "not found"; 401/403 are credential and permission faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from paywatch.compensation.channels import (
    HttpAdapter,
    Outcome,
    QueryRequest,
    QueryResult,
    mapped,
    require_secret,
)
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


@dataclass(eq=False, kw_only=True)
class StripeAdapter(HttpAdapter):
    name = "stripe"

    secret_key: str = field(repr=False)
    api_version: str | None = None
    metadata_key: str | None = None
    account: str | None = None

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: StripeSettings) -> StripeAdapter:
        key = require_secret("Stripe secret key", s.secret_key_env, s.secret_key_file)
        metadata_key = s.metadata_key if s.lookup == "metadata" else None
        return cls(
            base_url, timeout_s, secret_key=key, api_version=s.api_version, metadata_key=metadata_key, account=s.account
        )

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        if self.metadata_key:
            value = request.attempt_id.replace("\\", "\\\\").replace("'", "\\'")
            search = f"metadata['{self.metadata_key}']:'{value}'"
            path = f"/v1/payment_intents/search?query={quote(search, safe='')}&expand[]=data.latest_charge"
        else:
            path = f"/v1/payment_intents/{quote(request.attempt_id, safe='')}?expand[]=latest_charge"
        headers = {"Authorization": f"Bearer {self.secret_key}"}
        if self.api_version:
            headers["Stripe-Version"] = self.api_version
        if self.account:
            headers["Stripe-Account"] = self.account
        summary = {"method": "GET", "url": self.base_url + path, **({"account": self.account} if self.account else {})}
        return self._request("GET", path, headers=headers), summary

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        error = body.get("error") if isinstance(body, dict) else None
        code = (error.get("code") or error.get("type")) if isinstance(error, dict) else None
        if status == 404 and code == "resource_missing":
            return QueryResult(request, "unknown", channel_status="resource_missing", not_found=True)
        if status in (401, 403):
            message = str(error.get("message"))[:300] if isinstance(error, dict) else None
            return QueryResult(request, "unknown", credentials=str(code or f"HTTP {status}"), error=message)
        if status != 200 or not isinstance(body, dict):
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status} {code or ''}".strip())
        if body.get("object") == "search_result":
            found = body["data"]
            if not found:
                return QueryResult(request, "unknown", channel_status="no_match", not_found=True)
            if len(found) > 1:
                ids = ", ".join(str(pi.get("id")) for pi in found[:5])
                return QueryResult(request, "unknown", untrusted=f"{len(found)} PaymentIntents match: {ids}")
            return self._intent(request, found[0], str(found[0]["metadata"].get(self.metadata_key, "")))
        if body.get("object") != "payment_intent":
            return QueryResult(request, "unknown", api_failed=True, error=f"not a PaymentIntent: {body.get('object')}")
        return self._intent(request, body, body["id"])

    def _intent(self, request: QueryRequest, pi: dict[str, Any], echo: str | None) -> QueryResult:
        pi_status = str(pi["status"])
        outcome, unknown = mapped(STATUSES, pi_status, request.channel)
        if pi_status == "requires_payment_method" and pi.get("last_payment_error"):
            outcome = "failure"
        charge = pi.get("latest_charge")
        if charge is not None and not isinstance(charge, dict):
            raise ValueError("latest_charge was not expanded")
        refunded_minor = int(charge["amount_refunded"]) if charge else 0
        return QueryResult(
            request,
            outcome,
            channel_status=pi_status,
            unknown_status=unknown,
            refunded=refunded_minor > 0,
            refunded_minor=refunded_minor,
            amount_minor=int(pi["amount"]),
            currency=str(pi["currency"]),
            echo=echo,
        )
