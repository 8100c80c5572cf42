"""Signed webhooks over real HTTP: signatures computed as GitHub and Stripe compute them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import DevProcess, definition, running_dev

SECRET = "whsec_test_3f9a"


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-webhooks-") as process:
        process.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "hooks"},
                "stringData": {"secret": SECRET},
            }
        )
        for provider in ("github", "stripe", "generic"):
            process.apply(
                definition(
                    f"on-{provider}",
                    "tests.tasks:echo",
                    webhook={"provider": provider, "secretName": "hooks", "tolerance": "5m"},
                )
            )
        process.apply(definition("no-hooks", "tests.tasks:echo"))
        yield process


def _url(dev: DevProcess, task: str) -> str:
    return f"{dev.env()['DURAPOD_API_URL']}/webhooks/default/{task}"


def _sign(message: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _runs_of(dev: DevProcess, task: str) -> list[dict[str, Any]]:
    listing = dev.get("/apis/durapod.io/v1/namespaces/default/taskruns")
    return [r for r in listing["items"] if r["spec"]["task"] == task]


def test_github_deliveries_are_verified_and_deduplicated(dev: DevProcess) -> None:
    body = json.dumps({"action": "opened", "number": 7}).encode()
    headers = {
        "X-Hub-Signature-256": f"sha256={_sign(body)}",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "Content-Type": "application/json",
    }
    first = httpx.post(_url(dev, "on-github"), content=body, headers=headers)
    assert first.status_code == 202
    run = dev.wait_phase(first.json()["name"], "Succeeded")
    assert run["status"]["output"]["event"] == "pull_request"
    assert run["status"]["output"]["body"] == {"action": "opened", "number": 7}
    again = httpx.post(_url(dev, "on-github"), content=body, headers=headers)
    assert again.status_code == 200 and again.json()["name"] == first.json()["name"]
    assert len(_runs_of(dev, "on-github")) == 1


def test_bad_github_signatures_are_401_and_queue_nothing(dev: DevProcess) -> None:
    before = len(_runs_of(dev, "on-github"))
    body = b'{"action": "closed"}'
    tampered = httpx.post(
        _url(dev, "on-github"),
        content=body + b" ",
        headers={"X-Hub-Signature-256": f"sha256={_sign(body)}"},
    )
    wrong_secret = httpx.post(
        _url(dev, "on-github"),
        content=body,
        headers={"X-Hub-Signature-256": f"sha256={_sign(body, 'x')}"},
    )
    missing = httpx.post(_url(dev, "on-github"), content=body)
    assert [r.status_code for r in (tampered, wrong_secret, missing)] == [401, 401, 401]
    assert "X-Hub-Signature-256" in missing.json()["detail"]
    assert len(_runs_of(dev, "on-github")) == before


def _stripe_header(body: bytes, stamp: int, secret: str = SECRET) -> str:
    return f"t={stamp},v1={_sign(f'{stamp}.'.encode() + body, secret)}"


def test_stripe_signatures_with_timestamp_tolerance(dev: DevProcess) -> None:
    event = json.dumps({"id": "evt_1NG8Du2eZvKYlo2C", "type": "payment_intent.succeeded"})
    body = event.encode()
    now = int(time.time())
    good = httpx.post(
        _url(dev, "on-stripe"),
        content=body,
        headers={"Stripe-Signature": _stripe_header(body, now)},
    )
    assert good.status_code == 202
    run = dev.wait_phase(good.json()["name"], "Succeeded")
    assert run["status"]["output"]["delivery"] == "evt_1NG8Du2eZvKYlo2C"
    before = len(_runs_of(dev, "on-stripe"))
    stale = httpx.post(
        _url(dev, "on-stripe"),
        content=body,
        headers={"Stripe-Signature": _stripe_header(body, now - 3600)},
    )
    assert stale.status_code == 401 and "tolerance" in stale.json()["detail"]
    wrong = httpx.post(
        _url(dev, "on-stripe"),
        content=body,
        headers={"Stripe-Signature": _stripe_header(body, now, "whsec_other")},
    )
    tampered = httpx.post(
        _url(dev, "on-stripe"),
        content=body.replace(b"succeeded", b"failed"),
        headers={"Stripe-Signature": _stripe_header(body, now)},
    )
    assert wrong.status_code == 401 and tampered.status_code == 401
    redelivered = httpx.post(
        _url(dev, "on-stripe"),
        content=body,
        headers={"Stripe-Signature": _stripe_header(body, now + 5)},
    )
    assert redelivered.status_code == 200
    assert redelivered.json()["name"] == good.json()["name"]
    assert len(_runs_of(dev, "on-stripe")) == before


def test_generic_hmac_and_tasks_without_webhooks(dev: DevProcess) -> None:
    body = b'{"hello": "there"}'
    ok = httpx.post(
        _url(dev, "on-generic"),
        content=body,
        headers={"X-Durapod-Signature": f"sha256={_sign(body)}"},
    )
    assert ok.status_code == 202
    bad = httpx.post(
        _url(dev, "on-generic"), content=body, headers={"X-Durapod-Signature": "sha256=00"}
    )
    assert bad.status_code == 401
    none = httpx.post(
        _url(dev, "no-hooks"),
        content=body,
        headers={"X-Durapod-Signature": f"sha256={_sign(body)}"},
    )
    assert none.status_code == 404 and "takes no webhooks" in none.json()["detail"]
