"""Alipay open platform: `alipay.trade.query` by merchant order number (`out_trade_no` =
attempt id).

Common request parameters (app_id, method, format, charset, sign_type=RSA2, timestamp,
version, biz_content) are signed with the application private key: the parameters except
`sign`, sorted by name, joined as `k=v&…`, SHA256withRSA, base64. The answer is
`{"alipay_trade_query_response": {...}, "sign": …}`; code 10000 carries `trade_status`,
40004 with sub_code `ACQ.TRADE_NOT_EXIST` is "not found", 20000 is the gateway's own
"service currently unavailable" (the query API failed, though HTTP says 200).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from paywatch.compensation.channels import (
    HttpAdapter,
    Outcome,
    QueryRequest,
    QueryResult,
    require_secret,
    rsa_sha256_sign,
)
from paywatch.compensation.settings import AlipaySettings

METHOD = "alipay.trade.query"
RESPONSE_KEY = "alipay_trade_query_response"
TRADE_STATUSES: dict[str, Outcome] = {
    "TRADE_SUCCESS": "success",
    "TRADE_FINISHED": "success",
    "WAIT_BUYER_PAY": "unknown",
    "TRADE_CLOSED": "failure",
}
# Alipay's timestamps are Beijing time.
CST = timezone(timedelta(hours=8))


def signing_content(params: dict[str, str]) -> bytes:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "").encode()


class AlipayAdapter(HttpAdapter):
    name = "alipay"

    def __init__(self, base_url: str, timeout_s: float, *, app_id: str, private_key: str) -> None:
        super().__init__(base_url, timeout_s)
        self.app_id = app_id
        self._private_key = private_key

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: AlipaySettings) -> AlipayAdapter:
        key = require_secret("Alipay private key", s.private_key_env, s.private_key_file)
        return cls(base_url, timeout_s, app_id=s.app_id, private_key=key)

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        params = {
            "app_id": self.app_id,
            "method": METHOD,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(CST).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps({"out_trade_no": request.attempt_id}, separators=(",", ":")),
        }
        summary = {"method": "POST", "url": self.base_url + "/gateway.do", "biz_content": params["biz_content"]}
        params["sign"] = rsa_sha256_sign(self._private_key, signing_content(params))
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        return self._request("POST", "/gateway.do", data=params, headers=headers), summary

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        answer = body[RESPONSE_KEY] if isinstance(body, dict) else None
        if status != 200 or not isinstance(answer, dict):
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status}")
        code, sub_code = answer.get("code"), answer.get("sub_code")
        if code == "40004" and sub_code == "ACQ.TRADE_NOT_EXIST":
            return QueryResult(request, "unknown", channel_status=sub_code, not_found=True)
        if code != "10000":
            return QueryResult(request, "unknown", api_failed=True, error=f"code {code} {sub_code or ''}".strip())
        trade_status = answer["trade_status"]
        if trade_status not in TRADE_STATUSES:
            raise ValueError(f"unknown trade_status {trade_status!r}")
        return QueryResult(request, TRADE_STATUSES[trade_status], channel_status=trade_status)
