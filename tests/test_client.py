"""The Python clients build the same requests and parse the same answers, checked over an
httpx MockTransport (the end-to-end tests against durapod dev are in test_client_cli.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from durapod.client import AsyncClient, Client, NotFound, Unavailable

URL = "http://durapod.test"
PAGE = {
    "runs": [
        {
            "id": "1",
            "name": "double-abc",
            "namespace": "team-a",
            "task": "double",
            "phase": "Succeeded",
            "attempt": 1,
            "tags": ["nightly"],
            "createdAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:01Z",
        }
    ],
    "nextCursor": "c2",
}
QUEUES = {
    "queues": [
        {
            "name": "default",
            "concurrencyLimit": None,
            "concurrencyKeyLimit": None,
            "running": 2,
            "waiting": 0,
        },
        {
            "name": "emails",
            "concurrencyLimit": 5,
            "concurrencyKeyLimit": 1,
            "running": 5,
            "waiting": 3,
        },
    ]
}


class Api:
    """Answers like the durapod API and records each request."""

    def __init__(self, unavailable: int = 0) -> None:
        self.requests: list[httpx.Request] = []
        #: Answer this many requests 503 first (the API's database away).
        self.unavailable = unavailable

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.unavailable:
            self.unavailable -= 1
            body = {"detail": "the database is unavailable; retry later"}
            return httpx.Response(503, json=body, headers={"Retry-After": "0"})
        assert request.headers["Authorization"] == "Bearer secret"
        path = request.url.path
        if path.startswith("/v1/namespaces/gone/"):
            return httpx.Response(404, json={"detail": 'namespace "gone" not found'})
        if path.endswith("/runs") and request.method == "GET":
            return httpx.Response(200, json=PAGE)
        if path.endswith("/queues") and request.method == "GET":
            return httpx.Response(200, json=QUEUES)
        return httpx.Response(404, json={"detail": f"no route {path}"})

    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        return [(r.method, r.url.path, dict(r.url.params)) for r in self.requests]


def _sync(api: Api, **options: Any) -> Client:
    class Http(httpx.Client):
        def __init__(self, **options: Any) -> None:
            super().__init__(transport=httpx.MockTransport(api), **options)

    class Mocked(Client):
        http_class = Http

    return Mocked(URL, "secret", namespace="team-a", **options)


def _async(api: Api, **options: Any) -> AsyncClient:
    class Http(httpx.AsyncClient):
        def __init__(self, **options: Any) -> None:
            super().__init__(transport=httpx.MockTransport(api), **options)

    class Mocked(AsyncClient):
        http_class = Http

    return Mocked(URL, "secret", namespace="team-a", **options)


EXPECTED_REQUESTS = [
    ("GET", "/v1/namespaces/team-a/runs", {"task": "double", "tag": "nightly", "limit": "1"}),
    ("GET", "/v1/namespaces/other/runs", {"cursor": "c2"}),
    ("GET", "/v1/namespaces/team-a/queues", {}),
    ("GET", "/v1/namespaces/other/queues", {}),
]


def test_async_client_lists_runs_and_queues() -> None:
    api = Api()

    async def go() -> tuple[Any, ...]:
        async with _async(api) as durapod:
            page = await durapod.list(task="double", tag="nightly", limit=1, phase=None)
            other = await durapod.list(namespace="other", cursor="c2")
            queues = await durapod.queues()
            other_queues = await durapod.queues(namespace="other")
            return page, other, queues, other_queues

    page, other, queues, other_queues = asyncio.run(go())
    assert api.seen() == EXPECTED_REQUESTS  # None filters are left out
    assert page == other == PAGE
    assert page["runs"][0]["name"] == "double-abc" and page["nextCursor"] == "c2"
    assert queues == other_queues == QUEUES["queues"]
    assert isinstance(queues, list)
    assert [(q["name"], q["running"], q["waiting"]) for q in queues] == [
        ("default", 2, 0),
        ("emails", 5, 3),
    ]


def test_sync_and_async_clients_agree() -> None:
    sync_api, async_api = Api(), Api()
    with _sync(sync_api) as durapod:
        sync = (
            durapod.list(task="double", tag="nightly", limit=1),
            durapod.list(namespace="other", cursor="c2"),
            durapod.queues(),
            durapod.queues(namespace="other"),
        )

    async def go() -> tuple[Any, ...]:
        async with _async(async_api) as durapod:
            return (
                await durapod.list(task="double", tag="nightly", limit=1),
                await durapod.list(namespace="other", cursor="c2"),
                await durapod.queues(),
                await durapod.queues(namespace="other"),
            )

    assert asyncio.run(go()) == sync
    assert async_api.seen() == sync_api.seen() == EXPECTED_REQUESTS


def test_async_client_raises_typed_errors() -> None:
    async def go() -> None:
        async with _async(Api()) as durapod:
            await durapod.queues(namespace="gone")

    with pytest.raises(NotFound, match='namespace "gone" not found'):
        asyncio.run(go())


def test_a_503_is_tried_again_after_its_retry_after_then_raised_typed() -> None:
    api = Api(unavailable=2)
    with _sync(api) as durapod:
        assert durapod.queues() == QUEUES["queues"]  # the third try got through
    assert len(api.requests) == 3

    async def go() -> None:
        async with _async(Api(unavailable=10), retries=2) as durapod:
            await durapod.queues()

    with pytest.raises(Unavailable, match="database is unavailable") as raised:
        asyncio.run(go())
    assert raised.value.status == 503 and raised.value.retry_after == 0
