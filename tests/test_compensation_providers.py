"""Compensating queries checked against the providers' own rules and independent implementations,
never against our own builders: the documentation's known-answer vectors, WeChat Pay's
`wechatpayv3` client and Alipay's `python-alipay-sdk` (which sign and verify as the platforms
do, and produce the signed answers our adapters must accept or reject), over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus

import httpx
import provider_vectors as v
import pytest
import structlog
from alipay import AliPay
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wechatpayv3.core import Core
from wechatpayv3.utils import build_authorization, load_private_key, rsa_sign

from paywatch import __version__
from paywatch.alerts.engine import AlertEngine
from paywatch.alerts.rules import load_rules
from paywatch.compensation import wechatpay as wechatpay_module
from paywatch.compensation.adapters import build_adapters
from paywatch.compensation.alipay import AlipayAdapter, signed_substring, signing_content
from paywatch.compensation.channels import QueryRequest, QueryResult, rsa_sha256_sign, rsa_sha256_verify
from paywatch.compensation.engine import Compensator, Effects
from paywatch.compensation.executor import Executor, run_due
from paywatch.compensation.settings import BudgetSettings, ChannelQuerySettings, CompensationSettings, ScheduleSettings
from paywatch.compensation.stripe import StripeAdapter
from paywatch.compensation.wechatpay import WechatPayAdapter, response_message, signature_message
from paywatch.finding import AttemptEvidence, Evidence, FindingPayment, make_finding
from paywatch.simulator.channel_api import (
    ChannelApiServer,
    alipay_request_string,
    merchant_keypair,
    wechat_request_string,
)
from paywatch.simulator.truth import ChannelRecord

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MERCHANT = merchant_keypair()  # our key: requests are signed with it
PLATFORM = merchant_keypair()  # the platform's key: answers are signed with it
OTHER = merchant_keypair()  # somebody else's key
SERIAL = "PUB_KEY_ID_0114232134912410000000000000000001"
MCHID, MERCHANT_SERIAL = "1900007291", "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
APP_ID = "2014072300007148"
STRIPE_KEY = "sk_test_51PaywatchProviderTests"
AMOUNT = 8888


@pytest.fixture
def keys_env(monkeypatch):
    monkeypatch.setenv("PAYWATCH_WECHATPAY_PRIVATE_KEY", MERCHANT[0])
    monkeypatch.setenv("PAYWATCH_ALIPAY_PRIVATE_KEY", MERCHANT[0])
    monkeypatch.setenv("PAYWATCH_WECHATPAY_PLATFORM_KEY", PLATFORM[1])
    monkeypatch.setenv("PAYWATCH_ALIPAY_PUBLIC_KEY", PLATFORM[1])
    monkeypatch.setenv("PAYWATCH_STRIPE_SECRET_KEY", STRIPE_KEY)


class ScriptedServer:
    """A loopback HTTP server that answers with exactly the bytes and headers it is given
    (answers produced and signed by the providers' own libraries), and records requests."""

    def __init__(self) -> None:
        self.answers: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, raw = server.answers.popleft()
                self.send_response(status)
                for k, val in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, val)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve

            def log_message(self, *a) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.stop()


def request(channel: str, attempt: str = "att-1", purposes=("status",), amount: int | None = AMOUNT) -> QueryRequest:
    return QueryRequest(channel, "order-1", attempt, 1, purposes, T0, amount_minor=amount, currency="CNY")


def ask(adapter, req: QueryRequest) -> QueryResult:
    async def go() -> QueryResult:
        async with httpx.AsyncClient() as client:
            return await adapter.query(client, req)

    return asyncio.run(go())


def wechat_adapter(url: str, **kw) -> WechatPayAdapter:
    return WechatPayAdapter(
        url,
        5,
        mchid=MCHID,
        serial_no=MERCHANT_SERIAL,
        private_key=MERCHANT[0],
        platform_key=PLATFORM[1],
        platform_serial=SERIAL,
        **kw,
    )


def alipay_adapter(url: str, **kw) -> AlipayAdapter:
    return AlipayAdapter(url, 5, app_id=APP_ID, private_key=MERCHANT[0], alipay_public_key=PLATFORM[1], **kw)


# -- known answers from the providers' documentation ---------------------------------------------
def test_wechatpay_signing_reproduces_the_documented_example():
    assert signature_message("GET", "/v3/certificates", v.WECHAT_DOC_TIMESTAMP, v.WECHAT_DOC_NONCE) == (
        v.WECHAT_DOC_GET_STRING
    )
    message = signature_message(
        "POST", "/v3/pay/transactions/jsapi", v.WECHAT_DOC_TIMESTAMP, v.WECHAT_DOC_NONCE, v.WECHAT_DOC_BODY
    )
    assert rsa_sha256_sign(v.WECHAT_DOC_PRIVATE_KEY, message) == v.WECHAT_DOC_SIGNATURE
    # the fake server's own reading of the rule gives the same documented string
    assert wechat_request_string("GET", "/v3/certificates", v.WECHAT_DOC_TIMESTAMP, v.WECHAT_DOC_NONCE, b"") == (
        v.WECHAT_DOC_GET_STRING
    )


def test_wechatpay_answer_verification_accepts_the_documented_answer_and_nothing_else():
    def ok(body: bytes, signature: str = v.WECHAT_ANSWER_SIGNATURE) -> bool:
        msg = response_message(v.WECHAT_ANSWER_TIMESTAMP, v.WECHAT_ANSWER_NONCE, body)
        return rsa_sha256_verify(v.WECHAT_ANSWER_PUBLIC_KEY, msg, signature)

    assert ok(v.WECHAT_ANSWER_BODY)
    assert not ok(v.WECHAT_ANSWER_BODY.replace(b"JyC91EIz1", b"JyC91EIz2"))
    assert not ok(v.WECHAT_ANSWER_BODY, signature=v.WECHAT_DOC_SIGNATURE)
    assert not ok(v.WECHAT_ANSWER_BODY, signature="not base64!")


def test_alipay_signing_string_reproduces_the_documented_example():
    assert signing_content(v.ALIPAY_DOC_PARAMS) == v.ALIPAY_DOC_STRING
    assert alipay_request_string(v.ALIPAY_DOC_PARAMS) == v.ALIPAY_DOC_STRING  # the fake's own code


# -- our requests, as the providers' own clients build them --------------------------------------
@pytest.mark.parametrize("sub_mchid", [None, "1900000109"])
def test_wechatpay_authorization_is_byte_identical_to_wechatpayv3(monkeypatch, sub_mchid):
    import wechatpayv3.utils

    frozen = 1764150000
    monkeypatch.setattr(wechatpay_module.time, "time", lambda: frozen)
    monkeypatch.setattr(wechatpayv3.utils.time, "time", lambda: frozen)
    adapter = wechat_adapter("https://api.mch.weixin.qq.com", sub_mchid=sub_mchid)
    http_request, _ = adapter.build(request("wechatpay", "1217752501201407033233368018"))
    path = http_request.url.raw_path.decode()
    if sub_mchid:
        assert path == (
            "/v3/pay/partner/transactions/out-trade-no/1217752501201407033233368018"
            f"?sp_mchid={MCHID}&sub_mchid={sub_mchid}"
        )
    else:
        assert path == f"/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid={MCHID}"
    ours = http_request.headers["Authorization"]
    nonce = re.search(r'nonce_str="([^"]+)"', ours).group(1)
    theirs = build_authorization(path, "GET", MCHID, MERCHANT_SERIAL, load_private_key(MERCHANT[0]), nonce_str=nonce)
    assert ours == theirs
    assert http_request.headers["User-Agent"] == f"paywatch/{__version__}"
    assert http_request.headers["Accept"] == "application/json"


@pytest.mark.parametrize("token", [None, "201510BBaabdb44d8fd04607abf8d5931ec75D84"])
def test_alipay_request_sign_is_what_the_alipay_sdk_computes(token):
    adapter = alipay_adapter("https://openapi.alipay.com", app_auth_token=token)
    http_request, summary = adapter.build(request("alipay"))
    form = {k: vals[0] for k, vals in parse_qs(http_request.content.decode(), keep_blank_values=True).items()}
    assert (form.get("app_auth_token"), form["method"], json.loads(form["biz_content"])) == (
        token,
        "alipay.trade.query",
        {"out_trade_no": "att-1"},
    )
    assert "app_auth_token" not in json.dumps(summary)  # a credential stays out of the audit
    sdk = AliPay(APP_ID, app_private_key_string=MERCHANT[0], alipay_public_key_string=PLATFORM[1])
    unsigned = {k: val for k, val in form.items() if k != "sign"}
    signed = sdk.sign_data(dict(unsigned))
    assert unquote_plus(signed.rsplit("&sign=", 1)[1]) == form["sign"]
    assert http_request.headers["User-Agent"] == f"paywatch/{__version__}"


# -- answers produced by the providers' libraries: accepted when genuine, untrusted otherwise --------
def wechat_answer(body: dict, key: str = PLATFORM[0], serial: str = SERIAL, at: float | None = None, tamper=False):
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    timestamp, nonce = str(int(at if at is not None else time.time())), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    signature = rsa_sign(load_private_key(key), f"{timestamp}\n{nonce}\n{raw.decode()}\n")
    headers = {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    if tamper:
        raw = raw.replace(b'"NOTPAY"', b'"SUCCESS"')
    return 200, headers, raw


def wechat_transaction(state="SUCCESS", out_trade_no="att-1", total=AMOUNT) -> dict:
    return {
        "appid": "wxd678efh567hg6787",
        "mchid": MCHID,
        "out_trade_no": out_trade_no,
        "transaction_id": "1217752501201407033233368018",
        "trade_type": "NATIVE",
        "trade_state": state,
        "trade_state_desc": "支付成功",
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    }


# Built when the test runs, not at import: an answer is signed with the current time, and a
# collected-then-queued test would otherwise present a stale Wechatpay-Timestamp (> 300 s).
WECHAT_CASES = {
    "genuine": (lambda: wechat_answer(wechat_transaction()), None),
    "tampered body": (lambda: wechat_answer(wechat_transaction("NOTPAY"), tamper=True), "does not verify"),
    "other key": (lambda: wechat_answer(wechat_transaction(), key=OTHER[0]), "does not verify"),
    "unsigned": (lambda: (200, {}, json.dumps(wechat_transaction()).encode()), "no Wechatpay-Signature"),
    "other serial": (lambda: wechat_answer(wechat_transaction(), serial="PUB_KEY_ID_OTHER"), "platform key"),
    "replayed": (lambda: wechat_answer(wechat_transaction(), at=time.time() - 3600), "Wechatpay-Timestamp"),
    "other attempt": (lambda: wechat_answer(wechat_transaction(out_trade_no="att-2")), "not attempt"),
    "other amount": (lambda: wechat_answer(wechat_transaction(total=AMOUNT + 1)), "amount"),
}


@pytest.mark.parametrize("case", list(WECHAT_CASES))
def test_wechatpay_answers_signed_by_wechatpayv3(scripted, case):
    answer, why = WECHAT_CASES[case]
    scripted.answers.append(answer())
    result = ask(wechat_adapter(scripted.url), request("wechatpay"))
    if why is None:
        assert result.answered and (result.outcome, result.channel_status) == ("success", "SUCCESS")
        assert (result.amount_minor, result.refunded_minor) == (AMOUNT, 0)
    else:
        assert not result.answered and result.outcome == "unknown"
        assert why in (result.untrusted or ""), result.untrusted
        assert not result.api_failed  # an untrusted answer is no outage


def alipay_answer(obj: dict, key: str = PLATFORM[0], pretty=False, sign=True, reformat=False) -> tuple:
    """`{"alipay_trade_query_response": …, "sign": …}` signed by Alipay's SDK over the exact bytes."""
    text = json.dumps(obj, ensure_ascii=False, indent=2 if pretty else None)
    sdk = AliPay(APP_ID, app_private_key_string=key, alipay_public_key_string=PLATFORM[1])
    signature = sdk._sign(text)
    if reformat:  # same object, other bytes: the sign no longer covers them
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    raw = '{"alipay_trade_query_response": ' + text + (f', "sign": "{signature}"' if sign else "") + "}"
    return 200, {}, raw.encode()


def alipay_trade(status="TRADE_SUCCESS", out_trade_no="att-1", total="88.88", paid=True) -> dict:
    trade = {
        "code": "10000",
        "msg": "Success",
        "trade_no": "2013112011001004330000121536",
        "out_trade_no": out_trade_no,
        "trade_status": status,
        "total_amount": total,
    }
    if paid:
        trade["send_pay_date"] = "2026-11-22 18:00:03"
    return trade


ALIPAY_CASES = {
    "genuine": (alipay_answer(alipay_trade()), None),
    "genuine, spaced out": (alipay_answer(alipay_trade(), pretty=True), None),
    "re-serialised": (alipay_answer(alipay_trade(), pretty=True, reformat=True), "does not verify"),
    "other key": (alipay_answer(alipay_trade(), key=OTHER[0]), "does not verify"),
    "unsigned": (alipay_answer(alipay_trade(), sign=False), "no Alipay sign"),
    "other attempt": (alipay_answer(alipay_trade(out_trade_no="att-2")), "not attempt"),
    "other amount": (alipay_answer(alipay_trade(total="89.88")), "amount"),
}


@pytest.mark.parametrize("case", list(ALIPAY_CASES))
def test_alipay_answers_signed_by_the_alipay_sdk(scripted, case):
    answer, why = ALIPAY_CASES[case]
    scripted.answers.append(answer)
    result = ask(alipay_adapter(scripted.url), request("alipay"))
    if why is None:
        assert result.answered and (result.outcome, result.channel_status) == ("success", "TRADE_SUCCESS")
        assert (result.amount_minor, result.currency) == (AMOUNT, "CNY")
    else:
        assert not result.answered and why in (result.untrusted or ""), result.untrusted


def test_alipay_closed_after_payment_is_a_full_refund_and_closed_unpaid_a_failure(scripted):
    scripted.answers.append(alipay_answer(alipay_trade("TRADE_CLOSED")))
    scripted.answers.append(alipay_answer(alipay_trade("TRADE_CLOSED", paid=False)))
    adapter = alipay_adapter(scripted.url)
    refunded, closed = ask(adapter, request("alipay")), ask(adapter, request("alipay"))
    assert (refunded.outcome, refunded.refunded, refunded.refunded_minor) == ("success", True, AMOUNT)
    assert (closed.outcome, closed.refunded) == ("failure", False)


def test_alipay_error_envelope_is_parsed_and_named(scripted):
    error = {
        "code": "40002",
        "msg": "Invalid Arguments",
        "sub_code": "isv.invalid-app-id",
        "sub_msg": "无效的AppID参数",
    }
    scripted.answers.append((200, {}, json.dumps({"error_response": error}, ensure_ascii=False).encode()))
    result = ask(alipay_adapter(scripted.url), request("alipay"))
    assert result.credentials == "isv.invalid-app-id" and "无效的AppID参数" in (result.error or "")
    assert not result.api_failed


ALIPAY_SDK = AliPay(APP_ID, app_private_key_string=MERCHANT[0], alipay_public_key_string=PLATFORM[1])


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(st.characters(blacklist_characters='{}"\\', blacklist_categories=("Cs",)), min_size=1, max_size=8),
        st.one_of(st.text(st.characters(blacklist_characters="{}", blacklist_categories=("Cs",))), st.integers()),
        max_size=6,
    ),
    st.sampled_from([None, 0, 2]),
)
@example({"code": "10000", "trade_status": "TRADE_SUCCESS", "total_amount": "88.88"}, None)
@example({"sub_msg": "交易不存在", "code": "40004"}, 2)
def test_signed_substring_is_what_the_alipay_sdk_verifies(obj, indent):
    text = '{"alipay_trade_query_response":' + json.dumps(obj, ensure_ascii=False, indent=indent) + ',"sign":"x"}'
    assert signed_substring(text, "alipay_trade_query_response") == ALIPAY_SDK._get_string_to_be_signed(
        text, "alipay_trade_query_response"
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
TRADE_SHAPED = st.fixed_dictionaries(
    {"trade_state": JSON, "out_trade_no": JSON, "amount": JSON},
    optional={"code": JSON, "trade_status": JSON, "status": JSON, "object": JSON, "latest_charge": JSON},
)


PARSERS = [wechat_adapter("https://a"), alipay_adapter("https://a"), StripeAdapter("https://a", 5, secret_key="k")]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([200, 400, 401, 403, 404]), st.one_of(JSON, TRADE_SHAPED))
@example(200, {"trade_state": "ACCEPT", "out_trade_no": "att-1", "amount": {"total": 1}})
@example(200, {"object": "payment_intent", "id": "att-1", "status": "requires_source", "amount": 1, "currency": "usd"})
@example(200, {"alipay_trade_query_response": {"code": "10000", "trade_status": None}})
def test_answer_parsers_never_fail_in_an_unexpected_way(status, body):
    """Whatever a channel sends, a parser returns a result or raises what `query` turns into an
    unreadable-answer result; never anything that would escape into the executor."""
    for adapter in PARSERS:
        for candidate in (body, {"alipay_trade_query_response": body}):
            try:
                result = adapter.parse(request(adapter.name), status, candidate)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            assert result.outcome in ("success", "failure", "unknown")


# -- the fake servers, checked by the providers' clients ------------------------------------------
def truth_of(*records: ChannelRecord):
    table = {r.attempt_id: r for r in records}
    return table.get


def record(attempt: str, status="paid", amount=AMOUNT, currency="CNY") -> ChannelRecord:
    paid = T0 + timedelta(seconds=3) if status in ("paid", "refunded") else None
    return ChannelRecord("x", "order-1", attempt, amount, currency, T0, status, paid_at=paid)  # type: ignore[arg-type]


def test_fake_servers_sign_and_verify_as_the_providers_clients_do():
    truth = truth_of(record("att-1"))
    with (
        ChannelApiServer(
            "wechatpay", truth, public_key=MERCHANT[1], platform_key=PLATFORM, platform_serial=SERIAL
        ) as wx,
        ChannelApiServer("alipay", truth, public_key=MERCHANT[1], platform_key=PLATFORM) as ali,
    ):
        path = f"/v3/pay/transactions/out-trade-no/att-1?mchid={MCHID}"
        auth = build_authorization(path, "GET", MCHID, MERCHANT_SERIAL, load_private_key(MERCHANT[0]))
        headers = {"Authorization": auth, "Accept": "application/json", "User-Agent": "wechatpayv3"}
        answer = httpx.get(wx.url + path, headers=headers)
        assert answer.status_code == 200 and answer.json()["trade_state"] == "SUCCESS"
        core = Core(MCHID, MERCHANT_SERIAL, MERCHANT[0], "0" * 32, public_key=PLATFORM[1], public_key_id=SERIAL)
        assert core._verify_signature(answer.headers, answer.text)
        bad = build_authorization(path, "GET", MCHID, MERCHANT_SERIAL, load_private_key(OTHER[0]))
        assert httpx.get(wx.url + path, headers={**headers, "Authorization": bad}).json()["code"] == "SIGN_ERROR"

        sdk = AliPay(APP_ID, app_private_key_string=MERCHANT[0], alipay_public_key_string=PLATFORM[1])
        body = sdk.sign_data(sdk.build_body("alipay.trade.query", {"out_trade_no": "att-1"}))
        form = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        answer = httpx.post(ali.url + "/gateway.do", content=body, headers=form)
        trade = sdk._verify_and_return_sync_response(answer.text, "alipay_trade_query_response")
        assert trade["trade_status"] == "TRADE_SUCCESS" and trade["out_trade_no"] == "att-1"
        other = AliPay(APP_ID, app_private_key_string=OTHER[0], alipay_public_key_string=PLATFORM[1])
        body = other.sign_data(other.build_body("alipay.trade.query", {"out_trade_no": "att-1"}))
        refused = httpx.post(ali.url + "/gateway.do", content=body, headers=form).json()
        assert refused["error_response"]["sub_code"] == "isv.invalid-signature"


def test_wechatpay_rejects_requests_without_user_agent_and_ours_carry_it(keys_env):
    truth = truth_of(record("att-1"))
    with (
        ChannelApiServer(
            "wechatpay", truth, public_key=MERCHANT[1], platform_key=PLATFORM, platform_serial=SERIAL
        ) as wx,
        ChannelApiServer("alipay", truth, public_key=MERCHANT[1], platform_key=PLATFORM) as ali,
        ChannelApiServer("stripe", truth, secret_key=STRIPE_KEY, platform_key=PLATFORM) as stripe,
    ):
        bare = httpx.Request("GET", wx.url + "/v3/pay/transactions/out-trade-no/att-1?mchid=1")  # as send() sent it
        with httpx.Client() as client:
            refused = client.send(bare)
        assert refused.status_code == 400 and refused.json()["code"] == "INVALID_REQUEST"
        result = ask(wechat_adapter(wx.url), request("wechatpay"))
        assert result.outcome == "success"
        for server, adapter in (
            (wx, wechat_adapter(wx.url)),
            (ali, alipay_adapter(ali.url)),
            (stripe, StripeAdapter(stripe.url, 5, secret_key=STRIPE_KEY)),
        ):
            ask(adapter, request(server.provider))
            headers = server.requests[-1].headers
            assert headers["user-agent"] == f"paywatch/{__version__}" and headers["accept"] == "application/json"


def test_base_url_must_be_https_except_loopback():
    for url in ("http://api.mch.weixin.qq.com", "http://10.0.0.7:8080", "ftp://127.0.0.1", "https://"):
        with pytest.raises(ValueError, match="https"):
            ChannelQuerySettings(adapter="wechatpay", base_url=url)
        with pytest.raises(ValueError, match="https"):
            StripeAdapter(url, 5, secret_key="k")
    for url in ("https://api.stripe.com", "http://127.0.0.1:8443", "http://localhost:1", "http://[::1]:9"):
        assert ChannelQuerySettings(adapter="stripe", base_url=url).base_url == url


# -- the compensator, through real adapters and the fakes ------------------------------------------
def finding(kind: str, order: str, attempts: list[tuple[str, str]], amount: int = AMOUNT):
    channel, attempt = attempts[-1]
    evidence = [
        AttemptEvidence(attempt_id=a, channel=c, event_id="e", amount_minor=amount, currency="CNY") for c, a in attempts
    ]
    return make_finding(
        at=T0,
        kind=kind,  # type: ignore[arg-type]
        state="open",
        fingerprint=f"{kind}:{order}",
        severity="warning",
        summary="test",
        evidence=Evidence(attempts=evidence),
        payment=FindingPayment(order_id=order, attempt_id=attempt, channel=channel),
    )


def settings_for(servers: dict[str, ChannelApiServer], channel_kw: dict | None = None, **kw) -> CompensationSettings:
    channels = {}
    for name, s in servers.items():
        fields = {
            "adapter": s.provider,
            "base_url": s.url,
            "wechatpay": {"mchid": MCHID, "serial_no": MERCHANT_SERIAL, "platform_serial": s.platform_serial},
            "alipay": {"app_id": APP_ID},
        }
        channels[name] = ChannelQuerySettings(**(fields | (channel_kw or {}).get(name, {})))
    return CompensationSettings(channels=channels, **kw)


def fake(provider: str, truth, **kw) -> ChannelApiServer:
    auth = {"secret_key": STRIPE_KEY} if provider == "stripe" else {"public_key": MERCHANT[1]}
    return ChannelApiServer(provider, truth, platform_key=PLATFORM, platform_serial=SERIAL, **auth, **kw).start()  # type: ignore[arg-type]


async def drive(
    settings: CompensationSettings, findings, times=(T0,), between=None
) -> tuple[Effects, Compensator, Executor]:
    comp = Compensator(settings)
    executor = Executor(build_adapters(settings), settings)
    effects = Effects()
    try:
        for f in findings:
            effects += comp.on_finding(f)
        for i, now in enumerate(times):
            if between is not None:
                between(i)
            effects += await run_due(comp, executor, now)
    finally:
        await executor.aclose()
    return effects, comp, executor


def kinds(effects: Effects) -> list[str]:
    return [a["action"]["type"] for a in effects.actions]


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
@pytest.mark.parametrize("forgery", ["unsigned", "wrong_key", "other_attempt", "other_amount"])
def test_forged_answers_never_repair_or_refund_and_raise_untrusted(keys_env, provider, forgery):
    truth = truth_of(record("paid-1"), record("paid-2"), record("paid-3"))
    server = fake(provider, truth)
    server.forge = forgery
    try:
        effects, _, _ = asyncio.run(
            drive(
                settings_for({provider: server}, auto_refund=True),
                [
                    finding("paid_but_pending", "o1", [(provider, "paid-1")]),
                    finding("duplicate_charge", "o2", [(provider, "paid-2"), (provider, "paid-3")]),
                ],
            )
        )
    finally:
        server.stop()
    assert not {"repair", "refund_candidate", "refund"} & set(kinds(effects))
    assert effects.events == []  # nothing the detectors could learn from either
    untrusted = [f for f in effects.findings if f.finding.kind == "untrusted_answer"]
    assert {f.payment.attempt_id for f in untrusted} == {"paid-1", "paid-2", "paid-3"}
    assert all(f.finding.severity == "critical" and f.finding.evidence.event_ids for f in untrusted)
    queries = [a["query"] for a in effects.actions if a["action"]["type"] == "query"]
    assert all(q["untrusted"] and q["response_body"] for q in queries)  # the evidence is kept
    alerts = AlertEngine(load_rules())
    changes = alerts.on_finding(untrusted[0]) + alerts.tick(T0 + timedelta(minutes=5))
    assert any(c.alert.name == "UntrustedChannelAnswer" and c.page for c in changes)


@pytest.mark.parametrize(
    ("provider", "refunded", "expected"),
    [
        ("stripe", 0, ("refund", AMOUNT)),
        ("stripe", 3000, ("refund", AMOUNT - 3000)),  # partly refunded: only the rest
        ("stripe", AMOUNT, ("refund_declined", None)),  # fully refunded: never again
        ("wechatpay", 100, ("refund_declined", None)),  # REFUND names no amount: a person decides
        ("alipay", AMOUNT, ("refund_declined", None)),  # TRADE_CLOSED after payment
        ("alipay", 3000, ("refund", AMOUNT - 3000)),  # TRADE_SUCCESS: the refund query shows the part
    ],
)
def test_refunded_payments_are_never_refunded_again(keys_env, provider, refunded, expected):
    truth = truth_of(record("keep-1"), record("dup-1"))
    server = fake(provider, truth)
    server.refunded_minor["dup-1"] = refunded
    dup = finding("duplicate_charge", "o1", [(provider, "keep-1"), (provider, "dup-1")])
    try:
        effects, _, _ = asyncio.run(
            drive(settings_for({provider: server}, auto_refund=True), [dup], times=(T0, T0 + timedelta(seconds=5)))
        )
    finally:
        server.stop()
    decided = [a for a in effects.actions if a["action"]["type"] in ("refund", "refund_declined")]
    (decision,) = decided
    assert decision["action"]["type"] == expected[0]
    if expected[1] is not None:
        (cand,) = [a for a in effects.actions if a["action"]["type"] == "refund_candidate"]
        assert cand["action"]["evidence"]["refund_minor"] == expected[1]
        assert decision["action"]["evidence"]["refund_minor"] == expected[1]
        assert decision["payment"]["attempt_id"] == "dup-1"


@pytest.mark.parametrize("provider", ["stripe", "alipay"])
def test_a_refund_made_after_the_candidate_declines_the_automatic_refund(keys_env, provider):
    truth = truth_of(record("keep-1"), record("dup-1"))
    server = fake(provider, truth)
    dup = finding("duplicate_charge", "o1", [(provider, "keep-1"), (provider, "dup-1")])

    def meanwhile(i: int) -> None:
        if i == 1:  # somebody refunds part of it by hand between the candidate and the pre-refund query
            server.refunded_minor["dup-1"] = 1000

    try:
        effects, _, _ = asyncio.run(
            drive(
                settings_for({provider: server}, auto_refund=True),
                [dup],
                times=(T0, T0 + timedelta(seconds=5)),
                between=meanwhile,
            )
        )
    finally:
        server.stop()
    assert "refund" not in kinds(effects)
    (declined,) = [a for a in effects.actions if a["action"]["type"] == "refund_declined"]
    assert "a person decides" in declined["action"]["reason"]


@pytest.mark.parametrize(
    ("provider", "code"),
    [("wechatpay", "SIGN_ERROR"), ("alipay", "isv.invalid-signature"), ("stripe", "invalid_request_error")],
)
def test_refused_credentials_page_once_and_never_storm_or_trip_the_breaker(keys_env, provider, code):
    truth = truth_of(*(record(f"a-{i}") for i in range(8)))
    server = fake(provider, truth)
    server.fail_next(8, "credentials")
    budget = BudgetSettings(qps=200, concurrency=2, breaker_failures=2)
    schedule = ScheduleSettings(offsets_s=[0, 300, 600], jitter=0, error_retry_s=30)
    findings = [finding("unknown_attempt", f"o{i}", [(provider, f"a-{i}")]) for i in range(8)]
    try:
        effects, comp, executor = asyncio.run(
            drive(
                settings_for({provider: server}, budget=budget, schedule=schedule),
                findings,
                times=(T0, T0 + timedelta(seconds=31), T0 + timedelta(seconds=61)),
            )
        )
    finally:
        server.stop()
    assert server.count() == 8  # one query each; nothing re-sent 30 s later
    assert executor.circuit(provider) == "closed"
    (credentials,) = [f for f in effects.findings if f.finding.kind == "channel_credentials"]
    assert provider in credentials.finding.summary and code in credentials.finding.summary
    assert credentials.finding.evidence.figures["provider_code"] == code
    assert all(t.due_at is not None and t.due_at >= T0 + timedelta(seconds=300) for t in comp.tasks.values())
    alerts = AlertEngine(load_rules())
    (page,) = [c for c in alerts.on_finding(credentials) if c.page and c.alert.name == "ChannelCredentials"]
    assert code in page.alert.annotations["summary"] and provider in page.alert.annotations["summary"]


def test_credentials_finding_resolves_on_the_next_accepted_answer(keys_env):
    server = fake("stripe", truth_of(record("a-1")))
    server.fail_next(1, "credentials")
    schedule = ScheduleSettings(offsets_s=[0, 60], jitter=0)
    try:
        effects, _, _ = asyncio.run(
            drive(
                settings_for({"stripe": server}, schedule=schedule),
                [finding("unknown_attempt", "o1", [("stripe", "a-1")])],
                times=(T0, T0 + timedelta(seconds=61)),
            )
        )
    finally:
        server.stop()
    states = [(f.finding.kind, f.finding.state) for f in effects.findings]
    assert states == [("channel_credentials", "open"), ("channel_credentials", "resolved")]


def stripe_intent(status: str, attempt="att-1") -> bytes:
    return json.dumps(
        {
            "id": attempt,
            "object": "payment_intent",
            "status": status,
            "amount": AMOUNT,
            "currency": "cny",
            "latest_charge": None,
        }
    ).encode()


def test_unknown_status_values_are_unknown_not_api_failures_and_never_open_the_breaker(keys_env, scripted):
    for i in range(6):
        scripted.answers.append((200, {}, stripe_intent("requires_source", f"att-{i}")))
    budget = BudgetSettings(qps=200, concurrency=1, breaker_failures=3)
    settings = CompensationSettings(
        channels={"stripe": ChannelQuerySettings(adapter="stripe", base_url=scripted.url)}, budget=budget
    )
    findings = [finding("unknown_attempt", f"o{i}", [("stripe", f"att-{i}")]) for i in range(6)]
    with structlog.testing.capture_logs() as logs:
        effects, _, executor = asyncio.run(drive(settings, findings))
    assert executor.circuit("stripe") == "closed"
    assert [(e.event.outcome, e.payment.status) for e in effects.events] == [("unknown", "requires_source")] * 6
    assert all(a["query"]["unknown_status"] and not a["query"]["api_failed"] for a in effects.actions)
    assert sum(1 for entry in logs if entry["event"] == "unknown_channel_status") == 6


def test_wechatpay_unknown_trade_state_is_recorded_raw(scripted):
    scripted.answers.append(wechat_answer(wechat_transaction("ACCEPT")))
    result = ask(wechat_adapter(scripted.url), request("wechatpay"))
    assert (result.outcome, result.channel_status, result.unknown_status, result.api_failed) == (
        "unknown",
        "ACCEPT",
        True,
        False,
    )


# -- lookups that fit real integrations ----------------------------------------------------------------
def test_lookups_partner_mode_isv_token_and_stripe_metadata_search_with_connect(keys_env, monkeypatch):
    monkeypatch.setenv("PAYWATCH_ALIPAY_APP_AUTH_TOKEN", "201510BBaabdb44d8fd04607abf8d5931ec75D84")
    truth = truth_of(record("ord-7-a1"))
    servers = {p: fake(p, truth) for p in ("wechatpay", "alipay", "stripe")}
    channel_kw = {
        "wechatpay": {
            "wechatpay": {
                "mchid": MCHID,
                "serial_no": MERCHANT_SERIAL,
                "platform_serial": SERIAL,
                "sub_mchid": "1900000109",
            }
        },
        "alipay": {"alipay": {"app_id": APP_ID, "app_auth_token_env": "PAYWATCH_ALIPAY_APP_AUTH_TOKEN"}},
        "stripe": {"stripe": {"lookup": "metadata", "metadata_key": "order_id", "account": "acct_1032D82eZvKYlo2C"}},
    }
    findings = [finding("paid_but_pending", f"o-{p}", [(p, "ord-7-a1")]) for p in servers]
    try:
        effects, _, _ = asyncio.run(drive(settings_for(servers, channel_kw), findings))
    finally:
        for s in servers.values():
            s.stop()
    assert kinds(effects).count("repair") == 3
    wx = servers["wechatpay"].requests[0]
    assert wx.status == 200 and wx.target.startswith("/v3/pay/partner/transactions/out-trade-no/ord-7-a1?")
    assert "sp_mchid=1900007291&sub_mchid=1900000109" in wx.target
    ali = servers["alipay"].requests[0]
    assert ali.status == 200 and ali.params["app_auth_token"] == "201510BBaabdb44d8fd04607abf8d5931ec75D84"
    stripe = servers["stripe"].requests[0]
    assert stripe.headers["stripe-account"] == "acct_1032D82eZvKYlo2C"
    assert stripe.target.startswith("/v1/payment_intents/search?")
    assert stripe.params["query"] == "metadata['order_id']:'ord-7-a1'"


def test_repairs_can_be_dry_run_per_channel(keys_env):
    truth = truth_of(record("a-1"), record("a-2"))
    servers = {"wechatpay": fake("wechatpay", truth), "alipay": fake("alipay", truth)}
    findings = [
        finding("paid_but_pending", "o1", [("wechatpay", "a-1")]),
        finding("paid_but_pending", "o2", [("alipay", "a-2")]),
    ]
    try:
        effects, _, _ = asyncio.run(drive(settings_for(servers, {"alipay": {"dry_run": True}}), findings))
    finally:
        for s in servers.values():
            s.stop()
    repairs = {
        a["payment"]["channel"]: a["action"]["dry_run"] for a in effects.actions if a["action"]["type"] == "repair"
    }
    assert repairs == {"wechatpay": False, "alipay": True}


def test_alipay_refund_query_is_verified_and_a_failed_one_leaves_the_refund_unknown(scripted):
    def refund_answer(obj: dict, key: str = PLATFORM[0]) -> tuple:
        text = json.dumps(obj, ensure_ascii=False)
        sdk = AliPay(APP_ID, app_private_key_string=key, alipay_public_key_string=PLATFORM[1])
        raw = '{"alipay_trade_fastpay_refund_query_response":' + text + ',"sign":"' + sdk._sign(text) + '"}'
        return 200, {}, raw.encode()

    refund = {"code": "10000", "out_trade_no": "att-1", "out_request_no": "att-1", "total_amount": "88.88"}
    refund |= {"refund_amount": "30.00", "refund_status": "REFUND_SUCCESS"}
    adapter = alipay_adapter(scripted.url)
    for answer in (refund_answer(refund), refund_answer(refund, key=OTHER[0])):
        scripted.answers.extend([alipay_answer(alipay_trade()), answer])
    partly, forged = (ask(adapter, request("alipay", purposes=("pre_refund",))) for _ in range(2))
    assert (partly.outcome, partly.refunded, partly.refunded_minor) == ("success", True, 3000)
    assert (forged.outcome, forged.refunded_minor) == ("success", None)  # unknown: nobody refunds on it
    method = parse_qs(scripted.requests[1][3].decode())["method"][0]
    assert method == "alipay.trade.fastpay.refund.query"
    scripted.answers.append(alipay_answer(alipay_trade()))
    plain = ask(adapter, request("alipay", purposes=("status",)))  # no refund decision: one call only
    assert plain.refunded_minor == 0 and len(scripted.requests) == 5
