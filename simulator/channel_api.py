"""Local fakes of the channels' order-query APIs, speaking each provider's documented
request and response shapes: WeChat Pay API v3 (`GET /v3/pay/transactions/out-trade-no/
{out_trade_no}?mchid=`), Alipay (`alipay.trade.query` on `POST /gateway.do`) and Stripe
(`GET /v1/payment_intents/{id}`).

They answer from a ground-truth lookup (attempt id → `ChannelRecord`, or None when the
channel has no record), so the simulator, the demo and the compensation tests share one
implementation. Realism knobs: response lag, "not found" for the first N queries of each
attempt (records that have not landed yet), scripted errors (the provider's own
system-error answer, a bare 503, a 429 with Retry-After), signature/key checks when given
the public key or secret, and a timestamped log of every request so a test can prove a
client's rate limit at the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from paywatch.compensation.alipay import signing_content
from paywatch.compensation.wechatpay import AUTH_SCHEME, signature_message
from paywatch.simulator.truth import ChannelRecord

Provider = Literal["wechatpay", "alipay", "stripe"]
ErrorKind = Literal["error", "unavailable", "throttle"]
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
        answer, `unavailable` = a bare HTTP 503, `throttle` = 429 (with Retry-After if given)."""
        with self._lock:
            self._errors.extend([(kind, retry_after_s)] * n)

    def transport(self) -> httpx.MockTransport:
        """The same API in-process, without sockets: for bursts too large to push through
        loopback quickly (answers are identical; `lag_s` must be 0 here, it would block)."""

        def serve(request: httpx.Request) -> httpx.Response:
            target = request.url.raw_path.decode()
            status, extra, payload = self.handle(request.method, target, request.headers, request.content)
            if isinstance(payload, str):
                return httpx.Response(status, headers=extra, text=payload)
            return httpx.Response(status, headers=extra, json=payload)

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
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        arrived = self.clock()
        attempt_id, params = self._parse(method, target, body)
        status, extra, payload = self._answer(method, target, headers, attempt_id, params)
        with self._lock:
            self.requests.append(RecordedRequest(arrived, attempt_id, status))
        return status, extra, payload

    def _parse(self, method: str, target: str, body: bytes) -> tuple[str | None, dict[str, str]]:
        path = urlsplit(target).path
        if self.provider == "wechatpay":
            m = re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)", path)
            return (unquote(m.group(1)) if m else None), {}
        if self.provider == "stripe":
            m = re.fullmatch(r"/v1/payment_intents/([^/]+)", path)
            return (unquote(m.group(1)) if m else None), {}
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        try:
            return json.loads(form.get("biz_content", "{}")).get("out_trade_no"), form
        except ValueError:
            return None, form

    def _answer(
        self, method: str, target: str, headers: Any, attempt_id: str | None, params: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            error = self._errors.popleft() if self._errors else None
        if error is not None:
            return self._error(*error)
        if attempt_id is None:
            return 404, {}, {"message": "no such endpoint"}
        denied = self._check_auth(method, target, headers, params)
        if denied is not None:
            return denied
        if self.lag_s:
            time.sleep(self.lag_s)
        with self._lock:
            self._seen[attempt_id] += 1
            early = self._seen[attempt_id] <= self.not_found_first
        record = None if early else self.truth(attempt_id)
        if record is None:
            return self._not_found(attempt_id)
        return self._found(record)

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
        if self.provider == "alipay":  # the gateway reports its own failure in a 200 answer
            return (
                200,
                {},
                self._alipay_envelope(
                    {
                        "code": "20000",
                        "msg": "Service Currently Unavailable",
                        "sub_code": "isp.unknow-error",
                        "sub_msg": "系统繁忙",
                    }
                ),
            )
        if self.provider == "wechatpay":
            return 500, {}, {"code": "SYSTEM_ERROR", "message": "系统错误"}
        return 500, {}, {"error": {"message": "An unknown error occurred", "type": "api_error"}}

    def _check_auth(
        self, method: str, target: str, headers: Any, params: dict[str, str]
    ) -> tuple[int, dict[str, str], Any] | None:
        if self.provider == "stripe":
            if self.secret_key is not None and headers.get("Authorization") != f"Bearer {self.secret_key}":
                message = "Invalid API Key provided"
                return 401, {}, {"error": {"message": message, "type": "invalid_request_error"}}
            return None
        if self.public_key is None:
            return None
        if self.provider == "wechatpay":
            auth = headers.get("Authorization") or ""
            fields = dict(re.findall(r'(\w+)="([^"]*)"', auth))
            message = signature_message(method, target, fields.get("timestamp", ""), fields.get("nonce_str", ""))
            if not auth.startswith(AUTH_SCHEME + " ") or not _verify_rsa(
                self.public_key, message, fields.get("signature", "")
            ):
                return 401, {}, {"code": "SIGN_ERROR", "message": "签名错误"}
            return None
        if not _verify_rsa(self.public_key, signing_content(params), params.get("sign", "")):
            return (
                200,
                {},
                self._alipay_envelope(
                    {
                        "code": "40002",
                        "msg": "Invalid Arguments",
                        "sub_code": "isv.invalid-signature",
                        "sub_msg": "验签出错",
                    }
                ),
            )
        return None

    def _not_found(self, attempt_id: str) -> tuple[int, dict[str, str], Any]:
        if self.provider == "wechatpay":
            return 404, {}, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
        if self.provider == "stripe":
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
        return (
            200,
            {},
            self._alipay_envelope(
                {
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
            ),
        )

    def _found(self, r: ChannelRecord) -> tuple[int, dict[str, str], Any]:
        status = str(r.status)
        paid = status in ("paid", "refunded")
        if self.provider == "wechatpay":
            state = WECHAT_STATES.get(status, "NOTPAY")
            body: dict[str, Any] = {
                "appid": "wxd678efh567hg6787",
                "mchid": "1230000109",
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
            return 200, {}, body
        if self.provider == "stripe":
            pi_status = STRIPE_STATES.get(status, "requires_payment_method")
            last_error = None
            if status == "failed":
                last_error = {
                    "code": r.error_code or "card_declined",
                    "type": "card_error",
                    "message": "Your card was declined.",
                }
            return (
                200,
                {},
                {
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
                    "latest_charge": ("ch_" + _digits(r.attempt_id, 24)) if paid else None,
                    "livemode": False,
                    "metadata": {"order_id": r.order_id},
                    "status": pi_status,
                },
            )
        amount = f"{r.amount_minor / 100:.2f}"
        answer = {
            "code": "10000",
            "msg": "Success",
            "trade_no": (r.created_at.astimezone(CST).strftime("%Y%m%d") + "2200" + _digits(r.attempt_id, 16)),
            "out_trade_no": r.attempt_id,
            "buyer_logon_id": "159****5620",
            "trade_status": ALIPAY_STATES.get(status, "WAIT_BUYER_PAY"),
            "total_amount": amount,
            "buyer_pay_amount": amount if paid else "0.00",
            "receipt_amount": amount if paid else "0.00",
        }
        if paid:
            answer["send_pay_date"] = (r.paid_at or r.created_at).astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
        return 200, {}, self._alipay_envelope(answer)

    @staticmethod
    def _alipay_envelope(answer: dict[str, Any]) -> dict[str, Any]:
        # Alipay signs its answers with the platform key; the fake has none, so the sign is a
        # digest placeholder of the right kind (base64) that clients here do not verify.
        digest = hashlib.sha256(json.dumps(answer, sort_keys=True).encode()).digest()
        return {"alipay_trade_query_response": answer, "sign": base64.b64encode(digest).decode()}

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
                status, extra, payload = api.handle(self.command, self.path, self.headers, body)
                raw = payload.encode() if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(payload, str) else "application/json; charset=utf-8"
                self.send_header("Content-Type", ctype)
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
