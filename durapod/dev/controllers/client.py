"""How the stand-in's controllers talk to its API server: over HTTP, as controllers do.

A controller here is kube-controller-manager's loop in miniature: it lists and watches
the kinds it cares about (:func:`watch`), turns each event into a key on a
:class:`WorkQueue`, and reconciles one key at a time by reading the objects afresh and
writing what should change. Reads go to the API server each time rather than to an
informer cache, so a controller never acts twice on a pod it created a moment ago and
has not yet seen (what client-go's "expectations" exist for); the stand-in is small
enough that the extra reads cost nothing that matters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp

from durapod.operator.workqueue import Backoff, WorkQueue

log = logging.getLogger("durapod.dev.controllers")
Obj = dict[str, Any]
K = TypeVar("K", bound=Hashable)
#: kube-controller-manager's User-Agent; the API server names the field manager after
#: its first part, so managedFields read ``kube-controller-manager`` as on a cluster.
USER_AGENT = "kube-controller-manager/v1.35.0 (linux/amd64) kubernetes/durapod"
#: How long a watch stays open before it is renewed (client-go picks 5 to 10 minutes).
WATCH_SECONDS = 300


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp, or None."""
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class ApiError(Exception):
    """An API call answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message", "") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body
        self.reason = body.get("reason", "") if isinstance(body, dict) else ""


class Client:
    """One controller's client of the API server: JSON in, JSON out, errors raised."""

    def __init__(self, api_url: str, token: str, component: str) -> None:
        self.api_url = api_url
        self.token = token
        #: Who posts this client's Events (``deployment-controller``, say).
        self.component = component
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "User-Agent": f"{USER_AGENT}/{self.component}",
                }
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Obj:
        url = self.api_url + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, url, data=data, headers=headers) as response:
            answer = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(response.status, answer)
            result: Obj = answer
            return result

    async def get(self, path: str) -> Obj | None:
        """The object at ``path``, or None when there is none."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, selector: str = "") -> list[Obj]:
        query = {"labelSelector": selector} if selector else None
        items: list[Obj] = (await self.request("GET", path, query=query))["items"]
        return items

    async def merge_patch(self, path: str, patch: Obj) -> Obj:
        return await self.request("PATCH", path, patch, "application/merge-patch+json")

    async def delete(self, path: str, body: Obj | None = None) -> None:
        try:
            await self.request(
                "DELETE", path, body or {"kind": "DeleteOptions", "apiVersion": "v1"}
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def record(self, obj: Obj, type: str, reason: str, message: str) -> None:
        """Post an Event about ``obj`` from this controller (never fails the caller)."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": "",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
        }
        try:
            await self.request("POST", f"/api/v1/namespaces/{namespace}/events", event)
        except (ApiError, aiohttp.ClientError, OSError) as exc:
            log.warning("could not record %s on %s: %s", reason, meta["name"], exc)


async def watch(
    client: Client, path: str, on_event: Callable[[str, Obj], None], ready: asyncio.Event
) -> None:
    """List ``path`` and watch it from there, for ever: every object listed is passed on
    as ADDED, then each watch event; a watch that ends or expires (410) is followed by a
    new list. ``ready`` is set after the first list, as an informer's HasSynced."""
    while True:
        try:
            listing = await client.request("GET", path)
            for obj in listing["items"]:
                on_event("ADDED", obj)
            ready.set()
            query = {
                "watch": "true",
                "resourceVersion": listing["metadata"]["resourceVersion"],
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
            url = f"{client.api_url}{path}?{urlencode(query)}"
            async with client.session.get(url, timeout=aiohttp.ClientTimeout()) as response:
                async for line in response.content:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], event["object"])
        except (aiohttp.ClientError, OSError, ApiError, ValueError) as exc:
            log.warning("watching %s: %s; retrying", path, exc)
            await asyncio.sleep(0.5)


def work_queue(handler: Callable[[K], Awaitable[None]]) -> WorkQueue[K]:
    """A controller's work queue: the operator's (nothing dropped, a key handled by one
    worker at a time, failures retried with back-off), one worker, client-go's short
    first delay; a write conflict is expected and logged without a traceback."""
    return WorkQueue(
        handler,
        workers=1,
        backoff=Backoff(base=0.005, max=30.0),
        transient=lambda exc: isinstance(exc, ApiError) and exc.status == 409,
    )


async def serve(
    client: Client,
    queue: WorkQueue[Any],
    watches: Sequence[tuple[str, Callable[[str, Obj], None], bool]],
    synced: asyncio.Event,
) -> None:
    """A controller's loop until cancelled: each watch (path, handler, and whether the
    controller waits for its first list) and the work queue; ``synced`` is set once every
    awaited watch has listed."""
    ready = [asyncio.Event() for _ in watches]
    tasks = [
        asyncio.create_task(watch(client, path, handler, listed))
        for (path, handler, _), listed in zip(watches, ready, strict=True)
    ]
    tasks.append(asyncio.create_task(queue.run()))
    try:
        for (_, _, awaited), listed in zip(watches, ready, strict=True):
            if awaited:
                await listed.wait()
        synced.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: Obj) -> Obj:
    """A reference to ``owner`` as its controller (blocking its foreground deletion)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_query(selector: Obj) -> str:
    """A LabelSelector as the ``labelSelector`` query parameter."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service's selector (a plain map) against an object's labels."""
    return all(labels.get(k) == v for k, v in selector.items())
