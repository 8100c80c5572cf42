"""The API application (FastAPI for the public endpoints and /openapi.json; the runner's
hot-path endpoints are plain Starlette routes, outside the schema) and its lifespan.

The process starts and serves ``/healthz`` whether PostgreSQL is up or not; ``/readyz``
says whether the database answers. While it does not, every route that needs it answers
503 with ``Retry-After`` (see ``durapod.api.database``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from durapod import __version__, store, tracing
from durapod.api import logs_routes, metrics, pages, runner_routes, runs_routes, webhooks
from durapod.api.auth import Authenticator
from durapod.api.database import Database, down
from durapod.api.kube import Kube
from durapod.api.pod_tokens import PodTokens
from durapod.api.problems import Problem
from durapod.api.settings import Settings
from durapod.api.triggering import Triggers

RUNS = "/internal/v1/runs/{run_id}"
#: How long /readyz waits for a pooled connection (probes time out after 1 s by default).
READY_CHECK_SECONDS = 1.0
log = logging.getLogger("durapod.api")
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


async def healthz(_: Request) -> Response:
    """Liveness: the process serves requests, whatever the database does."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the schema is migrated and the database answers a ``SELECT 1``."""
    db: Database = request.app.state.db
    if not db.ready.is_set():
        return db.not_ready().response()  # no waiting: a probe wants the state as it is
    try:
        await db.ping(timeout=READY_CHECK_SECONDS)
    except Problem as problem:
        return problem.response()
    return JSONResponse({"status": "ready"})


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _database_down(request: Request, exc: Exception) -> Response:
    log.warning(
        "503 for %s %s: the database is unavailable: %s", request.method, request.url.path, exc
    )
    return down(exc).response()


async def _invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return Problem(422, "Unprocessable Content", details).response()


async def _http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return Problem(exc.status_code, str(exc.detail), str(exc.detail)).response()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.kube = Kube()
        app.state.db = db = await Database.open(settings.database_url, settings.database_timeout)
        app.state.ready = db.ready
        app.state.authenticator = Authenticator(settings.api_tokens, app.state.kube)
        app.state.triggers = Triggers(db, app.state.kube)
        app.state.pod_tokens = PodTokens(app.state.kube, db)
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(
        # Probes and scrapes make no traces (a trace a second per replica, all noise).
        telemetry={"exclude": lambda scope: scope.get("path") in UNTRACED},
        title="durapod",
        version=__version__,
        lifespan=lifespan,
        description="Trigger and follow durable task runs.",
        exception_handlers={
            Problem: _problem,
            RequestValidationError: _invalid,
            HTTPException: _http,
            **dict.fromkeys(store.UNAVAILABLE, _database_down),
        },
    )
    app.include_router(runs_routes.router)
    app.include_router(logs_routes.router)
    app.include_router(webhooks.router)
    app.include_router(pages.router)  # HTML: /runs, /runs/{namespace}/{name}, /signin
    app.add_route("/healthz", healthz, include_in_schema=False)
    app.add_route("/readyz", readyz, include_in_schema=False)
    app.add_route("/metrics", metrics.endpoint, include_in_schema=False)
    app.add_middleware(metrics.RequestMetrics)
    # OTEL_* configure it; FastAPI's own server span per request then continues a caller's
    # traceparent, so what a request triggers joins the caller's trace.
    tracing.setup("durapod-api")
    for path, endpoint, method in (
        ("/context", runner_routes.context, "GET"),
        ("/checkpoints", runner_routes.record_checkpoint, "POST"),
        ("/state", runner_routes.save_state, "PUT"),
        ("/children", runner_routes.trigger_child, "POST"),
        ("/outcome", runner_routes.outcome, "POST"),
    ):
        app.add_route(RUNS + path, endpoint, methods=[method], include_in_schema=False)
    return app
