"""Alipay open platform: `alipay.trade.query` by merchant order number (`out_trade_no` =
attempt id).

Common request parameters (app_id, method, format, charset, sign_type=RSA2, timestamp,
version, biz_content, and `app_auth_token` when an ISV queries on a merchant's behalf) are
signed with the application private key: the parameters except `sign`, sorted by name,
joined as `k=v&…`, SHA256withRSA, base64.

The answer is `{"alipay_trade_query_response": {...}, "sign": …}` (or `{"error_response":
{...}, …}` when the gateway refuses the call). The `sign` is Alipay's SHA256withRSA over the
response object exactly as the bytes of the answer spell it, checked with the Alipay public
key before anything in it counts. Code 10000 carries `trade_status`; 40004 with sub_code
`ACQ.TRADE_NOT_EXIST` is "not found"; 20000 is the gateway's own "service currently
unavailable" (the query API failed, though HTTP says 200); `isv.*` sub-codes and 40006 are
credential and permission faults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from paywatch.compensation.channels import (
    REFUND_PURPOSES,
    HttpAdapter,
    Outcome,
    QueryRequest,
    QueryResult,
    mapped,
    require_secret,
    rsa_sha256_sign,
    rsa_sha256_verify,
)
from paywatch.compensation.settings import AlipaySettings
from paywatch.secrets import read_secret

METHOD = "alipay.trade.query"
REFUND_METHOD = "alipay.trade.fastpay.refund.query"
RESPONSE_KEY = "alipay_trade_query_response"
REFUND_RESPONSE_KEY = "alipay_trade_fastpay_refund_query_response"
ERROR_KEY = "error_response"
# TRADE_CLOSED is "closed unpaid" or "paid, then fully refunded": told apart by the payment date.
TRADE_STATUSES: dict[str, Outcome] = {
    "TRADE_SUCCESS": "success",
    "TRADE_FINISHED": "success",
    "WAIT_BUYER_PAY": "unknown",
    "TRADE_CLOSED": "failure",
}
CREDENTIAL_CODES = frozenset({"40006"})  # insufficient permissions
# Alipay's timestamps are Beijing time.
CST = timezone(timedelta(hours=8))


def signing_content(params: dict[str, str]) -> bytes:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "").encode()


def signed_substring(text: str, key: str) -> str | None:
    """The response object under `key` exactly as the answer's bytes spell it: what Alipay
    signed. Re-serialising the parsed JSON would change spacing, key order or escapes."""
    marker = f'"{key}"'
    at = text.find(marker)
    if at < 0:
        return None
    colon = text.find(":", at + len(marker))
    if colon < 0:
        return None
    start = colon + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return text[start:end]


def yuan_to_minor(value: Any) -> int | None:
    """Alipay amounts are decimal strings in yuan ("88.88"); money here is integer fen."""
    try:
        minor = Decimal(str(value)) * 100
    except (InvalidOperation, ValueError):
        return None
    return int(minor) if minor == minor.to_integral_value() else None


@dataclass(eq=False, kw_only=True)
class AlipayAdapter(HttpAdapter):
    name = "alipay"

    app_id: str
    private_key: str = field(repr=False)
    alipay_public_key: str = field(repr=False)
    app_auth_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: AlipaySettings) -> AlipayAdapter:
        key = require_secret("Alipay private key", s.private_key_env, s.private_key_file)
        public = require_secret("Alipay public key", s.alipay_public_key_env, s.alipay_public_key_file)
        token = read_secret(s.app_auth_token_env, s.app_auth_token_file)
        return cls(
            base_url, timeout_s, app_id=s.app_id, private_key=key, alipay_public_key=public, app_auth_token=token
        )

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        return self._call(METHOD, {"out_trade_no": request.attempt_id})

    async def query(self, client: httpx.AsyncClient, request: QueryRequest) -> QueryResult:
        """The trade query; for a refund decision, also the refund query: a partial refund leaves
        the trade TRADE_SUCCESS. Without the refund's own request number only the refund made
        under the default one (= out_trade_no) can be asked for; a failed or untrusted refund
        query leaves the refunded amount unknown, which no refund is ever proposed on."""
        result = await super().query(client, request)
        if not (
            result.answered and result.channel_status == "TRADE_SUCCESS" and REFUND_PURPOSES & set(request.purposes)
        ):
            return result
        biz = {"out_trade_no": request.attempt_id, "out_request_no": request.attempt_id}
        http_request, summary = self._call(REFUND_METHOD, biz)
        refund = await self.exchange(client, request, http_request, summary, self._parse_refund)
        result.refunded_minor = refund.refunded_minor if refund.answered else None
        result.refunded = bool(result.refunded_minor)
        result.raw = {RESPONSE_KEY: result.raw, REFUND_RESPONSE_KEY: refund.raw}
        result.request_summary = {**result.request_summary, "refund_query": summary["biz_content"]}
        return result

    def _call(self, method: str, biz: dict[str, str]) -> tuple[httpx.Request, dict[str, Any]]:
        params = {
            "app_id": self.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(CST).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps(biz, separators=(",", ":")),
        }
        if self.app_auth_token:
            params["app_auth_token"] = self.app_auth_token
        summary = {"method": "POST", "url": self.base_url + "/gateway.do", "biz_content": params["biz_content"]}
        params["sign"] = rsa_sha256_sign(self.private_key, signing_content(params))
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        return self._request("POST", "/gateway.do", data=params, headers=headers), summary

    def verify(self, response: httpx.Response) -> str | None:
        text = response.text
        try:
            body = json.loads(text)
        except ValueError:
            return "answer is not JSON"
        sign = body.get("sign") if isinstance(body, dict) else None
        key = (
            next((k for k in body if k.endswith("_response") and k != ERROR_KEY), "") if isinstance(body, dict) else ""
        )
        signed = signed_substring(text, key) if key else None
        if not sign or signed is None:
            return "answer carries no Alipay sign"
        if not rsa_sha256_verify(self.alipay_public_key, signed.encode(), str(sign)):
            return "sign does not verify with the Alipay public key"
        return None

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        if not isinstance(body, dict):
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status} unreadable answer")
        answer = body.get(RESPONSE_KEY, body.get(ERROR_KEY))
        if status != 200 or not isinstance(answer, dict):
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status}")
        code, sub_code = str(answer.get("code")), answer.get("sub_code")
        error = f"code {code} {sub_code or ''} {answer.get('sub_msg') or answer.get('msg') or ''}".strip()[:300]
        if code == "40004" and sub_code == "ACQ.TRADE_NOT_EXIST":
            return QueryResult(request, "unknown", channel_status=sub_code, not_found=True)
        if code in CREDENTIAL_CODES or str(sub_code or "").startswith(("isv.", "aop.")):
            return QueryResult(request, "unknown", credentials=str(sub_code or code), error=error)
        if code != "10000":
            return QueryResult(request, "unknown", api_failed=True, error=error)
        trade_status = str(answer["trade_status"])
        outcome, unknown = mapped(TRADE_STATUSES, trade_status, request.channel)
        total = yuan_to_minor(answer.get("total_amount"))
        # The trade query shows a full refund (TRADE_CLOSED after payment) but not a partial one
        # made under its own out_request_no: docs/compensation.md says what that means.
        refunded_minor = 0 if outcome == "success" else None
        if trade_status == "TRADE_CLOSED" and answer.get("send_pay_date"):
            outcome, refunded_minor = "success", total  # paid, then fully refunded
        return QueryResult(
            request,
            outcome,
            channel_status=trade_status,
            unknown_status=unknown,
            refunded=bool(refunded_minor),
            refunded_minor=refunded_minor,
            amount_minor=total,
            currency=answer.get("trans_currency") or "CNY",
            echo=answer.get("out_trade_no"),
        )

    def _parse_refund(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        """`alipay.trade.fastpay.refund.query`: REFUND_SUCCESS with `refund_amount`, or no refund
        under that request number (10000 without a status, or 40004)."""
        answer = body.get(REFUND_RESPONSE_KEY) if isinstance(body, dict) else None
        if status != 200 or not isinstance(answer, dict):
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status}")
        code = str(answer.get("code"))
        if code == "40004" or (code == "10000" and answer.get("refund_status") != "REFUND_SUCCESS"):
            return QueryResult(request, "success", refunded_minor=0, echo=answer.get("out_trade_no"))
        if code != "10000":
            return QueryResult(request, "unknown", api_failed=True, error=f"refund query: code {code}")
        refunded = yuan_to_minor(answer["refund_amount"])
        if refunded is None:
            raise ValueError(f"refund_amount {answer['refund_amount']!r}")
        return QueryResult(request, "success", refunded_minor=refunded, echo=answer.get("out_trade_no"))
