"""The stand-in Kubernetes API server: HTTP (aiohttp) over :class:`Cluster`.

It speaks the wire contract that kubectl 1.35 and kopf 1.45 rely on (see
shared/K8S-API-NOTES.md): legacy discovery, ``/openapi/v3``, JSON lists and Tables,
chunked watch streams from a resourceVersion with bookmarks and 410s, Status errors,
pod logs, evictions and bindings. Every request is authenticated and authorised first, and
the token and review endpoints are answered, by ``auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import unicodedata
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from durapod.dev.apiserver import auth, errors, openapi, paging, params, protobuf, scale, tables
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.apiserver.registry import ResourceType
from durapod.dev.apiserver.selectors import (
    Fields,
    Predicate,
    field_selector,
    label_selector,
    supported_fields,
)
from durapod.dev.apiserver.storage import Change, Obj, Watcher
from durapod.dev.apiserver.tokens import User

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
log = logging.getLogger("durapod.dev.apiserver")
#: Where a request keeps the user it acts as.
USER = web.RequestKey("user", User)
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


def internal_error(exc: BaseException) -> errors.StatusError:
    """apimachinery's NewInternalError: 500 InternalError, the error as its one cause."""
    text = str(exc) or type(exc).__name__
    return errors.StatusError(
        500, "InternalError", f"Internal error occurred: {text}", {"causes": [{"message": text}]}
    )


def _json(data: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )
    for header in warning_headers(warnings or []):
        response.headers.add("Warning", header)
    return response


#: apiserver's warning recorder (pkg/endpoints/filters/warning.go): past this many
#: characters in all, every warning is cut to the second number.
WARNINGS_TOTAL_RUNES = 4 * 1024
WARNINGS_ITEM_RUNES = 256


def warning_header(text: str) -> str | None:
    """``299 - "text"``, quoted as apimachinery's NewWarningHeader quotes it (backslash
    before ``"`` and ``\\``); None for a text a header cannot carry (control characters)."""
    if any(unicodedata.category(c) == "Cc" for c in text):
        return None
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted}"'


def warning_headers(texts: list[str]) -> list[str]:
    """The Warning headers of a response: empty and repeated texts dropped, and all of
    them cut short when together they pass the server's budget, as the recorder does."""
    unique = [t for t in dict.fromkeys(texts) if t]
    if sum(len(t) for t in unique) > WARNINGS_TOTAL_RUNES:
        unique = [t[:WARNINGS_ITEM_RUNES] for t in unique]
    headers = [warning_header(t) for t in unique]
    return [h for h in headers if h is not None]


@dataclass
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class ApiServer:
    def __init__(
        self, cluster: Cluster, token: str, log_dir: Path, request_log: Path | None = None
    ) -> None:
        self.cluster = cluster
        self.token = token
        self.log_dir = log_dir
        # ``token`` is the admin's; ``cluster.tokens`` may name it and others (a token file).
        static = {token: auth.static_user({"username": "admin", "groups": ["system:masters"]})}
        static.update({t: auth.static_user(user) for t, user in cluster.tokens.items()})
        self.auth = auth.Auth(cluster.storage, static, request_log)
        auth.install_default_policy(cluster)
        self._streams: set[asyncio.Task[Any]] = set()
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_shutdown.append(self._close_streams)
        self.app.on_cleanup.append(lambda _: _closed(self.auth))

    async def _close_streams(self, _: web.Application) -> None:
        for task in list(self._streams):
            task.cancel()

    # -- dispatch ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            # Authentication, impersonation and RBAC before routing, as on a cluster (a
            # forbidden request learns nothing, not even whether the resource exists).
            # Plain HTTP without credentials is the admin (see auth.INSECURE_SUPERUSER);
            # HTTPS without credentials is system:anonymous.
            request[USER] = self.auth.admit(
                request.method,
                request.path,
                request.query,
                request.headers,
                request.headers.getall("Impersonate-Group", []),
                secure=request.secure,
            )
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
        except ConnectionResetError:
            raise
        except Exception as exc:
            # A bug here still answers as kube-apiserver does: a JSON InternalError.
            log.exception("%s %s failed", request.method, request.path)
            failure = internal_error(exc)
            return _json(failure.body(), failure.code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path in ("/version", "/version/"):
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
        if parts == ["openapi", "v2"]:
            # JSON even when protobuf is asked for first (a real server would send the
            # gnostic protobuf; client-go's OpenAPISchema() cannot read this answer).
            return _json(openapi.swagger(self.cluster.registry))
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
            field_validation=q.get("fieldValidation", "Warn"),
            dry_run=params.dry_run(q, request.method),
            field_manager=q.get("fieldManager", ""),
            force=q["force"] in ("true", "1", "t", "T", "True", "TRUE") if "force" in q else None,
            user_agent=request.headers.get("User-Agent", ""),
        )
        ns = t.namespace or ""
        method = request.method
        if method == "POST" and self.auth.serves(t.rt.group, t.rt.plural, t.subresource):
            body = await self._body(request)
            answer = self.auth.answer(request[USER], t.rt.group, t.rt.plural, ns, t.name, body)
            return _json(answer, 201)
        if method in ("POST", "PUT", "PATCH") and self.auth.guards(request[USER], t.rt):
            return await self._guarded_write(request, t, opts)
        if t.name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                result = self.cluster.create(t.rt, ns, await self._body(request, t.rt), opts)
                return _json(result.obj, 201, result.warnings)
            if method == "DELETE":
                return await self._delete_collection(request, t)
        elif t.subresource in (None, "status"):
            if method == "GET":
                return self._one(request, t.rt, self.cluster.get(t.rt, ns, t.name))
            if method == "PUT":
                result = self.cluster.update(
                    t.rt, ns, t.name, await self._body(request, t.rt), t.subresource, opts
                )
                return _json(result.obj, 200, result.warnings)
            if method == "PATCH":
                content_type = request.headers.get("Content-Type", "").split(";")[0]
                result = self.cluster.patch(
                    t.rt, ns, t.name, content_type, await request.read(), t.subresource, opts
                )
                return _json(result.obj, 201 if result.created else 200, result.warnings)
            if method == "DELETE" and t.subresource is None:
                options = params.delete_options(await self._delete_options(request))
                dry_run = bool(options.get("dryRun"))
                return _json(self.cluster.delete(t.rt, ns, t.name, options, dry_run=dry_run))
        elif t.subresource == "scale" and t.rt.key in scale.SCALABLE:
            return await self._scale(request, t, opts)
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

    async def _scale(self, request: web.Request, t: Target, opts: Options) -> web.Response:
        """GET, PUT and PATCH of the ``scale`` subresource (an autoscaling/v1 Scale)."""
        ns, name = t.namespace or "", t.name or ""
        if request.method == "GET":
            return _json(self.cluster.scale(t.rt, ns, name))
        if request.method == "PUT":
            result = self.cluster.update_scale(t.rt, ns, name, await self._body(request), opts)
            return _json(result.obj, 200, result.warnings)
        if request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0]
            raw = await request.read()
            result = self.cluster.patch_scale(t.rt, ns, name, content_type, raw, opts)
            return _json(result.obj, 200, result.warnings)
        raise errors.StatusError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested "
            f"resource ({request.method} {request.path})",
        )

    async def _guarded_write(self, request: web.Request, t: Target, opts: Options) -> web.Response:
        """A write of a role or binding, refused if it grants more than the writer holds
        (a PATCH is tried as a dry run first to see what it would grant)."""
        ns, user = t.namespace or "", request[USER]
        if request.method == "PATCH" and t.name is not None:
            content_type = request.headers.get("Content-Type", "").split(";")[0]
            raw = await request.read()
            dry = dataclasses.replace(opts, dry_run=True)
            would = self.cluster.patch(t.rt, ns, t.name, content_type, raw, None, dry).obj
            self.auth.check_grant(user, t.rt.plural, ns, would)
            result = self.cluster.patch(t.rt, ns, t.name, content_type, raw, None, opts)
            return _json(result.obj, 201 if result.created else 200, result.warnings)
        body = await self._body(request, t.rt)
        self.auth.check_grant(user, t.rt.plural, ns, copy.deepcopy(body))
        if request.method == "POST" and t.name is None:
            result = self.cluster.create(t.rt, ns, body, opts)
            return _json(result.obj, 201, result.warnings)
        if request.method == "PUT" and t.name is not None:
            result = self.cluster.update(t.rt, ns, t.name, body, None, opts)
            return _json(result.obj, 200, result.warnings)
        raise errors.StatusError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested "
            f"resource ({request.method} {request.path})",
        )

    async def _body(self, request: web.Request, rt: ResourceType | None = None) -> Obj:
        """The request's object; ``rt`` is the type the URL names, when it names one."""
        if _media_type(request) == protobuf.MEDIA_TYPE:
            # client-go sends built-in kinds as protobuf; custom resources take none.
            if rt is not None and rt.custom:
                raise protobuf.unsupported()
            return protobuf.decode(
                await request.read(), rt.kind if rt else "", rt.api_version if rt else ""
            )
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise errors.bad_request(f"the body of the request is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return body

    async def _delete_options(self, request: web.Request) -> Obj:
        """DeleteOptions from the body (JSON or protobuf) or, only without one, from the
        query, as kube-apiserver reads them (apiserver pkg/endpoints/handlers/delete.go)."""
        if await request.read():
            if _media_type(request) == protobuf.MEDIA_TYPE:
                return protobuf.decode(await request.read(), "DeleteOptions", "meta.k8s.io/v1")
            return await self._body(request)
        q = request.query
        options: Obj = {}
        try:
            if "gracePeriodSeconds" in q:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        except ValueError as exc:
            raise errors.bad_request(f"gracePeriodSeconds: {exc}") from exc
        if "orphanDependents" in q:
            options["orphanDependents"] = q["orphanDependents"] == "true"
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if dry_run := q.getall("dryRun", []):
            options["dryRun"] = dry_run
        return options

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

    def _predicate(self, request: web.Request, t: Target) -> Predicate:
        """The label and field selectors of a list or watch; a field the kind cannot be
        selected by is a 400, as on a real server."""
        q = request.query
        labels = label_selector(q.get("labelSelector"))
        fields = field_selector(q.get("fieldSelector"), self._selectable(t.rt))
        return lambda obj: labels(obj) and fields(obj)

    def _selectable(self, rt: ResourceType) -> Fields:
        paths: list[str] = []
        if rt.custom:
            crd = self.cluster.storage.get(
                "apiextensions.k8s.io/customresourcedefinitions", "", f"{rt.plural}.{rt.group}"
            )
            versions = (crd or {}).get("spec", {}).get("versions") or []
            for version in versions:
                if version.get("name") == rt.version:
                    paths = [f["jsonPath"] for f in version.get("selectableFields") or []]
        return supported_fields(rt.key, rt.namespaced, rt.custom, paths)

    def _selected(self, request: web.Request, t: Target) -> list[Obj]:
        keep = self._predicate(request, t)
        return [o for o in self.cluster.objects(t.rt, t.namespace) if keep(o)]

    def _list(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        opts = params.list_options(q, watch=False)
        include = tables.include_object(opts.include_object)
        selected = self._predicate(request, t)
        namespace = t.namespace

        def keep(obj: Obj) -> bool:
            in_scope = not namespace or obj["metadata"].get("namespace") == namespace
            return in_scope and selected(obj)

        storage = self.cluster.storage
        start = ""
        if opts.continue_token:
            # Later pages show the collection as the first page saw it.
            start, rv = paging.decode_token(opts.continue_token)
            found = storage.snapshot(t.rt.key) if rv < 0 else storage.snapshot_at(t.rt.key, rv)
            if found is None:
                raise paging.ContinueExpired(start)
            snapshot = found
        else:
            snapshot = storage.snapshot(t.rt.key)
        counted = not (q.get("labelSelector") or q.get("fieldSelector"))
        page = paging.cut(snapshot.items, start, opts.limit, keep, snapshot.rv, counted)
        if page.continue_token:
            storage.keep(snapshot)
        meta: dict[str, Any] = {"resourceVersion": str(snapshot.rv)}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        if self._wants_table(request):
            table = tables.table(t.rt, page.items, str(snapshot.rv), include)
            table["metadata"] = meta
            return _json(table)
        return _json(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": meta,
                "items": page.items,
            }
        )

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        """DELETE on a collection: each selected object deleted as by its own DELETE (or
        only as it would be, with dryRun); the answer lists them, as the registry's does."""
        params.list_options(request.query, watch=False)
        options = params.delete_options(await self._delete_options(request))
        dry_run = bool(options.get("dryRun"))
        deleted = []
        for obj in self._selected(request, t):
            meta = obj["metadata"]
            with contextlib.suppress(errors.StatusError):  # gone meanwhile
                deleted.append(
                    self.cluster.delete(
                        t.rt, meta.get("namespace", ""), meta["name"], options, dry_run=dry_run
                    )
                )
        return _json(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": str(self.cluster.storage.revision)},
                "items": deleted,
            }
        )

    # -- watch -------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        opts = params.list_options(q, watch=True)
        as_table = self._wants_table(request)
        include = tables.include_object(opts.include_object) if as_table else ""
        watcher = Watcher(t.rt.key, t.namespace, self._predicate(request, t))
        storage = self.cluster.storage
        initial: Iterable[Change] | None
        if opts.resource_version == 0 or opts.send_initial_events:
            initial = [
                Change(int(o["metadata"]["resourceVersion"]), t.rt.key, "ADDED", o)
                for o in self._selected(request, t)
            ]
        else:
            entries = storage.replay(opts.resource_version, t.rt.key, t.namespace)
            # Decoded one at a time as they are sent: a long replay holds no more memory.
            initial = None if entries is None else (e.change() for e in entries)
        # What the replay covers (or, from a resourceVersion yet to come, what precedes
        # it) is not sent again live.
        watcher.after = max(storage.revision, opts.resource_version)
        # Registered before the first await: no change can fall between replay and live.
        storage.watchers.add(watcher)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        stream = _Stream(t.rt, include if as_table else None)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            if initial is None:
                # As the watch cache answers: the 200 has begun, so an ERROR event.
                expired = errors.StatusError(
                    410,
                    "Expired",
                    f"too old resource version: {opts.resource_version} ({storage.compacted})",
                )
                await _send_object(response, "ERROR", expired.body())
                return response
            for replayed in initial:
                if watcher.matches(replayed.obj):
                    await stream.send(response, replayed)
            if opts.send_initial_events:
                await self._bookmark(response, t, {"k8s.io/initial-events-end": "true"})
            timeout = opts.timeout_seconds or DEFAULT_WATCH_SECONDS
            async for change in _changes(watcher, timeout, BOOKMARK_SECONDS):
                if change is _IDLE:
                    if opts.bookmarks:
                        await self._bookmark(response, t)
                elif change is None:
                    break  # the store closed this watch
                else:
                    await stream.send(response, change)
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            return web.Response()
        except Exception as exc:
            # The 200 has begun: a failure ends the stream with an ERROR event.
            log.exception("watch %s failed", request.path)
            await _send_object(response, "ERROR", internal_error(exc).body())
            return response
        finally:
            storage.watchers.discard(watcher)
            self._streams.discard(task)

    async def _bookmark(
        self, response: web.StreamResponse, t: Target, annotations: dict[str, str] | None = None
    ) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(self.cluster.storage.revision)}
        if annotations:
            meta["annotations"] = annotations
        await _send_object(
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


async def _closed(gate: auth.Auth) -> None:
    gate.close()


def log_file_name(namespace: str, name: str, uid: str) -> str:
    """Where a pod's log lives, as under /var/log/pods on a node."""
    return f"{namespace}_{name}_{uid}.log"


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


class _Stream:
    """How one watch sends its events: the stored JSON as is, or (for a Table watch,
    ``kubectl get -w``) each object as a one-row Table, with the column definitions only
    on the first (apiserver's watchEmbeddedEncoder sets NoHeaders after it)."""

    def __init__(self, rt: ResourceType, table_include: str | None) -> None:
        self.rt = rt
        self.table_include = table_include
        self.headers = True

    async def send(self, response: web.StreamResponse, change: Change) -> None:
        if self.table_include is None:
            line = b'{"type":"' + change.type.encode() + b'","object":' + change.encoded()
            await response.write(line + b"}\n")
            return
        obj = change.obj
        table = tables.table(
            self.rt,
            [obj],
            obj["metadata"].get("resourceVersion", ""),
            self.table_include,
            headers=self.headers,
        )
        self.headers = False
        await _send_object(response, change.type, table)


async def _send_object(response: web.StreamResponse, event: str, obj: Obj) -> None:
    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")


#: What _changes yields after a quiet period (a bookmark is due).
_IDLE = Change(0, "", "BOOKMARK", {})


async def _changes(watcher: Watcher, timeout: float, idle: float) -> AsyncIterator[Change | None]:
    """Changes for one watcher until ``timeout``: ``_IDLE`` after each ``idle`` quiet
    period, None when the store closed the watcher (then nothing follows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        change: Change | None = _IDLE
        with contextlib.suppress(TimeoutError):
            change = await asyncio.wait_for(watcher.queue.get(), min(idle, left))
        yield change
        if change is None:
            return
