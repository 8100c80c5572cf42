"""The stand-in Kubernetes API server: HTTP (aiohttp) over :class:`Cluster`.

It speaks the wire contract that kubectl 1.35 and kopf 1.45 rely on (see
shared/K8S-API-NOTES.md): legacy discovery, ``/openapi/v3``, JSON lists and Tables,
chunked watch streams from a resourceVersion with bookmarks and 410s, Status errors,
pod logs, evictions, bindings and TokenReview.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from durapod.dev.apiserver import errors, openapi, tables
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.apiserver.registry import ResourceType
from durapod.dev.apiserver.selectors import field_selector, label_selector
from durapod.dev.apiserver.storage import Change, Obj, Watcher

VERSION_INFO = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0-durapod",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-12-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
BOOKMARK_SECONDS = 5.0
DEFAULT_WATCH_SECONDS = 1800
MAX_BODY_BYTES = 3 * 1024 * 1024
_SUCCESS_CREATED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Success",
    "code": 201,
}


def _json(data: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )
    for warning in warnings or []:
        response.headers.add("Warning", f'299 - "{warning}"')
    return response


@dataclass
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class ApiServer:
    def __init__(self, cluster: Cluster, token: str, log_dir: Path) -> None:
        self.cluster = cluster
        self.token = token
        self.log_dir = log_dir
        self._streams: set[asyncio.Task[Any]] = set()
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_shutdown.append(self._close_streams)

    async def _close_streams(self, _: web.Application) -> None:
        for task in list(self._streams):
            task.cancel()

    # -- dispatch ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            # Like kube-apiserver's old localhost insecure port, plain HTTP without
            # credentials is the cluster admin (kubectl sends no token over http://);
            # a token that is sent must be the right one.
            sent = request.headers.get("Authorization")
            if sent is not None and sent != f"Bearer {self.token}":
                raise errors.StatusError(401, "Unauthorized", "Unauthorized")
            return await self._dispatch(request)
        except errors.StatusError as exc:
            return _json(exc.body(), exc.code)
        except web.HTTPRequestEntityTooLarge:
            return _json(
                errors.StatusError(
                    413,
                    "RequestEntityTooLarge",
                    f"Request entity too large: limit is {MAX_BODY_BYTES}",
                ).body(),
                413,
            )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path == "/version":
            return _json(VERSION_INFO)
        if parts[:1] == ["openapi"]:
            return self._openapi(parts)
        if parts == ["api"]:
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                    ],
                }
            )
        if parts == ["apis"]:
            return _json(self._group_list())
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[:1] == ["apis"] and len(parts) == 2:
            return _json(self._group(parts[1]))
        else:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource"
            )
        if not rest:
            return _json(self._resource_list(group, version))
        target = self._target(group, version, rest)
        return await self._resource(request, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        def find(plural: str) -> ResourceType | None:
            return self.cluster.registry.find(group, version, plural)

        if rest[0] == "namespaces" and len(rest) >= 3 and (rt := find(rest[2])) is not None:
            return Target(
                rt, rest[1], rest[3] if len(rest) > 3 else None, rest[4] if len(rest) > 4 else None
            )
        rt = find(rest[0])
        if rt is None or len(rest) > 3:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return Target(
            rt, None, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        )

    # -- discovery and openapi ---------------------------------------------------------

    def _group(self, group: str) -> dict[str, Any]:
        versions = [
            {"groupVersion": f"{group}/{v}", "version": v}
            for v in self.cluster.registry.versions(group)
        ]
        if not versions:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": versions,
            "preferredVersion": versions[0],
        }

    def _group_list(self) -> dict[str, Any]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group(g) for g in self.cluster.registry.groups()],
        }

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = self.cluster.registry.in_group_version(group, version)
        if not types:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rt in types for entry in rt.discovery()],
        }

    def _openapi(self, parts: list[str]) -> web.Response:
        if parts[:2] != ["openapi", "v3"]:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource"
            )
        if len(parts) == 2:
            return _json(openapi.index(self.cluster.registry))
        doc = openapi.document(self.cluster.registry, "/".join(parts[2:]))
        if doc is None:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return _json(doc)

    # -- resources ---------------------------------------------------------------------

    async def _resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        opts = Options(
            field_validation=q.get("fieldValidation", "Warn"), dry_run=q.get("dryRun") == "All"
        )
        ns = t.namespace or ""
        method = request.method
        if t.name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                result = self.cluster.create(t.rt, ns, await self._body(request), opts)
                return _json(result.obj, 201, result.warnings)
            if method == "DELETE":
                return self._delete_collection(request, t)
        elif t.subresource in (None, "status"):
            if method == "GET":
                return self._one(request, t.rt, self.cluster.get(t.rt, ns, t.name))
            if method == "PUT":
                result = self.cluster.update(
                    t.rt, ns, t.name, await self._body(request), t.subresource, opts
                )
                return _json(result.obj, 200, result.warnings)
            if method == "PATCH":
                content_type = request.headers.get("Content-Type", "").split(";")[0]
                result = self.cluster.patch(
                    t.rt, ns, t.name, content_type, await request.read(), t.subresource, opts
                )
                return _json(result.obj, 201 if result.created else 200, result.warnings)
            if method == "DELETE" and t.subresource is None:
                raw = await request.read()
                options = json.loads(raw) if raw else {}
                for key in ("gracePeriodSeconds", "propagationPolicy"):
                    if key in q:
                        options[key] = int(q[key]) if key == "gracePeriodSeconds" else q[key]
                return _json(self.cluster.delete(t.rt, ns, t.name, options))
        elif t.rt.plural == "pods" and t.subresource == "log" and method == "GET":
            return await self._log(request, ns, t.name)
        elif t.rt.plural == "pods" and t.subresource == "eviction" and method == "POST":
            body = await self._body(request)
            self.cluster.evict(ns, t.name, body.get("deleteOptions") or {})
            return _json(_SUCCESS_CREATED, 201)
        elif t.rt.plural == "pods" and t.subresource == "binding" and method == "POST":
            body = await self._body(request)
            self.cluster.bind(ns, t.name, body.get("target", {}).get("name", "node"))
            return _json(_SUCCESS_CREATED, 201)
        raise errors.StatusError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested "
            f"resource ({method} {request.path})",
        )

    async def _body(self, request: web.Request) -> Obj:
        if "protobuf" in request.headers.get("Content-Type", ""):
            # Protobuf is not spoken here; clients then fall back to JSON.
            raise errors.StatusError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json, application/yaml",
            )
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise errors.bad_request(f"the body of the request is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return body

    def _wants_table(self, request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    def _one(self, request: web.Request, rt: ResourceType, obj: Obj) -> web.Response:
        if self._wants_table(request):
            return _json(
                tables.table(
                    rt,
                    [obj],
                    obj["metadata"]["resourceVersion"],
                    request.query.get("includeObject", "Metadata"),
                )
            )
        return _json(obj)

    def _selected(self, request: web.Request, t: Target) -> list[Obj]:
        labels = label_selector(request.query.get("labelSelector"))
        fields = field_selector(request.query.get("fieldSelector"))
        return [o for o in self.cluster.objects(t.rt, t.namespace) if labels(o) and fields(o)]

    def _list(self, request: web.Request, t: Target) -> web.Response:
        items = self._selected(request, t)
        revision = str(self.cluster.storage.revision)
        q = request.query
        if token := q.get("continue"):
            after = base64.urlsafe_b64decode(token.encode()).decode()
            items = [o for o in items if _sort_key(o) > after]
        next_token = ""
        if (limit := int(q.get("limit", "0") or 0)) and len(items) > limit:
            items = items[:limit]
            next_token = base64.urlsafe_b64encode(_sort_key(items[-1]).encode()).decode()
        if self._wants_table(request):
            return _json(tables.table(t.rt, items, revision, q.get("includeObject", "Metadata")))
        return _json(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": revision, "continue": next_token},
                "items": items,
            }
        )

    def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        for obj in self._selected(request, t):
            meta = obj["metadata"]
            with contextlib.suppress(errors.StatusError):
                self.cluster.delete(t.rt, meta.get("namespace", ""), meta["name"], {})
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    # -- watch -------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        labels = label_selector(q.get("labelSelector"))
        fields = field_selector(q.get("fieldSelector"))
        watcher = Watcher(t.rt.key, t.namespace, lambda o: labels(o) and fields(o))
        storage = self.cluster.storage
        rv = q.get("resourceVersion", "")
        initial: list[Change] | None
        if rv in ("", "0") or q.get("sendInitialEvents") == "true":
            initial = [Change(0, t.rt.key, "ADDED", o) for o in self._selected(request, t)]
        else:
            initial = storage.changes_since(int(rv))
            if initial is not None:
                initial = [c for c in initial if watcher.wants(c)]
        # Registered before the first await: no change can fall between replay and live.
        storage.watchers.add(watcher)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            if initial is None:
                await _send(
                    response,
                    "ERROR",
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "reason": "Expired",
                        "code": 410,
                        "message": f"too old resource version: {rv} ({storage.history[0].rv})",
                    },
                )
                return response
            for replayed in initial:
                await _send(response, replayed.type, replayed.obj)
            if q.get("sendInitialEvents") == "true":
                await self._bookmark(response, t, {"k8s.io/initial-events-end": "true"})
            timeout = float(q.get("timeoutSeconds", DEFAULT_WATCH_SECONDS))
            bookmarks = q.get("allowWatchBookmarks") == "true"
            async for change in _changes(watcher, timeout, BOOKMARK_SECONDS):
                if change is None:
                    if bookmarks:
                        await self._bookmark(response, t)
                else:
                    await _send(response, change.type, change.obj)
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            return web.Response()
        finally:
            storage.watchers.discard(watcher)
            self._streams.discard(task)

    async def _bookmark(
        self, response: web.StreamResponse, t: Target, annotations: dict[str, str] | None = None
    ) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(self.cluster.storage.revision)}
        if annotations:
            meta["annotations"] = annotations
        await _send(
            response,
            "BOOKMARK",
            {"kind": t.rt.kind, "apiVersion": t.rt.api_version, "metadata": meta},
        )

    # -- logs --------------------------------------------------------------------------

    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pods = self.cluster.registry.find("", "v1", "pods")
        assert pods is not None
        pod = self.cluster.get(pods, namespace, name)
        path = self.log_dir / log_file_name(namespace, name, pod["metadata"]["uid"])
        q = request.query
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        data = path.read_bytes() if path.exists() else b""
        if tail := q.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) else b""
        if limit := q.get("limitBytes"):
            data = data[: int(limit)]
        await response.write(data)
        if q.get("follow") == "true":
            offset = path.stat().st_size if path.exists() else 0
            while True:
                current = self.cluster.storage.get(pods.key, namespace, name)
                finished = current is None or current.get("status", {}).get("phase") in (
                    "Succeeded",
                    "Failed",
                )
                if path.exists() and path.stat().st_size > offset:
                    with path.open("rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                    offset += len(chunk)
                    await response.write(chunk)
                elif finished:
                    break
                else:
                    await asyncio.sleep(0.1)
        await response.write_eof()
        return response


def log_file_name(namespace: str, name: str, uid: str) -> str:
    """Where a pod's log lives, as under /var/log/pods on a node."""
    return f"{namespace}_{name}_{uid}.log"


def _sort_key(obj: Obj) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


async def _send(response: web.StreamResponse, event: str, obj: Obj) -> None:
    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")


async def _changes(watcher: Watcher, timeout: float, idle: float) -> AsyncIterator[Change | None]:
    """Changes for one watcher until ``timeout``; None after each ``idle`` quiet period."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        change: Change | None = None
        with contextlib.suppress(TimeoutError):
            change = await asyncio.wait_for(watcher.queue.get(), min(idle, left))
        yield change
