"""WeChat Pay API v3: query an order by merchant order number (`out_trade_no` = attempt id).

Direct merchant: `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=…`; service
provider (partner) mode, with `sub_mchid` set: `GET /v3/pay/partner/transactions/
out-trade-no/{out_trade_no}?sp_mchid=…&sub_mchid=…`. Signed with the merchant API private
key: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,signature=…,timestamp=…,
serial_no=…`, the signature being SHA256withRSA over "METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n".

Every answer is signed by WeChat Pay: `Wechatpay-Signature` is SHA256withRSA over
"TIMESTAMP\\nNONCE\\nBODY\\n" (`Wechatpay-Timestamp`, `Wechatpay-Nonce`, the raw body) with
the platform key named by `Wechatpay-Serial` (a platform certificate serial or a platform
public key id `PUB_KEY_ID_…`). 404 `ORDER_NOT_EXIST` is "not found"; 401/403 and the
merchant-identity codes are credential faults.
"""

from __future__ import annotations

import secrets
import time
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
    rsa_sha256_sign,
    rsa_sha256_verify,
)
from paywatch.compensation.settings import WechatPaySettings

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
# trade_state → contract outcome. REFUND: paid, then (partly or fully) refunded.
TRADE_STATES: dict[str, Outcome] = {
    "SUCCESS": "success",
    "REFUND": "success",
    "NOTPAY": "unknown",
    "USERPAYING": "unknown",
    "CLOSED": "failure",
    "REVOKED": "failure",
    "PAYERROR": "failure",
}
# Error codes that say "who you are is not accepted", whatever the HTTP status.
CREDENTIAL_CODES = frozenset({"SIGN_ERROR", "NO_AUTH", "MCH_NOT_EXISTS", "APPID_MCHID_NOT_MATCH", "INVALID_ACCOUNTID"})
MAX_SKEW_S = 300  # WeChat Pay's own rule: answers older than 5 minutes are replays


def signature_message(method: str, url: str, timestamp: str, nonce: str, body: str = "") -> bytes:
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n".encode()


def response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


@dataclass(eq=False, kw_only=True)
class WechatPayAdapter(HttpAdapter):
    name = "wechatpay"

    mchid: str
    serial_no: str
    private_key: str = field(repr=False)
    platform_key: str = field(repr=False)
    platform_serial: str
    sub_mchid: str | None = None

    @classmethod
    def from_settings(cls, base_url: str, timeout_s: float, s: WechatPaySettings) -> WechatPayAdapter:
        key = require_secret("WeChat Pay private key", s.private_key_env, s.private_key_file)
        platform = require_secret(
            "WeChat Pay platform certificate or public key", s.platform_key_env, s.platform_key_file
        )
        return cls(
            base_url,
            timeout_s,
            mchid=s.mchid,
            serial_no=s.serial_no,
            private_key=key,
            platform_key=platform,
            platform_serial=s.platform_serial,
            sub_mchid=s.sub_mchid,
        )

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        out_trade_no = quote(request.attempt_id, safe="")
        if self.sub_mchid:
            query = f"sp_mchid={quote(self.mchid)}&sub_mchid={quote(self.sub_mchid)}"
            path = f"/v3/pay/partner/transactions/out-trade-no/{out_trade_no}?{query}"
        else:
            path = f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={quote(self.mchid)}"
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16).upper()
        signature = rsa_sha256_sign(self.private_key, signature_message("GET", path, timestamp, nonce))
        auth = (
            f'{AUTH_SCHEME} mchid="{self.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{self.serial_no}"'
        )
        summary = {"method": "GET", "url": self.base_url + path, "out_trade_no": request.attempt_id}
        return self._request("GET", path, headers={"Authorization": auth}), summary

    def verify(self, response: httpx.Response) -> str | None:
        h = response.headers
        timestamp, nonce = h.get("Wechatpay-Timestamp", ""), h.get("Wechatpay-Nonce", "")
        signature, serial = h.get("Wechatpay-Signature", ""), h.get("Wechatpay-Serial", "")
        if not (timestamp and nonce and signature and serial):
            return "answer carries no Wechatpay-Signature"
        if self.platform_serial and serial.upper() != self.platform_serial.upper():
            return f"answer signed by platform key {serial!r}, not the configured {self.platform_serial!r}"
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return f"Wechatpay-Timestamp {timestamp!r} is more than {MAX_SKEW_S} s from now"
        if not rsa_sha256_verify(self.platform_key, response_message(timestamp, nonce, response.content), signature):
            return "Wechatpay-Signature does not verify with the platform key"
        return None

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        code = body.get("code") if isinstance(body, dict) else None
        if status == 404 and code == "ORDER_NOT_EXIST":
            return QueryResult(request, "unknown", channel_status=code, not_found=True)
        if status in (401, 403) or code in CREDENTIAL_CODES:
            return QueryResult(request, "unknown", credentials=str(code or f"HTTP {status}"), error=_message(body))
        if status != 200 or not isinstance(body, dict):
            return QueryResult(request, "unknown", api_failed=True, error=f"HTTP {status} {code or ''}".strip())
        state = str(body["trade_state"])
        outcome, unknown = mapped(TRADE_STATES, state, request.channel)
        amount = body.get("amount") or {}
        return QueryResult(
            request,
            outcome,
            channel_status=state,
            unknown_status=unknown,
            # SUCCESS: nothing refunded. REFUND: some or all of it was; how much needs a refund
            # query by out_refund_no, which paywatch does not know, so the amount stays unknown.
            refunded=state == "REFUND",
            refunded_minor=0 if state == "SUCCESS" else None,
            amount_minor=amount.get("total"),
            currency=amount.get("currency"),
            echo=body.get("out_trade_no"),
        )


def _message(body: Any) -> str | None:
    return str(body.get("message"))[:300] if isinstance(body, dict) and body.get("message") else None
