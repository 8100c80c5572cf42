"""``/openapi/v3`` documents, enough for kubectl's validation and ``kubectl explain``.

kubectl only validates client-side when the server does not support the
``fieldValidation`` query parameter; every PATCH operation here declares it, so kubectl
sends ``fieldValidation=Strict`` and the stand-in validates, as a real server does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from durapod.dev.apiserver.registry import Registry, ResourceType

_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "schema": {"type": "string"},
    "description": "Strict, Warn or Ignore: how to treat unknown fields.",
}


def _gv_path(rt: ResourceType) -> str:
    return f"api/{rt.version}" if not rt.group else f"apis/{rt.group}/{rt.version}"


def _schema_name(rt: ResourceType) -> str:
    reversed_group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{reversed_group}.{rt.version}.{rt.kind}"


def document(registry: Registry, gv_path: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version (``api/v1``, ``apis/G/V``)."""
    types = [rt for rt in _all(registry) if _gv_path(rt) == gv_path]
    if not types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        prefix = f"/{gv_path}/" + ("namespaces/{namespace}/" if rt.namespaced else "")
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        paths[f"{prefix}{rt.plural}/{{name}}"] = {
            verb: {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [_FIELD_VALIDATION],
                "responses": {},
            }
            for verb in ("patch", "put")
        }
        paths[f"{prefix}{rt.plural}"] = {
            "post": {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [_FIELD_VALIDATION],
                "responses": {},
            }
        }
        schema = dict(rt.schema or {"type": "object"})
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[_schema_name(rt)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _all(registry: Registry) -> list[ResourceType]:
    return [
        rt
        for group in ["", *registry.groups()]
        for version in registry.versions(group)
        for rt in registry.in_group_version(group, version)
    ]


def index(registry: Registry) -> dict[str, Any]:
    paths = {}
    for gv_path in sorted({_gv_path(rt) for rt in _all(registry)}):
        doc = json.dumps(document(registry, gv_path), sort_keys=True).encode()
        digest = hashlib.sha256(doc).hexdigest()[:16].upper()
        paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
    return {"paths": paths}
