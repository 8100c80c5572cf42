"""A client for the durapod API, for services in the cluster and for scripts (httpx).

``Client`` is synchronous, ``AsyncClient`` asynchronous; both build the same calls. The
URL and token default to ``DURAPOD_API_URL`` and ``DURAPOD_TOKEN`` (as ``durapod dev``
writes them), else the pod's ServiceAccount token::

    with Client() as durapod:
        run = durapod.trigger("process-order", {"id": 7}, idempotency_key="order-7")
        done = durapod.wait(run.name)
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

# The SDK's errors: ``ApiError`` (status, detail) is what every refused call raises, under
# the root ``DurapodError``; both are importable from here too.
from durapod.runner.errors import ApiError as ApiError
from durapod.runner.errors import DurapodError as DurapodError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
FINISHED = frozenset({"Succeeded", "Failed", "Cancelled", "TimedOut"})
LONG_POLL_SECONDS = 30.0


class Unauthorized(ApiError):
    """401: no valid bearer token."""


class NotFound(ApiError):
    """404: no such task or run."""


class InvalidRequest(ApiError):
    """400/413/422: a bad payload or option; nothing was created."""


class Unavailable(ApiError):
    """503: the API cannot reach its database; nothing was created. Try again after
    ``retry_after`` seconds (the clients do so themselves, ``retries`` times)."""

    def __init__(self, status: int, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


class WaitTimeout(ApiError):
    """The run did not finish within the time ``wait`` was given."""


_ERRORS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    404: NotFound,
    400: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
}


@dataclass(frozen=True)
class Run:
    """A run as the API reports it; ``raw`` holds every field."""

    name: str
    namespace: str
    task: str
    id: str | None = None
    phase: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    duplicate: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @classmethod
    def of(cls, body: dict[str, Any]) -> Run:
        return cls(
            name=body["name"],
            namespace=body["namespace"],
            task=body["task"],
            id=body.get("id"),
            phase=body.get("phase"),
            output=body.get("output"),
            error=body.get("error"),
            duplicate=body.get("duplicate", False),
            raw=body,
        )


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None


def _options(**options: Any) -> dict[str, Any]:
    names = {
        "idempotency_key": "idempotencyKey",
        "idempotency_key_ttl": "idempotencyKeyTTL",
        "concurrency_key": "concurrencyKey",
        "not_before": "notBefore",
    }
    return {names.get(k, k): v for k, v in options.items() if v is not None}


class _Calls:
    """The API's calls, shared by the sync and async clients."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _base(self, namespace: str | None) -> str:
        return f"/v1/namespaces/{namespace or self.namespace}"

    def trigger(self, task: str, payload: Any, namespace: str | None, **options: Any) -> Call:
        body = {"payload": payload or {}, **_options(**options)}
        return Call("POST", f"{self._base(namespace)}/tasks/{task}/runs", body)

    def batch(self, runs: list[dict[str, Any]], namespace: str | None) -> Call:
        return Call("POST", f"{self._base(namespace)}/runs/batch", {"runs": runs})

    def get(self, name: str, namespace: str | None, wait: float = 0) -> Call:
        return Call(
            "GET", f"{self._base(namespace)}/runs/{name}", params={"wait": wait} if wait else None
        )

    def list(self, namespace: str | None, **filters: Any) -> Call:
        return Call("GET", f"{self._base(namespace)}/runs", params=_options(**filters))

    def queues(self, namespace: str | None) -> Call:
        return Call("GET", f"{self._base(namespace)}/queues")

    def logs(self, name: str, namespace: str | None, **options: Any) -> Call:
        return Call(
            "GET", f"{self._base(namespace)}/runs/{name}/logs", params=_options(**options) or None
        )

    def act(self, name: str, action: str, namespace: str | None) -> Call:
        return Call("POST", f"{self._base(namespace)}/runs/{name}/{action}")


def _page(body: Any) -> dict[str, Any]:
    """A page of runs: ``runs`` (summaries, newest first) and ``nextCursor``."""
    page: dict[str, Any] = body
    return page


def _queues(body: Any) -> list[dict[str, Any]]:
    """The queues of a ``/queues`` answer."""
    return list(body["queues"])


def _logs(body: Any) -> dict[str, Any]:
    """A run's logs: ``name``, ``phase``, ``message`` and ``pods`` (each with its log)."""
    logs: dict[str, Any] = body
    return logs


def _settings(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    url = url or os.environ.get("DURAPOD_API_URL")
    if not url:
        raise ValueError("no durapod API URL: pass url= or set DURAPOD_API_URL")
    token = token or os.environ.get("DURAPOD_TOKEN")
    if not token and SERVICE_ACCOUNT_TOKEN.exists():
        token = SERVICE_ACCOUNT_TOKEN.read_text().strip()
    return url.rstrip("/"), {"Authorization": f"Bearer {token}"} if token else {}


def _result(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        if response.status_code == 503:
            retry_after = response.headers.get("retry-after", "1")
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 1.0
            raise Unavailable(503, detail, wait)
        raise _ERRORS.get(response.status_code, ApiError)(response.status_code, detail)
    return response.json()


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class _Base(Generic[HttpT]):
    """What both clients hold: the HTTP client (of ``http_class``) and the calls."""

    http_class: type[HttpT]

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        namespace: str = "default",
        timeout: float = 60.0,
        retries: int = 5,
    ) -> None:
        """``retries``: how often a 503 (nothing was created) is tried again, after the
        ``Retry-After`` it came with; then ``Unavailable`` is raised."""
        self.retries = retries
        base, headers = _settings(url, token)
        self._http: HttpT = self.http_class(base_url=base, headers=headers, timeout=timeout)
        self._calls = _Calls(namespace)


class Client(_Base[httpx.Client]):
    """Synchronous client. Use as a context manager, or call ``close()``."""

    http_class = httpx.Client

    def _send(self, call: Call) -> Any:
        for retry in range(self.retries + 1):
            try:
                return _result(
                    self._http.request(call.method, call.path, json=call.json, params=call.params)
                )
            except Unavailable as exc:
                if retry == self.retries:
                    raise
                time.sleep(exc.retry_after)
        raise AssertionError("unreachable")

    def trigger(
        self, task: str, payload: Any = None, *, namespace: str | None = None, **options: Any
    ) -> Run:
        """Trigger a run; options: idempotency_key, idempotency_key_ttl, concurrency_key,
        priority, delay, not_before, ttl, tags."""
        return Run.of(self._send(self._calls.trigger(task, payload, namespace, **options)))

    def batch_trigger(
        self, runs: list[dict[str, Any]], *, namespace: str | None = None
    ) -> list[Run]:
        return [Run.of(r) for r in self._send(self._calls.batch(runs, namespace))["runs"]]

    def get(self, name: str, *, namespace: str | None = None) -> Run:
        return Run.of(self._send(self._calls.get(name, namespace)))

    def wait(self, name: str, *, timeout: float = 300.0, namespace: str | None = None) -> Run:
        """Long-poll until the run finishes; WaitTimeout after ``timeout`` seconds."""
        for chunk in _chunks(timeout):
            run = Run.of(self._send(self._calls.get(name, namespace, chunk)))
            if run.finished:
                return run
        raise WaitTimeout(408, f"run {name} did not finish within {timeout:g}s")

    def list(self, *, namespace: str | None = None, **filters: Any) -> dict[str, Any]:
        """A page of runs; filters: task, phase, tag, since, until, limit, cursor."""
        return _page(self._send(self._calls.list(namespace, **filters)))

    def queues(self, *, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """Each queue: limits, runs holding a slot, runs waiting."""
        return _queues(self._send(self._calls.queues(namespace)))

    def logs(
        self,
        name: str,
        *,
        namespace: str | None = None,
        attempt: int | None = None,
        tail: int | None = None,
    ) -> dict[str, Any]:
        """The run's phase and each of its pods (in order) with its log: ``pods`` items
        carry ``pod``, ``attempt``, ``outcome``, ``reason``, ``log`` (None when gone) and
        ``note`` (why there is no log). ``attempt``: only its pods; ``tail``: last lines."""
        return _logs(self._send(self._calls.logs(name, namespace, attempt=attempt, tail=tail)))

    def cancel(self, name: str, *, namespace: str | None = None) -> Run:
        return Run.of(self._send(self._calls.act(name, "cancel", namespace)))

    def replay(self, name: str, *, namespace: str | None = None) -> Run:
        return Run.of(self._send(self._calls.act(name, "replay", namespace)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(_Base[httpx.AsyncClient]):
    """Asynchronous client (``async with AsyncClient() as durapod: ...``)."""

    http_class = httpx.AsyncClient

    async def _send(self, call: Call) -> Any:
        for retry in range(self.retries + 1):
            try:
                return _result(
                    await self._http.request(
                        call.method, call.path, json=call.json, params=call.params
                    )
                )
            except Unavailable as exc:
                if retry == self.retries:
                    raise
                await asyncio.sleep(exc.retry_after)
        raise AssertionError("unreachable")

    async def trigger(
        self, task: str, payload: Any = None, *, namespace: str | None = None, **options: Any
    ) -> Run:
        return Run.of(await self._send(self._calls.trigger(task, payload, namespace, **options)))

    async def batch_trigger(
        self, runs: list[dict[str, Any]], *, namespace: str | None = None
    ) -> list[Run]:
        body = await self._send(self._calls.batch(runs, namespace))
        return [Run.of(r) for r in body["runs"]]

    async def get(self, name: str, *, namespace: str | None = None) -> Run:
        return Run.of(await self._send(self._calls.get(name, namespace)))

    async def wait(self, name: str, *, timeout: float = 300.0, namespace: str | None = None) -> Run:
        for chunk in _chunks(timeout):
            run = Run.of(await self._send(self._calls.get(name, namespace, chunk)))
            if run.finished:
                return run
        raise WaitTimeout(408, f"run {name} did not finish within {timeout:g}s")

    async def list(self, *, namespace: str | None = None, **filters: Any) -> dict[str, Any]:
        """A page of runs; filters: task, phase, tag, since, until, limit, cursor."""
        return _page(await self._send(self._calls.list(namespace, **filters)))

    async def queues(self, *, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """Each queue: limits, runs holding a slot, runs waiting."""
        return _queues(await self._send(self._calls.queues(namespace)))

    async def logs(
        self,
        name: str,
        *,
        namespace: str | None = None,
        attempt: int | None = None,
        tail: int | None = None,
    ) -> dict[str, Any]:
        """As :meth:`Client.logs`."""
        call = self._calls.logs(name, namespace, attempt=attempt, tail=tail)
        return _logs(await self._send(call))

    async def cancel(self, name: str, *, namespace: str | None = None) -> Run:
        return Run.of(await self._send(self._calls.act(name, "cancel", namespace)))

    async def replay(self, name: str, *, namespace: str | None = None) -> Run:
        return Run.of(await self._send(self._calls.act(name, "replay", namespace)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def _chunks(total: float) -> list[float]:
    """Long-poll windows covering ``total`` seconds."""
    chunks, left = [], total
    while left > 0:
        chunks.append(min(left, LONG_POLL_SECONDS))
        left -= LONG_POLL_SECONDS
    return chunks or [0.0]
