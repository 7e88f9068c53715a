"""The Stripe adapter against `stripe-mock`, Stripe's own mock server driven by its OpenAPI spec
and fixtures (https://github.com/stripe/stripe-mock): real request routing and authentication,
real PaymentIntent / search_result / expanded Charge shapes. `.ci/run` installs it with
`go install`; the fixture starts it on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from paywatch.compensation.channels import QueryRequest, QueryResult
from paywatch.compensation.stripe import StripeAdapter

STRIPE_MOCK_VERSION = "v0.203.0"
KEY = "sk_test_123"


def stripe_mock_binary() -> str:
    found = shutil.which("stripe-mock")
    if found:
        return found
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    if shutil.which("go"):
        gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=True).stdout.strip()
    candidate = Path(gopath) / "bin" / "stripe-mock"
    if not candidate.exists():
        pytest.fail(f"stripe-mock is not installed: go install github.com/stripe/stripe-mock@{STRIPE_MOCK_VERSION}")
    return str(candidate)


@pytest.fixture(scope="module")
def stripe_mock():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        # its HTTPS side on a port of the system's choosing: the default one may be taken
        [stripe_mock_binary(), "-http-addr", f"127.0.0.1:{port}", "-https-addr", "127.0.0.1:"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/v1/payment_intents/pi_123", headers={"Authorization": f"Bearer {KEY}"}, timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"stripe-mock did not start: {proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ask(adapter: StripeAdapter, attempt: str, amount: int | None = None) -> QueryResult:
    request = QueryRequest("stripe", "order-1", attempt, 1, ("confirm_duplicate",), None, amount, None)  # type: ignore[arg-type]

    async def go() -> QueryResult:
        async with httpx.AsyncClient() as client:
            return await adapter.query(client, request)

    return asyncio.run(go())


def test_payment_intent_by_id_with_its_expanded_charge(stripe_mock):
    result = ask(StripeAdapter(stripe_mock, 5, secret_key=KEY, api_version="2024-06-20"), "pi_3PaywatchAttempt1")
    assert result.answered, (result.error, result.untrusted, result.raw)
    assert result.raw["id"] == "pi_3PaywatchAttempt1" and result.raw["object"] == "payment_intent"
    assert isinstance(result.raw["latest_charge"], dict)  # the expand[] parameter was understood
    assert result.channel_status == result.raw["status"] == "requires_payment_method"
    assert result.outcome == "failure"  # stripe-mock's fixture carries a last_payment_error
    assert (result.amount_minor, result.currency) == (result.raw["amount"], result.raw["currency"])
    assert result.refunded_minor == result.raw["latest_charge"]["amount_refunded"]


def test_an_answer_for_another_amount_is_untrusted(stripe_mock):
    result = ask(StripeAdapter(stripe_mock, 5, secret_key=KEY), "pi_3PaywatchAttempt1", amount=8888)
    assert not result.answered and "amount" in (result.untrusted or "")


def test_metadata_search_with_connect_account_checks_the_match(stripe_mock):
    adapter = StripeAdapter(stripe_mock, 5, secret_key=KEY, metadata_key="order_id", account="acct_1032D82eZvKYlo2C")
    result = ask(adapter, "ord-7-a1")
    assert result.raw["object"] == "search_result" and isinstance(result.raw["data"][0]["latest_charge"], dict)
    # stripe-mock answers with a fixture whose metadata is not ours: never believed
    assert result.untrusted is not None and "ord-7-a1" in result.untrusted


def test_a_refused_key_is_a_credentials_fault_not_an_outage(stripe_mock):
    result = ask(StripeAdapter(stripe_mock, 5, secret_key="not-a-key"), "pi_3PaywatchAttempt1")
    assert result.http_status == 401 and result.credentials == "invalid_request_error"
    assert not result.api_failed
