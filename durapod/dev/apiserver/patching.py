"""The patch types the API server accepts: merge, JSON and strategic merge (apply, the
fourth, merges by field ownership: see ``managed``)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from durapod.dev.apiserver import builtins
from durapod.dev.apiserver.errors import StatusError, bad_request

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
CR_PATCH_TYPES = (JSON_PATCH, MERGE, APPLY)

# The lists that strategic merge joins element by element, and the key that matches them.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "containerStatuses": "name",
    "ownerReferences": "uid",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``null`` removes a key, lists are replaced whole."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _field(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The schema of ``key`` in an object (or map) schema; None when not known."""
    if schema is None:
        return None
    resolved = builtins.resolve(schema)
    properties = resolved.get("properties")
    if isinstance(properties, dict):
        found = properties.get(key)
        return found if isinstance(found, dict) else None
    extra = resolved.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _list_semantics(key: str, schema: dict[str, Any] | None) -> tuple[bool, str | None]:
    """(merge?, merge key) of a list: from the upstream schema's
    x-kubernetes-patch-strategy and -merge-key when known, else from a fixed table."""
    if schema is None:
        return key in _MERGE_KEYS, _MERGE_KEYS.get(key)
    strategy = str(schema.get("x-kubernetes-patch-strategy", ""))
    return "merge" in strategy.split(","), schema.get("x-kubernetes-patch-merge-key")


def strategic_merge_patch(target: Any, patch: Any, schema: dict[str, Any] | None = None) -> Any:
    """Merge patch, but lists with the ``merge`` patch strategy (containers by name, ports
    by port, finalizers as a set) merge element by element, and directives apply.

    ``schema`` is the upstream schema of ``target`` (``builtins``); without one, a fixed
    table of common lists stands in for it.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return {}
    for key, value in patch.items():
        current = result.get(key)
        # Directives are instructions, never content (kubectl apply sends
        # $setElementOrder with every list it patches).
        if key.startswith("$deleteFromPrimitiveList/"):
            field_name = key.split("/", 1)[1]
            kept = [v for v in result.get(field_name) or [] if v not in (value or [])]
            result[field_name] = kept
            continue
        if key == "$retainKeys" and isinstance(value, list):
            result = {k: v for k, v in result.items() if k in value or k in patch}
            continue
        if key.startswith("$"):
            continue
        sub = _field(schema, key)
        merge, merge_key = _list_semantics(key, sub)
        if value is None:
            result.pop(key, None)
        elif merge and isinstance(value, list) and isinstance(current, list):
            items = (builtins.resolve(sub).get("items") if sub else None) or None
            if merge_key:
                result[key] = _merge_keyed_list(current, value, merge_key, items)
            else:
                result[key] = current + [v for v in value if v not in current]
        else:
            result[key] = strategic_merge_patch(current, value, sub)
    return result


def _merge_keyed_list(
    current: list[Any], patch: list[Any], key: str, schema: dict[str, Any] | None = None
) -> list[Any]:
    merged = list(current)
    for item in patch:
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict)
                and isinstance(item, dict)
                and old.get(key) == item.get(key)
            ),
            None,
        )
        if isinstance(item, dict) and item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(strategic_merge_patch({}, item, schema))
        else:
            merged[index] = strategic_merge_patch(merged[index], item, schema)
    return merged


def apply_patch(
    content_type: str,
    target: dict[str, Any],
    raw: bytes,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply a PATCH body of ``content_type`` to ``target``; 422 when a JSON patch fails.

    ``schema`` (a built-in's upstream schema) gives strategic merge its list semantics.
    """
    try:
        patch = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"error decoding patch: {exc}") from exc
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        try:
            patched: dict[str, Any] = jsonpatch.apply_patch(target, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise StatusError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {exc}",
            ) from exc
        return patched
    if not isinstance(patch, dict):
        raise bad_request("patch body must be a JSON object")
    if content_type == STRATEGIC:
        result: dict[str, Any] = strategic_merge_patch(target, patch, schema)
        return result
    merged: dict[str, Any] = merge_patch(target, patch)
    return merged
