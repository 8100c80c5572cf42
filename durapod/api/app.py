"""The Starlette application and its lifespan (one connection pool per process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durapod import store
from durapod.api import runner_routes
from durapod.api.kube import Kube
from durapod.api.problems import Problem
from durapod.api.settings import Settings

RUNS = "/internal/v1/runs/{run_id}"


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.kube = Kube()
        app.state.pool = await store.open_pool(settings.database_url)
        try:
            yield
        finally:
            await app.state.pool.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route(f"{RUNS}/context", runner_routes.context),
            Route(f"{RUNS}/checkpoints", runner_routes.record_checkpoint, methods=["POST"]),
            Route(f"{RUNS}/state", runner_routes.save_state, methods=["PUT"]),
            Route(f"{RUNS}/children", runner_routes.trigger_child, methods=["POST"]),
            Route(f"{RUNS}/outcome", runner_routes.outcome, methods=["POST"]),
        ],
        exception_handlers={Problem: _problem},
        lifespan=lifespan,
    )
