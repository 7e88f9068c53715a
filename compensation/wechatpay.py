"""WeChat Pay API v3: query an order by merchant order number (`out_trade_no` = attempt id).

`GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=…`, signed with the merchant
API private key: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,
signature=…,timestamp=…,serial_no=…`, the signature being SHA256withRSA over
"METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n". 404 `ORDER_NOT_EXIST` is "not found".
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx

from paywatch.compensation.channels import (
    HttpAdapter,
    Outcome,
    QueryRequest,
    QueryResult,
    require_secret,
    rsa_sha256_sign,
)
from paywatch.compensation.settings import WechatPaySettings

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
# trade_state → contract outcome. REFUND: paid, then refunded (flagged separately).
TRADE_STATES: dict[str, Outcome] = {
    "SUCCESS": "success",
    "REFUND": "success",
    "NOTPAY": "unknown",
    "USERPAYING": "unknown",
    "CLOSED": "failure",
    "REVOKED": "failure",
    "PAYERROR": "failure",
}


def signature_message(method: str, url: str, timestamp: str, nonce: str, body: str = "") -> bytes:
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n".encode()


class WechatPayAdapter(HttpAdapter):
    name = "wechatpay"

    def __init__(self, base_url: str, timeout_s: float, *, mchid: str, serial_no: str, private_key: str) -> None:
        super().__init__(base_url, timeout_s)
        self.mchid = mchid
        self.serial_no = serial_no
        self._private_key = private_key

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: WechatPaySettings) -> WechatPayAdapter:
        key = require_secret("WeChat Pay private key", s.private_key_env, s.private_key_file)
        return cls(base_url, timeout_s, mchid=s.mchid, serial_no=s.serial_no, private_key=key)

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        path = f"/v3/pay/transactions/out-trade-no/{quote(request.attempt_id, safe='')}?mchid={quote(self.mchid)}"
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16).upper()
        signature = rsa_sha256_sign(self._private_key, signature_message("GET", path, timestamp, nonce))
        auth = (
            f'{AUTH_SCHEME} mchid="{self.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{self.serial_no}"'
        )
        headers = {"Authorization": auth, "Accept": "application/json"}
        summary = {"method": "GET", "url": self.base_url + path, "out_trade_no": request.attempt_id}
        return self._request("GET", path, headers=headers), summary

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        if status == 404 and isinstance(body, dict) and body.get("code") == "ORDER_NOT_EXIST":
            return QueryResult(request, "unknown", channel_status="ORDER_NOT_EXIST", not_found=True)
        if status != 200 or not isinstance(body, dict):
            code = body.get("code") if isinstance(body, dict) else None
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status} {code or ''}".strip())
        state = body["trade_state"]
        if state not in TRADE_STATES:
            raise ValueError(f"unknown trade_state {state!r}")
        return QueryResult(request, TRADE_STATES[state], channel_status=state, refunded=state == "REFUND")
