"""The API application (FastAPI for the public endpoints and /openapi.json; the runner's
hot-path endpoints are plain Starlette routes, outside the schema) and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from durapod import __version__, store
from durapod.api import runner_routes, runs_routes, webhooks
from durapod.api.auth import Authenticator
from durapod.api.kube import Kube
from durapod.api.problems import Problem
from durapod.api.settings import Settings
from durapod.api.triggering import Triggers

RUNS = "/internal/v1/runs/{run_id}"


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


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
        app.state.pool = await store.open_pool(settings.database_url)
        app.state.authenticator = Authenticator(settings.api_tokens, app.state.kube)
        app.state.triggers = Triggers(app.state.pool, app.state.kube)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(
        title="durapod",
        version=__version__,
        lifespan=lifespan,
        description="Trigger and follow durable task runs.",
        exception_handlers={
            Problem: _problem,
            RequestValidationError: _invalid,
            HTTPException: _http,
        },
    )
    app.include_router(runs_routes.router)
    app.include_router(webhooks.router)
    app.add_route("/healthz", healthz, include_in_schema=False)
    for path, endpoint, method in (
        ("/context", runner_routes.context, "GET"),
        ("/checkpoints", runner_routes.record_checkpoint, "POST"),
        ("/state", runner_routes.save_state, "PUT"),
        ("/children", runner_routes.trigger_child, "POST"),
        ("/outcome", runner_routes.outcome, "POST"),
    ):
        app.add_route(RUNS + path, endpoint, methods=[method], include_in_schema=False)
    return app
