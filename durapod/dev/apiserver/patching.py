"""The patch types the API server accepts: merge, JSON, strategic merge and apply."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import yaml

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


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, but lists of keyed items (containers, env, conditions) merge by key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif key in _MERGE_KEYS and isinstance(value, list) and isinstance(current, list):
            result[key] = _merge_keyed_list(current, value, _MERGE_KEYS[key])
        else:
            result[key] = strategic_merge_patch(current, value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
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
            merged.append(item)
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def apply_patch(content_type: str, target: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """Apply a PATCH body of ``content_type`` to ``target``; 422 when a JSON patch fails."""
    try:
        patch = yaml.safe_load(raw) if content_type == APPLY else json.loads(raw)
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
        result: dict[str, Any] = strategic_merge_patch(target, patch)
        return result
    merged: dict[str, Any] = merge_patch(target, patch)
    return merged
