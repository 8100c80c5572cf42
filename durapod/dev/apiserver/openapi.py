"""``/openapi/v3`` and ``/openapi/v2``, built from the same upstream definitions the
stand-in validates with (``builtins``) and from the CRDs' schemas.

kubectl and Helm only validate client-side when the server does not support the
``fieldValidation`` query parameter; every write operation here declares it, so they send
``fieldValidation=Strict`` and the stand-in validates, as a real server does.
``kubectl explain`` reads a kind's schema from its group-version's v3 document.

The definitions arrive in JSON-Schema form (``kubernetes-validate``); they are turned back
into OpenAPI: ``["string", "null"]`` becomes ``string``, ``#/$defs/X`` becomes
``#/components/schemas/X`` (v3, wrapped in ``allOf`` when it carries a description, as
upstream does) or ``#/definitions/X`` (v2), the strict flavour's
``additionalProperties: false`` goes, the ``x-kubernetes-*`` extensions stay.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from durapod.dev.apiserver import builtins
from durapod.dev.apiserver.registry import BUILTINS, Registry, ResourceType

Obj = dict[str, Any]
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_FIELD_VALIDATION_V3 = {
    "name": "fieldValidation",
    "in": "query",
    "description": "fieldValidation instructs the server on how to handle objects in the "
    "request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: "
    "Ignore, Warn (the default) and Strict.",
    "schema": {"type": "string", "uniqueItems": True},
}
_FIELD_VALIDATION_V2 = {
    "name": "fieldValidation",
    "in": "query",
    "description": _FIELD_VALIDATION_V3["description"],
    "type": "string",
    "uniqueItems": True,
}
#: The operations of a collection path and of an object path, with their actions.
_COLLECTION_OPS = (("get", "list"), ("post", "post"), ("delete", "deletecollection"))
_ITEM_OPS = (("get", "get"), ("put", "put"), ("patch", "patch"), ("delete", "delete"))
_WRITES = ("post", "put", "patch")
#: Built-in schemas that are not objects: upstream publishes them as strings in v2.
_V2_PRIMITIVES = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "type": "string",
        "format": "int-or-string",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}


def _gv_path(rt: ResourceType) -> str:
    return f"api/{rt.version}" if not rt.group else f"apis/{rt.group}/{rt.version}"


def _gvk(rt: ResourceType) -> Obj:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _custom_name(rt: ResourceType) -> str:
    reversed_group = ".".join(reversed(rt.group.split(".")))
    return f"{reversed_group}.{rt.version}.{rt.kind}"


def _schema_name(rt: ResourceType) -> str:
    if rt.custom:
        return _custom_name(rt)
    return builtins.definition_name(rt.group, rt.version, rt.kind) or _custom_name(rt)


# -- JSON Schema to OpenAPI ----------------------------------------------------------------


def _convert(schema: Any, ref: Callable[[str], str], v2: bool) -> Any:
    """One upstream definition in OpenAPI form (see the module docstring)."""
    if isinstance(schema, list):
        return [_convert(item, ref, v2) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    target = builtins.ref_name(schema)
    for key, value in schema.items():
        if key == "$ref" or (key == "additionalProperties" and value is False):
            continue
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if kinds:
                out["type"] = kinds[0]
        elif key in ("properties", "x-kubernetes-group-version-kind", "enum", "default"):
            out[key] = (
                {k: _convert(v, ref, v2) for k, v in value.items()}
                if key == "properties"
                else copy.deepcopy(value)
            )
        elif key in ("items", "additionalProperties", "oneOf", "allOf", "anyOf", "not"):
            out[key] = _convert(value, ref, v2)
        else:
            out[key] = copy.deepcopy(value)
    if target is not None:
        if v2 or not out:
            return {"$ref": ref(target), **out}
        return {"allOf": [{"$ref": ref(target)}], **out}
    if v2 and "oneOf" in out:
        # Swagger 2.0 has no oneOf; upstream publishes these as strings.
        out.pop("oneOf")
        out.setdefault("type", "string")
    return out


def _definition(name: str, v2: bool) -> Obj:
    if v2 and name in _V2_PRIMITIVES:
        base = builtins.definitions()[name]
        extra = {"description": base["description"]} if "description" in base else {}
        return {**extra, **_V2_PRIMITIVES[name]}
    ref = _v2_ref if v2 else _v3_ref
    converted: Obj = _convert(builtins.definitions()[name], ref, v2)
    if "x-kubernetes-group-version-kind" in converted:
        # kubernetes-json-schema pins apiVersion and kind to one value; upstream does not.
        for key in ("apiVersion", "kind"):
            (converted.get("properties") or {}).get(key, {}).pop("enum", None)
    return converted


def _v3_ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def _v2_ref(name: str) -> str:
    return f"#/definitions/{name}"


def _closure(names: list[str]) -> list[str]:
    """These definitions and every definition they refer to, in a stable order."""
    seen: dict[str, None] = {}
    stack = list(reversed(names))
    while stack:
        name = stack.pop()
        if name in seen or name not in builtins.definitions():
            continue
        seen[name] = None
        found: list[str] = []
        _refs(builtins.definitions()[name], found)
        stack.extend(reversed(found))
    return list(seen)


def _refs(schema: Any, found: list[str]) -> None:
    if isinstance(schema, dict):
        if (name := builtins.ref_name(schema)) is not None:
            found.append(name)
        for value in schema.values():
            _refs(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _refs(value, found)


@functools.cache
def _builtin_schemas(names: tuple[str, ...], v2: bool) -> Obj:
    """The converted definitions of these kinds (with their lists) and all they use."""
    roots = [n for name in names for n in (name, f"{name}List") if n in builtins.definitions()]
    return {name: _definition(name, v2) for name in _closure(roots)}


def _custom_schema(rt: ResourceType, v2: bool) -> Obj:
    """A CRD version's schema as the apiextensions server publishes it: with apiVersion,
    kind, metadata (ObjectMeta) and its GVK."""
    schema = copy.deepcopy(rt.schema or {"type": "object"})
    if v2:
        schema = _without_v3_keywords(schema)
    properties = schema.setdefault("properties", {})
    for key in ("apiVersion", "kind"):
        properties.setdefault(key, {"type": "string"})
    ref = _v2_ref(_OBJECT_META) if v2 else _v3_ref(_OBJECT_META)
    properties["metadata"] = {"$ref": ref} if v2 else {"allOf": [{"$ref": ref}]}
    schema["x-kubernetes-group-version-kind"] = [_gvk(rt)]
    return schema


def _without_v3_keywords(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_v3_keywords(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    dropped = ("nullable", "oneOf", "anyOf", "not", "x-kubernetes-validations")
    return {k: _without_v3_keywords(v) for k, v in schema.items() if k not in dropped}


# -- paths -------------------------------------------------------------------------------


def _operations(rt: ResourceType, v2: bool, actions: tuple[tuple[str, str], ...]) -> Obj:
    ref = (_v2_ref if v2 else _v3_ref)(_schema_name(rt))
    ops: Obj = {}
    for method, action in actions:
        verb = {"post": "create", "put": "update"}.get(action, action)
        if verb not in rt.verbs:
            continue
        response = (
            {"description": "OK", "schema": {"$ref": ref}}
            if v2
            else {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}
        )
        op: Obj = {
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": _gvk(rt),
            "responses": {"200": response},
        }
        if method in _WRITES:
            op["parameters"] = [_FIELD_VALIDATION_V2 if v2 else _FIELD_VALIDATION_V3]
        ops[method] = op
    return ops


def _paths(rt: ResourceType, v2: bool) -> Obj:
    prefix = f"/{_gv_path(rt)}/" + ("namespaces/{namespace}/" if rt.namespaced else "")
    paths: Obj = {}
    if collection := _operations(rt, v2, _COLLECTION_OPS):
        paths[f"{prefix}{rt.plural}"] = collection
    if item := _operations(rt, v2, _ITEM_OPS):
        paths[f"{prefix}{rt.plural}/{{name}}"] = item
    if "status" in rt.subresources:
        paths[f"{prefix}{rt.plural}/{{name}}/status"] = _operations(
            rt, v2, (("get", "get"), ("put", "put"), ("patch", "patch"))
        )
    return paths


# -- documents ---------------------------------------------------------------------------


def _all(registry: Registry) -> list[ResourceType]:
    return [
        rt
        for group in ["", *registry.groups()]
        for version in registry.versions(group)
        for rt in registry.in_group_version(group, version)
    ]


def _schemas(types: list[ResourceType], v2: bool) -> Obj:
    builtin = tuple(
        sorted({_schema_name(rt) for rt in types if not rt.custom and _schema_name(rt)})
    )
    schemas = dict(_builtin_schemas(builtin, v2))
    if any(rt.custom for rt in types):
        schemas.update(_builtin_schemas((_OBJECT_META,), v2))
    for rt in types:
        if rt.custom:
            schemas[_custom_name(rt)] = _custom_schema(rt, v2)
    return schemas


def document(registry: Registry, gv_path: str) -> Obj | None:
    """The OpenAPI v3 document of one group/version (``api/v1``, ``apis/G/V``)."""
    types = [rt for rt in _all(registry) if _gv_path(rt) == gv_path]
    if not types:
        return None
    paths: Obj = {}
    for rt in types:
        paths.update(_paths(rt, v2=False))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": _schemas(types, v2=False)},
    }


def swagger(registry: Registry) -> Obj:
    """The OpenAPI v2 (Swagger 2.0) document of everything served."""
    types = _all(registry)
    paths: Obj = {}
    for rt in types:
        paths.update(_paths(rt, v2=True))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "definitions": _schemas(types, v2=True),
    }


@functools.cache
def _builtin_digest(gv_path: str) -> str:
    types = [rt for rt in BUILTINS if _gv_path(rt) == gv_path]
    return hashlib.sha256(
        json.dumps(_schemas(types, v2=False), sort_keys=True).encode()
    ).hexdigest()


def index(registry: Registry) -> Obj:
    """``/openapi/v3``: each group/version's document, with a hash that changes with it
    (clients cache documents by URL)."""
    paths = {}
    for gv_path in sorted({_gv_path(rt) for rt in _all(registry)}):
        custom = [
            {"name": rt.plural, "version": rt.version, "schema": rt.schema}
            for rt in _all(registry)
            if rt.custom and _gv_path(rt) == gv_path
        ]
        text = _builtin_digest(gv_path) + json.dumps(custom, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16].upper()
        paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
    return {"paths": paths}
