"""Updates of pods checked as kube-apiserver checks them (``ValidatePodUpdate`` and
``ValidatePodStatusUpdate`` in ``pkg/apis/core/validation``): a pod's spec is fixed once
created, but for its images, a shorter deadline, added tolerations and removed scheduling
gates; a pod that does not restart never leaves a terminated container state."""

from __future__ import annotations

import json
from typing import Any

from durapod.dev.apiserver import metadata
from durapod.dev.apiserver.fielderrors import FieldError, forbidden, invalid, range_error
from durapod.dev.apiserver.pod_validation import pod_spec

Obj = dict[str, Any]
_MAX_INT32 = 2**31 - 1
#: ValidatePodUpdate's list of what may change (the InPlacePodVerticalScaling resize
#: goes through the ``resize`` subresource, which the stand-in does not serve).
UPDATABLE = ",".join(
    [
        "`spec.containers[*].image`",
        "`spec.initContainers[*].image`",
        "`spec.activeDeadlineSeconds`",
        "`spec.tolerations` (only additions to existing tolerations)",
        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)",
    ]
)
_SYSTEM_CONDITIONS = ("PodScheduled", "Ready", "Initialized")


def _normalised(value: Any) -> Any:
    """Semantic equality: empty and absent lists and maps are the same."""
    if isinstance(value, dict):
        out = {k: _normalised(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _diff(old: Obj, new: Obj) -> str:
    """A short account of what changed, in the spirit of the cmp.Diff upstream prints."""
    lines = ["  core.PodSpec{"]

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(dict.fromkeys([*a, *b])):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            lines.append(f"- \t{path}: {json.dumps(a)},")
            lines.append(f"+ \t{path}: {json.dumps(b)},")

    walk(old, new, "")
    lines.append("  }")
    return "\n".join(lines) + "\n"


def pod_update(new: Obj, old: Obj) -> list[FieldError]:
    """ValidatePodUpdate: a full check of the new pod, then what may change."""
    errs = pod_spec("spec", new.get("spec") or {}, is_pod=True)
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    for kind in ("containers", "initContainers"):
        news, olds = new_spec.get(kind) or [], old_spec.get(kind) or []
        if len(news) != len(olds):
            errs.append(forbidden(f"spec.{kind}", "pod updates may not add or remove containers"))
            return errs
    deadline, old_deadline = (
        new_spec.get("activeDeadlineSeconds"),
        old_spec.get("activeDeadlineSeconds"),
    )
    if deadline is not None:
        if not 0 <= deadline <= _MAX_INT32:
            errs.append(invalid("spec.activeDeadlineSeconds", deadline, range_error(0, _MAX_INT32)))
            return errs
        if old_deadline is not None and old_deadline < deadline:
            errs.append(
                invalid(
                    "spec.activeDeadlineSeconds",
                    deadline,
                    "must be less than or equal to previous value",
                )
            )
            return errs
    elif old_deadline is not None:
        errs.append(
            invalid(
                "spec.activeDeadlineSeconds",
                None,
                "must not update from a positive integer to nil value",
            )
        )
    new_tolerations = new_spec.get("tolerations") or []
    for before in old_spec.get("tolerations") or []:
        kept = {k: v for k, v in before.items() if k != "tolerationSeconds"}
        if not any(
            {k: v for k, v in t.items() if k != "tolerationSeconds"} == kept
            for t in new_tolerations
        ):
            errs.append(
                forbidden(
                    "spec.tolerations",
                    "existing toleration can not be modified except its tolerationSeconds",
                )
            )
            break
    old_gates = {g.get("name") for g in old_spec.get("schedulingGates") or []}
    for i, gate in enumerate(new_spec.get("schedulingGates") or []):
        if gate.get("name") not in old_gates:
            errs.append(
                forbidden(
                    f"spec.schedulingGates[{i}].name",
                    f"only deletion is allowed, but found new scheduling gate '{gate.get('name')}'",
                )
            )
    munged = json.loads(json.dumps(new_spec))
    for kind in ("containers", "initContainers"):
        for c, before in zip(munged.get(kind) or [], old_spec.get(kind) or [], strict=True):
            c["image"] = before.get("image")
    for key in ("activeDeadlineSeconds", "schedulingGates", "tolerations"):
        munged.pop(key, None)
        if key in old_spec:
            munged[key] = old_spec[key]
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if old_grace is not None and old_grace < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if _normalised(munged) != _normalised(old_spec):
        message = f"pod updates may not change fields other than {UPDATABLE}\n"
        errs.append(forbidden("spec", message + _diff(_normalised(old_spec), _normalised(munged))))
    return errs


def pod_status_update(new: Obj, old: Obj) -> list[FieldError]:
    """ValidatePodStatusUpdate: condition types, and no way back from a terminated state
    for a pod that does not restart."""
    errs: list[FieldError] = []
    status, old_status = new.get("status") or {}, old.get("status") or {}
    for i, condition in enumerate(status.get("conditions") or []):
        kind = condition.get("type", "")
        if kind not in _SYSTEM_CONDITIONS:
            errs += [
                invalid(f"metadata.conditions[{i}].Type", kind, m)
                for m in metadata.qualified_name(kind)
            ]
    if (new.get("spec") or {}).get("nodeName") != (old.get("spec") or {}).get("nodeName"):
        errs.append(forbidden("status.nodeName", "may not be changed directly"))
    policy = (old.get("spec") or {}).get("restartPolicy")
    if policy != "Always":
        news = {s.get("name"): s for s in status.get("containerStatuses") or []}
        for i, before in enumerate(old_status.get("containerStatuses") or []):
            terminated = (before.get("state") or {}).get("terminated")
            if terminated is None:
                continue
            if terminated.get("exitCode", 0) != 0 and policy == "OnFailure":
                continue
            after = news.get(before.get("name"))
            if after is not None and (after.get("state") or {}).get("terminated") is None:
                errs.append(
                    forbidden(
                        f"status.containerStatuses[{i}].state",
                        "may not be transitioned to non-terminated state",
                    )
                )
    return errs
