"""The on-call engineer's pages: a list of runs (filtered, paged like the JSON API's list)
and one run's timeline (attempts on a time axis, checkpoints, waits, input and output,
parent and child runs). Server-rendered HTML, no script; signed in like the API.

Paths: ``/runs`` and ``/runs/{namespace}/{name}`` (the JSON API lives under ``/v1``),
``/signin`` and ``/signout``, and the stylesheet under ``/assets``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from durapod import store
from durapod.api import html, signin, timeline
from durapod.api.database import Database
from durapod.api.problems import Problem
from durapod.api.runs_routes import decode_cursor, encode_cursor
from durapod.durations import format_duration
from durapod.resources.models import DNS_LABEL, DNS_SUBDOMAIN, Phase
from durapod.store import runs
from durapod.store import timeline as records
from durapod.timestamps import utcnow

log = logging.getLogger("durapod.api.pages")
router = APIRouter(include_in_schema=False)
router.include_router(signin.router)
router.add_api_route(html.STYLESHEET, html.stylesheet, methods=["GET"])
#: The namespace the runs list shows when none is asked for (as kubectl does).
DEFAULT_NAMESPACE = "default"
PAGE_SIZES = (20, 50, 100, 200, 500)
Handler = Callable[[Request, str], Awaitable[Response]]


def _valid(pattern: str, value: str, limit: int) -> bool:
    return len(value) <= limit and re.fullmatch(pattern, value) is not None


async def _page(request: Request, handler: Handler) -> Response:
    """Sign-in first, then the page; the API's errors as HTML pages (a 503 says retry)."""
    user = None
    try:
        user = await signin.principal(request)
        if user is None:
            return signin.to_signin(request)
        return await handler(request, user)
    except Problem as problem:
        return html.error_page(problem.status, problem.title, problem.detail, user=user)
    except store.UNAVAILABLE as exc:
        log.warning("503 for %s: the database is unavailable: %s", request.url.path, exc)
        detail = "the database is unavailable for now; reload in a moment"
        return html.error_page(503, "Service Unavailable", detail, user=user)


async def _pool(request: Request) -> store.Pool:
    db: Database = request.app.state.db
    return await db.pool()


@router.get("/runs")
async def runs_page(request: Request) -> Response:
    return await _page(request, _runs)


async def _runs(request: Request, user: str) -> Response:
    q = request.query_params
    filters = {
        "namespace": q.get("namespace") or DEFAULT_NAMESPACE,
        "task": q.get("task") or "",
        "phase": q.get("phase") or "",
        "tag": q.get("tag") or "",
    }
    limit_text = q.get("limit") or "50"
    problems = []
    if not _valid(DNS_LABEL, filters["namespace"], 63):
        problems.append("the namespace is not a valid name")
    if filters["phase"] and filters["phase"] not in {p.value for p in Phase}:
        problems.append(f"there is no phase {filters['phase']!r}")
    limit = int(limit_text) if limit_text.isdigit() else 0
    if not 1 <= limit <= 500:
        problems.append("the page size is a number from 1 to 500")
    after = None
    try:
        after = decode_cursor(q.get("cursor"))
    except Problem:
        problems.append("the page cursor is not valid: start from the first page")
    context: dict[str, Any] = {
        "user": user,
        "filters": filters,
        "limit": limit or 50,
        "phases": [p.value for p in Phase],
        "page_sizes": PAGE_SIZES,
        "problems": problems,
        "rows": [],
        "next_query": None,
        "first_query": None,
    }
    if problems:
        return html.render("runs.html", 422, **context)
    found = await runs.page(
        await _pool(request),
        filters["namespace"],
        task=filters["task"] or None,
        phase=filters["phase"] or None,
        tag=filters["tag"] or None,
        after=after,
        limit=limit + 1,
    )
    more, found = len(found) > limit, found[:limit]
    now = utcnow()
    context["rows"] = [_row(run, now) for run in found]
    kept = {**{k: v for k, v in filters.items() if v}, "limit": limit}
    if after is not None:
        context["first_query"] = kept
    if more and found:
        context["next_query"] = {**kept, "cursor": encode_cursor(found[-1])}
    return html.render("runs.html", **context)


def _row(run: runs.Run, now: datetime) -> dict[str, Any]:
    ended = run.finished_at or now
    return {
        "run": run,
        "href": f"/runs/{run.namespace}/{run.name}",
        "created": timeline.stamp(run.created_at),
        "ago": timeline.since(run.created_at, now),
        "duration": format_duration(ended - run.created_at),
        "ongoing": run.finished_at is None,
    }


@router.get("/runs/{namespace}/{name}")
async def run_page(request: Request, namespace: str, name: str) -> Response:
    async def show(request: Request, user: str) -> Response:
        return await _timeline(request, user, namespace, name)

    return await _page(request, show)


async def _timeline(request: Request, user: str, namespace: str, name: str) -> Response:
    missing = f'There is no run "{name}" in namespace "{namespace}".'
    if not (_valid(DNS_LABEL, namespace, 63) and _valid(DNS_SUBDOMAIN, name, 253)):
        return html.error_page(404, "Not Found", missing, user=user)
    pool = await _pool(request)
    found = await records.load(pool, namespace, name)
    if found is None:
        return html.error_page(404, "Not Found", missing, user=user)
    run = found.run
    children = {c.step: c.name for c in found.children}
    layout = timeline.layout(run, found.pods, found.marks, utcnow(), children)
    return html.render(
        "run.html",
        user=user,
        run=run,
        layout=layout,
        children=found.children,
        parent=await _parent(request, pool, namespace, name),
        created=timeline.stamp(run.created_at),
        started=timeline.stamp(run.started_at),
        finished=timeline.stamp(run.finished_at),
        resume_at=timeline.stamp(run.resume_at) if run.resume_at else None,
    )


async def _parent(
    request: Request, pool: store.Pool, namespace: str, name: str
) -> dict[str, Any] | None:
    """The run that started this one (its TaskRun's ``spec.parent``), with a link while
    its record lives; a note instead when the cluster cannot be asked."""
    try:
        taskrun = await request.app.state.kube.get_taskrun(namespace, name)
    except Exception as exc:  # the page shows the record whatever the cluster does
        log.warning("cannot read TaskRun %s/%s for its parent: %s", namespace, name, exc)
        return {"name": None, "href": None, "note": "unknown: the cluster cannot be asked now"}
    parent = ((taskrun or {}).get("spec") or {}).get("parent")
    if not parent:
        return None
    try:
        record = await runs.get(pool, UUID(str(parent.get("uid"))))
    except ValueError:
        record = None
    if record is None or record.removed_at is not None:
        return {"name": parent.get("name"), "href": None, "note": "its record is gone"}
    return {"name": record.name, "href": f"/runs/{record.namespace}/{record.name}", "note": ""}
