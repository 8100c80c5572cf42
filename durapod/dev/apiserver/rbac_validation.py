"""RBAC objects checked as kube-apiserver checks them (``pkg/apis/rbac/validation``):
rules need verbs and resources (or non-resource URLs), bindings a supported roleRef that
never changes and well-formed subjects."""

from __future__ import annotations

from typing import Any

from durapod.dev.apiserver.fielderrors import (
    FieldError,
    dns_subdomain,
    invalid,
    names,
    not_supported,
    path_segment,
    required,
)

Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"


def _name(obj: Obj) -> list[FieldError]:
    name = (obj.get("metadata") or {}).get("name", "")
    return names("metadata.name", name, path_segment) if name else []


def rules(obj: Obj, namespaced: bool) -> list[FieldError]:
    """ValidatePolicyRule for each rule."""
    errs = _name(obj)
    for i, rule in enumerate(obj.get("rules") or []):
        where = f"rules[{i}]"
        if not rule.get("verbs"):
            errs.append(required(f"{where}.verbs", "verbs must contain at least one value"))
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                errs.append(
                    invalid(
                        f"{where}.nonResourceURLs",
                        urls,
                        "namespaced rules cannot apply to non-resource URLs",
                    )
                )
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                errs.append(
                    invalid(
                        f"{where}.nonResourceURLs",
                        urls,
                        "rules cannot apply to both regular resources and non-resource URLs",
                    )
                )
            continue
        if not rule.get("apiGroups"):
            errs.append(
                required(f"{where}.apiGroups", "resource rules must supply at least one api group")
            )
        if not rule.get("resources"):
            errs.append(
                required(f"{where}.resources", "resource rules must supply at least one resource")
            )
    return errs


def binding(obj: Obj, namespaced: bool) -> list[FieldError]:
    errs = _name(obj)
    ref = obj.get("roleRef") or {}
    if ref.get("apiGroup", "") != RBAC_GROUP:
        errs.append(not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [RBAC_GROUP]))
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if ref.get("kind", "") not in kinds:
        errs.append(not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    if not ref.get("name"):
        errs.append(required("roleRef.name"))
    else:
        errs += names("roleRef.name", ref["name"], path_segment)
    for i, subject in enumerate(obj.get("subjects") or []):
        where = f"subjects[{i}]"
        name, kind, group = (
            subject.get("name", ""),
            subject.get("kind", ""),
            subject.get("apiGroup", ""),
        )
        if not name:
            errs.append(required(f"{where}.name"))
        if kind == "ServiceAccount":
            if name:
                errs += names(f"{where}.name", name, dns_subdomain)
            if group:
                errs.append(not_supported(f"{where}.apiGroup", group, [""]))
            if not namespaced and not subject.get("namespace"):
                errs.append(required(f"{where}.namespace"))
        elif kind in ("User", "Group"):
            if group != RBAC_GROUP:
                errs.append(not_supported(f"{where}.apiGroup", group, [RBAC_GROUP]))
        else:
            errs.append(not_supported(f"{where}.kind", kind, ["ServiceAccount", "User", "Group"]))
    return errs


def binding_update(new: Obj, old: Obj, namespaced: bool) -> list[FieldError]:
    errs = binding(new, namespaced)
    ref, old_ref = new.get("roleRef") or {}, old.get("roleRef") or {}
    if ref != old_ref:
        shown = {
            "APIGroup": ref.get("apiGroup", ""),
            "Kind": ref.get("kind", ""),
            "Name": ref.get("name", ""),
        }
        errs.append(invalid("roleRef", shown, "cannot change roleRef"))
    return errs
