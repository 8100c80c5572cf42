"""Signed webhooks: ``POST /webhooks/{namespace}/{task}`` triggers a run of the task.

The signature is the authentication: GitHub (``X-Hub-Signature-256``), Stripe
(``Stripe-Signature``, with a timestamp tolerance) or generic HMAC-SHA256
(``X-Durapod-Signature: sha256=<hex>``), each under the secret the TaskDefinition names.
Compares are constant-time; a bad or missing signature is a 401 and queues nothing. A
redelivery (same delivery or event id) returns the first run: the delivery id is the
run's idempotency key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from durapod.api.models import RunRef, TriggerRequest
from durapod.api.problems import Problem, documented
from durapod.durations import parse_duration
from durapod.resources.models import DNS_LABEL

router = APIRouter(tags=["webhooks"])


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: its id (for deduplication) and event type."""

    id: str
    event: str | None


def _hmac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _verify_sha256_header(
    headers: Any, body: bytes, secret: bytes, signature: str, delivery: str, event: str
) -> Delivery:
    """``<signature>: sha256=<hex HMAC of the body>``, as GitHub and the generic form sign
    (header names are case-insensitive)."""
    given = headers.get(signature, "")
    if not given.startswith("sha256=") or not _same(given[7:], _hmac(secret, body)):
        raise Problem(401, "Unauthorized", f"missing or invalid {signature}")
    return Delivery(headers.get(delivery) or hashlib.sha256(body).hexdigest(), headers.get(event))


def verify_github(headers: Any, body: bytes, secret: bytes, _: float) -> Delivery:
    return _verify_sha256_header(
        headers, body, secret, "X-Hub-Signature-256", "X-GitHub-Delivery", "X-GitHub-Event"
    )


def verify_stripe(headers: Any, body: bytes, secret: bytes, tolerance: float) -> Delivery:
    fields: dict[str, list[str]] = {}
    for part in headers.get("stripe-signature", "").split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        stamp = int(fields["t"][0])
    except (KeyError, ValueError) as exc:
        raise Problem(401, "Unauthorized", "missing or invalid Stripe-Signature") from exc
    expected = _hmac(secret, f"{stamp}.".encode() + body)
    if not any(_same(given, expected) for given in fields.get("v1", [])):
        raise Problem(401, "Unauthorized", "missing or invalid Stripe-Signature")
    if abs(time.time() - stamp) > tolerance:
        raise Problem(
            401,
            "Unauthorized",
            f"Stripe-Signature timestamp is outside the tolerance of {tolerance:g}s",
        )
    try:
        event = json.loads(body)
    except ValueError:
        event = {}
    return Delivery(str(event.get("id") or expected), event.get("type"))


def verify_generic(headers: Any, body: bytes, secret: bytes, _: float) -> Delivery:
    return _verify_sha256_header(
        headers, body, secret, "X-Durapod-Signature", "X-Durapod-Delivery", "X-Durapod-Event"
    )


VERIFIERS = {"github": verify_github, "stripe": verify_stripe, "generic": verify_generic}


@router.post(
    "/webhooks/{namespace}/{task}",
    status_code=202,
    response_model=RunRef,
    responses=documented(400, 401, 404, 422, 503),
)
async def receive(
    namespace: Annotated[str, Path(pattern=DNS_LABEL, max_length=63)],
    task: Annotated[str, Path(pattern=DNS_LABEL, max_length=63)],
    request: Request,
    response: Response,
) -> RunRef:
    """Verify a signed delivery and trigger a run with it; 202 before the run starts."""
    kube = request.app.state.kube
    definition = await kube.get_taskdefinition(namespace, task)
    webhook = (definition or {}).get("spec", {}).get("webhook")
    if not webhook:
        raise Problem(
            404, "Not Found", f'task "{task}" in namespace "{namespace}" takes no webhooks'
        )
    secret = await kube.get_secret_value(
        namespace, webhook["secretName"], webhook.get("secretKey", "secret")
    )
    if secret is None:
        raise Problem(401, "Unauthorized", "the webhook's signing secret is not available")
    body = await request.body()
    provider = webhook.get("provider", "generic")
    tolerance = parse_duration(webhook.get("tolerance", "5m")).total_seconds()
    delivery = VERIFIERS[provider](request.headers, body, secret, tolerance)
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = base64.b64encode(body).decode()
    trigger = TriggerRequest(
        payload={
            "provider": provider,
            "event": delivery.event,
            "delivery": delivery.id,
            "body": parsed,
        },
        idempotency_key=f"webhook:{provider}:{delivery.id}"[:255],
        tags=[f"webhook:{provider}"],
    )
    run: RunRef = await request.app.state.triggers.trigger(namespace, task, trigger, "webhook")
    if run.duplicate:
        response.status_code = 200
    return run
