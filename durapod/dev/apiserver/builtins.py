"""The upstream schemas of the built-in kinds, as Kubernetes 1.35 publishes them.

The stand-in must refuse what a real API server refuses, so it validates built-in objects
against upstream's own OpenAPI definitions rather than schemas written here. The package
``kubernetes-validate`` ships them, converted to JSON Schema: definitions under ``$defs``
keyed like ``io.k8s.api.core.v1.PodSpec``, nullable types as ``["string", "null"]``,
references as ``{"$ref": "#/$defs/..."}``, ``additionalProperties: false`` on every object
(the "strict" flavour) and upstream's ``x-kubernetes-*`` extensions kept.

The file is about 4 MB of JSON; it is read once, on first use.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any

#: Where ``kubernetes-validate`` keeps the definitions of the version the stand-in serves.
_DEFINITIONS = "kubernetes-json-schema/v1.35.0-local-strict/_definitions.json"
_REF_PREFIX = "#/$defs/"


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """Every upstream definition by its name (``io.k8s.api.apps.v1.Deployment``)."""
    text = (importlib.resources.files("kubernetes_validate") / _DEFINITIONS).read_text()
    defs: dict[str, dict[str, Any]] = json.loads(text)["$defs"]
    return defs


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    """Definition names by the group/version/kind upstream tags them with.

    Several definitions carry more than one GVK (``DeleteOptions``, ``WatchEvent`` are
    tagged with every group); a kind's own definition is the one whose package matches
    its group, so the first definition that claims a GVK wins only when none matches.
    """
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            if key not in index or _package_matches(name, key[0]):
                index[key] = name
    return index


def _package_matches(name: str, group: str) -> bool:
    # io.k8s.api.apps.v1.Deployment is in group "apps"; rbac.authorization.k8s.io is
    # io.k8s.api.rbac.v1; the core group is io.k8s.api.core.
    package = name.split(".")[3] if name.startswith("io.k8s.api.") else ""
    return package == (group.split(".")[0] or "core")


def definition_name(group: str, version: str, kind: str) -> str | None:
    """The name of the upstream definition of a kind, or None if upstream has none."""
    return _by_gvk().get((group, version, kind))


def definition(group: str, version: str, kind: str) -> dict[str, Any] | None:
    """The upstream schema of a kind (``"", "v1", "Pod"``), or None if it is not built in.

    The schema is shared: callers must not modify it. Nested definitions are
    ``{"$ref": ...}``; follow them with ``resolve``.
    """
    name = definition_name(group, version, kind)
    return definitions()[name] if name else None


def ref_name(schema: dict[str, Any]) -> str | None:
    """The definition name a ``$ref`` schema points to, or None for an inline schema."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        return ref[len(_REF_PREFIX) :]
    return None


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` (if any) to its definition; an inline schema is returned as is."""
    seen = 0
    while (name := ref_name(schema)) is not None and seen < 32:
        schema = definitions()[name]
        seen += 1
    return schema


def types_of(schema: dict[str, Any]) -> tuple[str, ...]:
    """The JSON types a schema admits besides null: ``["string","null"]`` → ``("string",)``."""
    declared = schema.get("type")
    if declared is None:
        return ()
    if isinstance(declared, str):
        return (declared,)
    return tuple(t for t in declared if t != "null")
