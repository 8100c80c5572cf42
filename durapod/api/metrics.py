"""The API's Prometheus metrics: ``GET /metrics``, and what the API times and counts.

Requests are timed by a plain ASGI middleware (not ``BaseHTTPMiddleware``, which would
put a task and a stream between the runner's checkpoint calls and their handlers), by the
route's template, so a run's name never becomes a label. What the runner measures (a
step's duration) arrives with its checkpoint and is observed here.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durapod import promregistry

#: The route label of a request no route matched (a scan must not add label values).
UNMATCHED = "other"
#: Methods kept as they are in the ``method`` label; any other is "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Requests: a checkpoint takes about a millisecond; a long poll up to a minute.
REQUEST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: One database write.
WRITE = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Checkpoint sizes, up to the hard limit of 16 MiB.
SIZE = tuple(float(4**n) for n in range(3, 13))
#: Steps last from a millisecond to hours.
STEP = (0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
TASK = ("namespace", "task")

REGISTRY = promregistry.registry()

REQUEST_DURATION = Histogram(
    "durapod_http_request_duration_seconds",
    "API requests by route template, method and status code.",
    ("route", "method", "status"),
    buckets=REQUEST,
    registry=REGISTRY,
)
TRIGGERS = Counter(
    "durapod_triggers",
    "Runs created through the API, by source (http, batch, webhook, child, replay).",
    (*TASK, "source"),
    registry=REGISTRY,
)
CHECKPOINT_WRITE = Histogram(
    "durapod_checkpoint_write_seconds",
    "The database write of one checkpoint or state.",
    TASK,
    buckets=WRITE,
    registry=REGISTRY,
)
CHECKPOINT_BYTES = Histogram(
    "durapod_checkpoint_bytes",
    "Size of each checkpoint or state written.",
    TASK,
    buckets=SIZE,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "durapod_step_duration_seconds",
    "Step durations, as the runner measured them.",
    TASK,
    buckets=STEP,
    registry=REGISTRY,
)


async def endpoint(_: Request) -> Response:
    """``GET /metrics``: unauthenticated, like ``/healthz`` (counts, never a run's data)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def triggered(namespace: str, task: str, source: str, created: bool = True) -> None:
    """A run created through the API (a duplicate found by its key is not)."""
    if created:
        TRIGGERS.labels(namespace, task, source).inc()


def checkpoint_written(namespace: str, task: str, size: int, seconds: float) -> None:
    CHECKPOINT_WRITE.labels(namespace, task).observe(seconds)
    CHECKPOINT_BYTES.labels(namespace, task).observe(size)


def step_measured(namespace: str, task: str, duration: Any) -> None:
    """A step's duration sent by the runner (ignored unless a number of seconds ≥ 0)."""
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
        STEP_DURATION.labels(namespace, task).observe(duration)


def route_of(scope: Scope) -> str:
    """The template of the route that handled the request, or ``UNMATCHED``.

    Starlette's router puts the route in the scope as it matches, FastAPI's only for its
    own routes: for a plain route (the runner's), the matched endpoint names it.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    endpoint, router = scope.get("endpoint"), scope.get("router")
    if endpoint is None or router is None:
        return UNMATCHED
    paths = _PATHS.get(id(router))
    if paths is None or endpoint not in paths:  # a route added since: look again
        paths = _PATHS[id(router)] = {  # a Mount's endpoint is its app
            getattr(r, "endpoint", None) or getattr(r, "app", None): getattr(r, "path", UNMATCHED)
            for r in router.routes
        }
    return paths.get(endpoint, UNMATCHED)


#: Each router's route templates by endpoint (by the router's id: FastAPI's routers are
#: not hashable).
_PATHS: dict[int, dict[Any, str]] = {}


class RequestMetrics:
    """Times every HTTP request, by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception is answered 500 outside

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            REQUEST_DURATION.labels(route_of(scope), method, str(status)).observe(
                time.perf_counter() - started
            )
