"""Generate the CustomResourceDefinitions from the pydantic models.

The Kubernetes API server wants a *structural* OpenAPI v3 schema: every node typed, no
``$ref``, no ``additionalProperties: false`` beside ``properties`` (pruning does that job),
``x-kubernetes-preserve-unknown-fields`` where arbitrary JSON is allowed. Pydantic emits
JSON Schema; this module rewrites it into that form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from durapod.resources.models import GROUP, RESOURCES, VERSION, Resource

HEADER = "# Generated from durapod/resources/models.py by `durapod crds`. Do not edit.\n"
_DROPPED_KEYS = {"title", "examples", "additionalProperties", "x-preserve"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    if "anyOf" in node:
        # Optional[X] is anyOf [X, null]; absent fields stand for None on the wire.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {node} in a structural schema")
        merged = {**options[0], **{k: v for k, v in node.items() if k not in ("anyOf", "default")}}
        if node.get("default") is not None:
            merged["default"] = node["default"]
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if node.get("x-preserve"):
        out["type"] = "object"
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif "type" not in out and "enum" in out:
        out["type"] = "string"
    elif "type" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[Resource]) -> dict[str, Any]:
    """The structural openAPIV3Schema of one resource kind."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    properties = {
        name: _structural(raw["properties"][name], defs)
        for name in ("spec", "status")
        if name in raw["properties"]
    }
    return {
        "type": "object",
        "description": (model.__doc__ or model.kind).strip().splitlines()[0],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            **properties,
        },
    }


def crd(model: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition manifest of one resource kind."""
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(model)},
        "additionalPrinterColumns": [
            c.model_dump(by_alias=True, exclude_defaults=True) | {"priority": c.priority}
            if c.priority
            else c.model_dump(by_alias=True, exclude={"priority"})
            for c in model.printer_columns
        ],
    }
    if "status" in model.model_fields:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{model.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": model.kind,
                "listKind": f"{model.kind}List",
                "plural": model.plural,
                "singular": model.kind.lower(),
                "shortNames": list(model.short_names),
                "categories": ["durapod"],
            },
            "versions": [version],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(model) for model in RESOURCES]


def render(manifest: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(manifest, sort_keys=False, width=100)


def write(directory: Path) -> list[Path]:
    """Write one file per CRD into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for manifest in all_crds():
        path = directory / f"{manifest['metadata']['name']}.yaml"
        path.write_text(render(manifest))
        paths.append(path)
    return paths
