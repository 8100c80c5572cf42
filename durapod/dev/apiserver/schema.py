"""Structural-schema semantics of custom resources: prune, default, validate.

The order is the real API server's: unknown fields are pruned (or reported, for
``fieldValidation=Strict``), defaults applied, then every constraint checked. Messages
follow apiextensions-apiserver's wording so a user sees what a cluster would say.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


@dataclass
class Outcome:
    """What checking one object found."""

    unknown_fields: list[str] = field(default_factory=list)
    causes: list[dict[str, str]] = field(default_factory=list)

    def fail(self, path: str, reason: str, message: str) -> None:
        self.causes.append({"reason": reason, "message": message, "field": path})


def _shown(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_type(value: Any) -> str:
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }
    return names.get(type(value), "null")


def _type_ok(value: Any, type_name: str) -> bool:
    if isinstance(value, bool) and type_name in ("integer", "number"):
        return False
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[type_name])


def _prune_and_default(node: Any, schema: dict[str, Any], path: str, out: Outcome) -> Any:
    if not isinstance(node, dict) or schema.get("type") != "object":
        if isinstance(node, list) and "items" in schema:
            return [
                _prune_and_default(item, schema["items"], f"{path}[{i}]", out)
                for i, item in enumerate(node)
            ]
        return node
    properties: dict[str, Any] = schema.get("properties", {})
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in properties:
            result[key] = _prune_and_default(value, properties[key], f"{path}.{key}", out)
        elif preserve:
            result[key] = value
        else:
            out.unknown_fields.append(f"{path}.{key}".lstrip("."))
    for key, sub in properties.items():
        if "default" in sub and result.get(key) is None:
            result[key] = _prune_and_default(
                copy.deepcopy(sub["default"]), sub, f"{path}.{key}", out
            )
    return result


def _validate(node: Any, schema: dict[str, Any], path: str, out: Outcome) -> None:
    type_name = schema.get("type")
    if node is None:
        if not schema.get("nullable"):
            out.fail(
                path,
                "FieldValueTypeInvalid",
                f'Invalid value: "null": {path} in body '
                f'must be of type {type_name or "object"}: "null"',
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(node, str) or _type_ok(node, "integer")):
            out.fail(
                path,
                "FieldValueTypeInvalid",
                f"Invalid value: {_shown(node)}: {path} in body must be of type integer or string",
            )
        return
    if type_name and not _type_ok(node, type_name):
        out.fail(
            path,
            "FieldValueTypeInvalid",
            f"Invalid value: {_shown(node)}: {path} in body "
            f"must be of type {type_name}: {_shown(_json_type(node))}",
        )
        return
    if "enum" in schema and node not in schema["enum"]:
        supported = ", ".join(_shown(v) for v in schema["enum"])
        out.fail(
            path,
            "FieldValueNotSupported",
            f"Unsupported value: {_shown(node)}: supported values: {supported}",
        )
    if isinstance(node, str):
        _validate_string(node, schema, path, out)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        if "minimum" in schema and node < schema["minimum"]:
            out.fail(
                path,
                "FieldValueInvalid",
                f"Invalid value: {_shown(node)}: {path} in body "
                f"should be greater than or equal to {schema['minimum']}",
            )
        if "maximum" in schema and node > schema["maximum"]:
            out.fail(
                path,
                "FieldValueInvalid",
                f"Invalid value: {_shown(node)}: {path} in body "
                f"should be less than or equal to {schema['maximum']}",
            )
    elif isinstance(node, list):
        if "maxItems" in schema and len(node) > schema["maxItems"]:
            out.fail(
                path,
                "FieldValueTooMany",
                f"Too many: {len(node)}: must have at most {schema['maxItems']} items",
            )
        for i, item in enumerate(node):
            if "items" in schema:
                _validate(item, schema["items"], f"{path}[{i}]", out)
    elif isinstance(node, dict):
        for name in schema.get("required", []):
            if node.get(name) is None:
                out.fail(f"{path}.{name}", "FieldValueRequired", "Required value")
        for name, sub in schema.get("properties", {}).items():
            if name in node:
                _validate(node[name], sub, f"{path}.{name}", out)


def _validate_string(node: str, schema: dict[str, Any], path: str, out: Outcome) -> None:
    if "maxLength" in schema and len(node) > schema["maxLength"]:
        out.fail(
            path, "FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes"
        )
    if "minLength" in schema and len(node) < schema["minLength"]:
        out.fail(
            path,
            "FieldValueInvalid",
            f"Invalid value: {_shown(node)}: {path} in body "
            f"should be at least {schema['minLength']} chars long",
        )
    if "pattern" in schema and not re.search(schema["pattern"], node):
        out.fail(
            path,
            "FieldValueInvalid",
            f"Invalid value: {_shown(node)}: {path} in body should match '{schema['pattern']}'",
        )


def admit(obj: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
    """Prune, default and validate ``obj``; return the object to store and what was found.

    ``apiVersion``, ``kind`` and ``metadata`` are kept whatever the schema says.
    """
    out = Outcome()
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    cleaned = _prune_and_default(body, schema, "", out)
    result = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj} | cleaned
    for name in schema.get("required", []):
        if result.get(name) is None:
            out.fail(name, "FieldValueRequired", "Required value")
    for name, sub in schema.get("properties", {}).items():
        if name in cleaned:
            _validate(cleaned[name], sub, name, out)
    return result, out
