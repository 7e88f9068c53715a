"""Local fakes of the channels' order-query APIs, speaking each provider's documented
request and response shapes: WeChat Pay API v3 (`GET /v3/pay/transactions/out-trade-no/
{out_trade_no}?mchid=`, and the partner `/v3/pay/partner/transactions/…?sp_mchid=&sub_mchid=`),
Alipay (`alipay.trade.query` on `POST /gateway.do`) and Stripe (`GET /v1/payment_intents/{id}`
and `/v1/payment_intents/search`, with `expand[]=latest_charge`).

They answer from a ground-truth lookup (attempt id → `ChannelRecord`, or None when the
channel has no record), so the simulator, the demo and the compensation tests share one
implementation. Realism knobs: response lag, "not found" for the first N queries of each
attempt (records that have not landed yet), scripted errors (the provider's own
system-error answer, a bare 503, a 429 with Retry-After, a credentials refusal), partial
refunds, forged answers, request-signature checks when given the merchant public key or
secret, and a timestamped log of every request so a test can prove a client's rate limit at
the server.

Like the real platforms, the fakes sign every answer: WeChat Pay with `Wechatpay-Signature`
over "TIMESTAMP\\nNONCE\\nBODY\\n", Alipay with `sign` over the response object's bytes, each
with the server's platform key (`platform_public_key` is what a client must be configured
with). The signing and verifying here is the fakes' own code, written from the providers'
documentation: it never imports the adapters', so a signing bug cannot pass on both sides.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from paywatch.simulator.truth import ChannelRecord

Provider = Literal["wechatpay", "alipay", "stripe"]
ErrorKind = Literal["error", "unavailable", "throttle", "credentials"]
# How a forged answer differs from the truth: unsigned, signed with another key, about
# another attempt, or for another amount (each still signed with the platform key).
Forgery = Literal["unsigned", "wrong_key", "other_attempt", "other_amount"]
TruthLookup = Callable[[str], ChannelRecord | None]
CST = timezone(timedelta(hours=8))

WECHAT_STATES = {"paid": "SUCCESS", "refunded": "REFUND", "pending": "NOTPAY", "closed": "CLOSED", "failed": "PAYERROR"}
WECHAT_DESC = {
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "NOTPAY": "未支付",
    "CLOSED": "已关闭",
    "PAYERROR": "支付失败",
}
ALIPAY_STATES = {"paid": "TRADE_SUCCESS", "pending": "WAIT_BUYER_PAY", "closed": "TRADE_CLOSED"}
ALIPAY_STATES |= {"failed": "TRADE_CLOSED", "refunded": "TRADE_CLOSED"}
STRIPE_STATES = {"paid": "succeeded", "refunded": "succeeded", "pending": "requires_payment_method"}
STRIPE_STATES |= {"failed": "requires_payment_method", "closed": "canceled"}


@dataclass(frozen=True)
class RecordedRequest:
    at: float  # the server's clock (time.monotonic() unless given) when the request arrived
    attempt_id: str | None
    status: int
    headers: dict[str, str] | None = None
    target: str = ""
    params: dict[str, str] | None = None  # Alipay's form parameters


def _digits(seed: str, n: int) -> str:
    return str(int(hashlib.sha256(seed.encode()).hexdigest(), 16))[:n]


def _verify_rsa(public_key_pem: str, message: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_public_key(public_key_pem.encode())
    try:
        key.verify(base64.b64decode(signature_b64), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=4)
def _load_private(private_key_pem: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(private_key_pem.encode(), password=None)


def _sign_rsa(private_key_pem: str, message: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _load_private(private_key_pem)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()  # type: ignore[union-attr]


# The fakes' own reading of the providers' signing rules (WeChat Pay v3 "签名生成", Alipay
# "自行实现签名"), kept apart from the adapters' on purpose.
def wechat_request_string(method: str, url: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """WeChat Pay v3 request signing string: five lines, each ending in \\n."""
    return b"".join(part + b"\n" for part in (method.encode(), url.encode(), timestamp.encode(), nonce.encode(), body))


def alipay_request_string(form: dict[str, str]) -> bytes:
    """Alipay RSA2 request signing string: every non-empty parameter but `sign`, by name."""
    pairs = sorted((k, v) for k, v in form.items() if k != "sign" and v)
    return "&".join(k + "=" + v for k, v in pairs).encode()


def merchant_keypair() -> tuple[str, str]:
    """A fresh RSA-2048 merchant keypair (private PKCS#8 PEM, public PEM): the client signs
    with the private key, a fake server given the public key checks every signature."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


class ChannelApiServer:
    """One provider's query API on 127.0.0.1 (a thread; `with` starts and stops it)."""

    def __init__(
        self,
        provider: Provider,
        truth: TruthLookup,
        *,
        lag_s: float = 0.0,
        not_found_first: int = 0,
        public_key: str | None = None,
        secret_key: str | None = None,
        platform_key: tuple[str, str] | None = None,
        platform_serial: str = "PUB_KEY_ID_0112345678202411260000000000000001",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.clock = clock
        self.truth = truth
        self.lag_s = lag_s
        self.not_found_first = not_found_first
        self.public_key = public_key  # merchant/app public key: verify request signatures
        self.secret_key = secret_key  # Stripe: the only accepted bearer key
        # The platform's own keypair (private, public): signs every answer.
        self.platform_private_key, self.platform_public_key = platform_key or merchant_keypair()
        self.platform_serial = platform_serial
        self.refunded_minor: dict[str, int] = {}  # attempt id → amount refunded so far (partial refunds)
        self.forge: Forgery | None = None
        self.requests: list[RecordedRequest] = []
        self._errors: deque[tuple[ErrorKind, float | None]] = deque()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ChannelApiServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake-{self.provider}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() of a server that never served would wait forever
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ChannelApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, n: int, kind: ErrorKind = "error", retry_after_s: float | None = None) -> None:
        """Answer the next `n` requests with an error: `error` = the provider's own system-error
        answer, `unavailable` = a bare HTTP 503, `throttle` = 429 (with Retry-After if given),
        `credentials` = the provider's refusal of the caller's key or permission."""
        with self._lock:
            self._errors.extend([(kind, retry_after_s)] * n)

    def transport(self) -> httpx.MockTransport:
        """The same API in-process, without sockets: for bursts too large to push through
        loopback quickly (answers are identical; `lag_s` must be 0 here, it would block)."""

        def serve(request: httpx.Request) -> httpx.Response:
            target = request.url.raw_path.decode()
            status, extra, payload = self.handle(request.method, target, request.headers, request.content)
            return httpx.Response(status, headers=extra, content=payload)

        return httpx.MockTransport(serve)

    def max_in_window(self, window_s: float = 1.0) -> int:
        """The most requests that arrived inside any window of `window_s` seconds."""
        times = sorted(r.at for r in self.requests)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def count(self, attempt_id: str | None = None) -> int:
        return sum(1 for r in self.requests if attempt_id is None or r.attempt_id == attempt_id)

    # -- protocol --------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One request → (status, headers, body bytes): the body is serialised once, here,
        so that the signature covers exactly the bytes the client receives."""
        arrived = self.clock()
        attempt_id, params = self._parse(method, target, body)
        status, extra, payload = self._answer(method, target, headers, body, attempt_id, params)
        if isinstance(payload, str):
            raw = payload.encode()
            extra = {"Content-Type": "text/plain", **extra}
        else:
            raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            if self.provider == "alipay" and isinstance(payload, dict):
                raw = self._alipay_signed(payload)
            extra = {"Content-Type": "application/json; charset=utf-8", **extra}
        if self.provider == "wechatpay" and not isinstance(payload, str):
            extra |= self._wechat_signature(raw)
        with self._lock:
            self.requests.append(
                RecordedRequest(arrived, attempt_id, status, {k.lower(): v for k, v in headers.items()}, target, params)
            )
        return status, extra, raw

    def _parse(self, method: str, target: str, body: bytes) -> tuple[str | None, dict[str, str]]:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if self.provider == "wechatpay":
            m = re.fullmatch(r"/v3/pay/(?:partner/)?transactions/out-trade-no/([^/]+)", parts.path)
            return (unquote(m.group(1)) if m else None), query
        if self.provider == "stripe":
            if parts.path == "/v1/payment_intents/search":
                m = re.fullmatch(r"metadata\['([^']+)'\]:'((?:[^'\\]|\\.)*)'", query.get("query", ""))
                return (re.sub(r"\\(.)", r"\1", m.group(2)) if m else None), query
            m = re.fullmatch(r"/v1/payment_intents/([^/]+)", parts.path)
            return (unquote(m.group(1)) if m else None), query
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        try:
            return json.loads(form.get("biz_content", "{}")).get("out_trade_no"), form
        except ValueError:
            return None, form

    def _answer(
        self, method: str, target: str, headers: Any, body: bytes, attempt_id: str | None, params: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        if self.provider == "wechatpay" and not (headers.get("User-Agent") and headers.get("Accept")):
            return 400, {}, {"code": "INVALID_REQUEST", "message": "Http头缺少Accept或User-Agent"}
        with self._lock:
            error = self._errors.popleft() if self._errors else None
        if error is not None:
            return self._error(*error)
        if attempt_id is None:
            return 404, {}, {"message": "no such endpoint"}
        denied = self._check_auth(method, target, headers, body, params)
        if denied is not None:
            return denied
        if self.lag_s:
            time.sleep(self.lag_s)
        with self._lock:
            self._seen[attempt_id] += 1
            early = self._seen[attempt_id] <= self.not_found_first
        record = None if early else self.truth(attempt_id)
        if self.provider == "alipay" and params.get("method") == "alipay.trade.fastpay.refund.query":
            return self._alipay_refund(record, params)
        if record is None:
            return self._not_found(attempt_id, target)
        if self.forge == "other_attempt":
            record = replace(record, attempt_id=record.attempt_id + "-other")
        elif self.forge == "other_amount":
            record = replace(record, amount_minor=record.amount_minor + 100)
        return self._found(record, target, params)

    def _error(self, kind: ErrorKind, retry_after_s: float | None) -> tuple[int, dict[str, str], Any]:
        if kind == "unavailable":
            return 503, {}, "503 Service Unavailable"
        if kind == "throttle":
            extra = {"Retry-After": f"{retry_after_s:g}"} if retry_after_s is not None else {}
            body: Any = {
                "wechatpay": {"code": "FREQUENCY_LIMITED", "message": "频率超限"},
                "stripe": {
                    "error": {"code": "rate_limit", "message": "Too many requests", "type": "invalid_request_error"}
                },
                "alipay": {"alipay_trade_query_response": {"code": "20000", "msg": "Service Currently Unavailable"}},
            }[self.provider]
            return 429, extra, body
        if kind == "credentials":
            return self._refused()
        if self.provider == "alipay":  # the gateway reports its own failure in a 200 answer
            answer = {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"}
            return 200, {}, {"alipay_trade_query_response": answer | {"sub_msg": "系统繁忙"}}
        if self.provider == "wechatpay":
            return 500, {}, {"code": "SYSTEM_ERROR", "message": "系统错误"}
        return 500, {}, {"error": {"message": "An unknown error occurred", "type": "api_error"}}

    def _refused(self) -> tuple[int, dict[str, str], Any]:
        """The provider's own answer to a caller whose key or signature it does not accept."""
        if self.provider == "wechatpay":
            return 401, {}, {"code": "SIGN_ERROR", "message": "签名错误"}
        if self.provider == "stripe":
            message = "Invalid API Key provided"
            return 401, {}, {"error": {"message": message, "type": "invalid_request_error"}}
        answer = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature"}
        return 200, {}, {"error_response": answer | {"sub_msg": "验签出错"}}

    def _check_auth(
        self, method: str, target: str, headers: Any, body: bytes, params: dict[str, str]
    ) -> tuple[int, dict[str, str], Any] | None:
        if self.provider == "stripe":
            if self.secret_key is not None and headers.get("Authorization") != f"Bearer {self.secret_key}":
                return self._refused()
            return None
        if self.public_key is None:
            return None
        if self.provider == "wechatpay":
            scheme, _, rest = (headers.get("Authorization") or "").partition(" ")
            fields = {k: v.strip('"') for k, _, v in (item.partition("=") for item in rest.split(","))}
            message = wechat_request_string(
                method, target, fields.get("timestamp", ""), fields.get("nonce_str", ""), body
            )
            if scheme != "WECHATPAY2-SHA256-RSA2048" or not _verify_rsa(
                self.public_key, message, fields.get("signature", "")
            ):
                return self._refused()
            return None
        if not _verify_rsa(self.public_key, alipay_request_string(params), params.get("sign", "")):
            return self._refused()
        return None

    def _not_found(self, attempt_id: str, target: str) -> tuple[int, dict[str, str], Any]:
        if self.provider == "wechatpay":
            return 404, {}, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
        if self.provider == "stripe":
            if urlsplit(target).path.endswith("/search"):
                return 200, {}, {"object": "search_result", "data": [], "has_more": False, "next_page": None}
            return (
                404,
                {},
                {
                    "error": {
                        "code": "resource_missing",
                        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
                        "message": f"No such payment_intent: '{attempt_id}'",
                        "param": "intent",
                        "type": "invalid_request_error",
                    }
                },
            )
        answer = {
            "code": "40004",
            "msg": "Business Failed",
            "sub_code": "ACQ.TRADE_NOT_EXIST",
            "sub_msg": "交易不存在",
            "buyer_pay_amount": "0.00",
            "invoice_amount": "0.00",
            "out_trade_no": attempt_id,
            "point_amount": "0.00",
            "receipt_amount": "0.00",
        }
        return 200, {}, {"alipay_trade_query_response": answer}

    def _found(self, r: ChannelRecord, target: str, params: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        status = str(r.status)
        paid = status in ("paid", "refunded")
        refunded = r.amount_minor if status == "refunded" else self.refunded_minor.get(r.attempt_id, 0)
        if self.provider == "wechatpay":
            return 200, {}, self._wechat_transaction(r, status, paid, refunded, target)
        if self.provider == "stripe":
            pi = self._stripe_intent(r, status, paid, refunded)
            if urlsplit(target).path.endswith("/search"):
                return 200, {}, {"object": "search_result", "data": [pi], "has_more": False, "next_page": None}
            return 200, {}, pi
        amount = f"{r.amount_minor / 100:.2f}"
        # Alipay: a full refund closes the trade; a partial one leaves it TRADE_SUCCESS.
        trade_status = "TRADE_CLOSED" if paid and refunded >= r.amount_minor else ALIPAY_STATES.get(status, "")
        answer = {
            "code": "10000",
            "msg": "Success",
            "trade_no": (r.created_at.astimezone(CST).strftime("%Y%m%d") + "2200" + _digits(r.attempt_id, 16)),
            "out_trade_no": r.attempt_id,
            "buyer_logon_id": "159****5620",
            "trade_status": trade_status or "WAIT_BUYER_PAY",
            "total_amount": amount,
            "buyer_pay_amount": amount if paid else "0.00",
            "receipt_amount": amount if paid else "0.00",
        }
        if paid:
            answer["send_pay_date"] = (r.paid_at or r.created_at).astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
        return 200, {}, {"alipay_trade_query_response": answer}

    def _alipay_refund(self, r: ChannelRecord | None, params: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """`alipay.trade.fastpay.refund.query`: the refunds the fake knows are made under the
        default request number (the out_trade_no); any other number has no refund."""
        biz = json.loads(params.get("biz_content") or "{}")
        key = "alipay_trade_fastpay_refund_query_response"
        if r is None:
            answer = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"}
            return 200, {}, {key: answer}
        answer = {"code": "10000", "msg": "Success", "out_trade_no": r.attempt_id}
        answer |= {"out_request_no": biz.get("out_request_no", ""), "total_amount": f"{r.amount_minor / 100:.2f}"}
        refunded = r.amount_minor if r.status == "refunded" else self.refunded_minor.get(r.attempt_id, 0)
        if refunded and biz.get("out_request_no") == r.attempt_id:
            answer |= {"refund_amount": f"{refunded / 100:.2f}", "refund_status": "REFUND_SUCCESS"}
        return 200, {}, {key: answer}

    def _wechat_transaction(self, r: ChannelRecord, status: str, paid: bool, refunded: int, target: str) -> dict:
        state = "REFUND" if paid and refunded else WECHAT_STATES.get(status, "NOTPAY")
        body: dict[str, Any] = {"appid": "wxd678efh567hg6787"}
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        if "/partner/" in target:
            body |= {"sp_mchid": query.get("sp_mchid", ""), "sub_mchid": query.get("sub_mchid", "")}
        else:
            body["mchid"] = query.get("mchid", "")
        body |= {
            "out_trade_no": r.attempt_id,
            "trade_type": "NATIVE",
            "trade_state": state,
            "trade_state_desc": WECHAT_DESC[state],
            "attach": "",
            "amount": {"total": r.amount_minor, "currency": r.currency},
        }
        if paid:
            body["transaction_id"] = "42" + _digits(r.attempt_id, 26)
            body["bank_type"] = "OTHERS"
            body["success_time"] = (r.paid_at or r.created_at).astimezone(CST).isoformat(timespec="seconds")
            body["payer"] = {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
            body["amount"] |= {"payer_total": r.amount_minor, "payer_currency": r.currency}
        return body

    def _stripe_intent(self, r: ChannelRecord, status: str, paid: bool, refunded: int) -> dict:
        pi_status = STRIPE_STATES.get(status, "requires_payment_method")
        last_error = None
        if status == "failed":
            last_error = {"code": r.error_code or "card_declined", "type": "card_error", "message": "Declined."}
        charge = None
        if paid:
            charge = {
                "id": "ch_" + _digits(r.attempt_id, 24),
                "object": "charge",
                "amount": r.amount_minor,
                "amount_captured": r.amount_minor,
                "amount_refunded": refunded,
                "captured": True,
                "currency": r.currency.lower(),
                "paid": True,
                "refunded": refunded >= r.amount_minor,
                "status": "succeeded",
            }
        return {
            "id": r.attempt_id,
            "object": "payment_intent",
            "amount": r.amount_minor,
            "amount_capturable": 0,
            "amount_received": r.amount_minor if paid else 0,
            "canceled_at": int(r.closed_at.timestamp()) if status == "closed" and r.closed_at else None,
            "cancellation_reason": "abandoned" if status == "closed" else None,
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "created": int(r.created_at.timestamp()),
            "currency": r.currency.lower(),
            "last_payment_error": last_error,
            "latest_charge": charge,
            "livemode": False,
            "metadata": {"order_id": r.attempt_id, "platform_order": r.order_id},
            "status": pi_status,
        }

    def _wechat_signature(self, raw: bytes) -> dict[str, str]:
        """WeChat Pay signs every answer: SHA256withRSA over "TIMESTAMP\nNONCE\nBODY\n"."""
        if self.forge == "unsigned":
            return {}
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex.upper()
        key = merchant_keypair()[0] if self.forge == "wrong_key" else self.platform_private_key
        message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + raw + b"\n"
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": self.platform_serial,
            "Wechatpay-Signature": _sign_rsa(key, message),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Request-ID": str(uuid.uuid4()),
        }

    def _alipay_signed(self, payload: dict[str, Any]) -> bytes:
        """`{"<method>_response": {...}, "sign": "..."}`, the sign over the object's exact bytes;
        the gateway's `error_response` is not signed."""
        ((key, answer),) = payload.items()
        obj = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        if key == "error_response" or self.forge == "unsigned":
            return f'{{"{key}":{obj}}}'.encode()
        private = merchant_keypair()[0] if self.forge == "wrong_key" else self.platform_private_key
        sign = _sign_rsa(private, obj.encode())
        return f'{{"{key}":{obj},"sign":"{sign}"}}'.encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One segment per answer, sent at once: headers and body written separately would
            # meet Nagle and delayed ACK and cost ~40 ms a request on loopback.
            wbufsize = -1
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, extra, raw = api.handle(self.command, self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("Date", datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
                pass

        return Handler
