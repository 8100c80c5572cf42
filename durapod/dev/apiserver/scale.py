"""The ``scale`` subresource of Deployments, ReplicaSets and StatefulSets.

What ``kubectl scale`` and autoscalers use: GET answers an ``autoscaling/v1`` Scale
(``spec.replicas`` from the object's spec, ``status.replicas`` and the label selector as a
string from its status and spec); PUT and PATCH (merge, JSON or strategic) of that Scale
set the object's ``spec.replicas``, with the Scale's resourceVersion as precondition, as
the registries' ScaleREST does.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from durapod.dev.apiserver import builtins, errors, patching
from durapod.dev.apiserver.registry import ResourceType

Obj = dict[str, Any]
#: The kinds with a scale subresource (their spec.replicas is what it scales).
SCALABLE = frozenset({"apps/deployments", "apps/replicasets", "apps/statefulsets"})


def selector_string(selector: Obj | None) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key."""
    if not selector:
        return ""
    terms: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        terms.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(expr.get("values") or []))
        shown = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(op, "")
        terms.append((key, shown))
    return ",".join(text for _, text in sorted(terms))


def of(rt: ResourceType, obj: Obj) -> Obj:
    """The Scale of ``obj``."""
    meta = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": int(spec.get("replicas", 0))},
        "status": {
            "replicas": int(status.get("replicas") or 0),
            "selector": selector_string(spec.get("selector")),
        },
    }


def replicas(rt: ResourceType, current: Obj, body: Obj) -> int:
    """The replicas a Scale written to ``current`` asks for, or a StatusError."""
    name = current["metadata"]["name"]
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind not in (None, "Scale") or api_version not in (None, "autoscaling/v1"):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version (autoscaling/v1) or the kind ({kind}) does not match Scale"
        )
    meta = body.get("metadata") or {}
    if meta.get("name") not in (None, name):
        raise errors.bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
        )
    sent_rv = meta.get("resourceVersion")
    if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
        raise errors.conflict(rt.plural, rt.group, name)
    wanted = (body.get("spec") or {}).get("replicas", 0)
    if not isinstance(wanted, int) or isinstance(wanted, bool):
        raise errors.bad_request(
            'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
            f"{type(wanted).__name__} into Go struct field ScaleSpec.spec.replicas of type int32"
        )
    if wanted < 0:
        cause = {
            "reason": "FieldValueInvalid",
            "field": "spec.replicas",
            "message": f"Invalid value: {wanted}: must be greater than or equal to 0",
        }
        raise errors.invalid("Scale", "autoscaling", name, [cause])
    return wanted


def patched(rt: ResourceType, current: Obj, content_type: str, raw: bytes) -> Obj:
    """The Scale of ``current`` with a merge, JSON or strategic patch applied."""
    if content_type == patching.APPLY:
        raise errors.StatusError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{patching.JSON_PATCH}, {patching.MERGE}, {patching.STRATEGIC}",
        )
    scale = of(rt, current)
    schema = builtins.definition("autoscaling", "v1", "Scale")
    result = patching.apply_patch(content_type, copy.deepcopy(scale), raw, schema)
    if not isinstance(result, dict):
        raise errors.bad_request(f"the patch made no Scale: {json.dumps(result)[:200]}")
    return result
