"""What deletion looks like on a real cluster, as pure functions the cluster applies:
propagation policies and their finalizers, owner references, the namespace lifecycle
(its admission refusals and the namespace controller's status conditions)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from durapod.dev.apiserver import errors

Obj = dict[str, Any]

#: metav1.FinalizerDeleteDependents: the owner waits for its blocking dependents.
FOREGROUND = "foregroundDeletion"
#: The namespace finalizer the namespace controller removes once the namespace is empty.
KUBERNETES = "kubernetes"
#: NamespaceLifecycle admission's immortal namespaces.
IMMORTAL = ("default", "kube-system", "kube-public")
TERMINATING = "Terminating"
#: What holds a deleted CRD until its custom resources are gone (apiextensions'
#: CustomResourceCleanupFinalizer, cleared by its finalizer controller).
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
#: The Terminating condition of a CRD at each step (crd_finalizer.go's reasons).
CRD_PENDING = (
    "True",
    "InstanceDeletionPending",
    "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
)
CRD_IN_PROGRESS = ("True", "InstanceDeletionInProgress", "CustomResource deletion is in progress")
CRD_COMPLETED = ("False", "InstanceDeletionCompleted", "removed all instances")


def propagation(options: Mapping[str, Any]) -> str:
    """The policy a DeleteOptions asks for (the legacy orphanDependents included)."""
    policy = options.get("propagationPolicy")
    if policy:
        return str(policy)
    return "Orphan" if options.get("orphanDependents") else "Background"


def reference_to(obj: Obj, uid: str) -> Obj | None:
    """``obj``'s ownerReference to the owner with ``uid``, if it has one."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("uid") == uid:
            return dict(ref)
    return None


def marked(obj: Obj, timestamp: str, grace: int | None, finalizer: str | None = None) -> Obj:
    """A copy of ``obj`` being deleted: deletionTimestamp set (once), and ``finalizer``
    added when a propagation policy needs one."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.setdefault("deletionTimestamp", timestamp)
    if grace is not None:
        meta["deletionGracePeriodSeconds"] = grace
    if finalizer and finalizer not in (meta.get("finalizers") or []):
        meta["finalizers"] = [*(meta.get("finalizers") or []), finalizer]
    return out


def without_finalizer(obj: Obj, finalizer: str) -> Obj:
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]
    if not meta["finalizers"]:
        del meta["finalizers"]
    return out


def immortal(name: str) -> errors.StatusError:
    return errors.StatusError(
        403,
        "Forbidden",
        f'namespaces "{name}" is forbidden: this namespace may not be deleted',
        {"name": name, "group": "", "kind": "namespaces"},
    )


def terminating(plural: str, group: str, name: str, namespace: str) -> errors.StatusError:
    """NamespaceLifecycle admission's refusal of new content in a Terminating namespace."""
    resource = errors.qualified(plural, group)
    reason = f"unable to create new content in namespace {namespace} because it is being terminated"
    message = (
        f'{resource} "{name}" is forbidden: {reason}'
        if name
        else f"{resource} is forbidden: {reason}"
    )
    cause = {
        "reason": "NamespaceTerminating",
        "message": f"namespace {namespace} is being terminated",
        "field": "metadata.namespace",
    }
    return errors.StatusError(
        403,
        "Forbidden",
        message,
        {"name": name, "group": group, "kind": plural, "causes": [cause]},
    )


#: The namespace controller's conditions, with their wording when all is well
#: (pkg/controller/namespace/deletion/status_condition_utils.go).
_CONDITIONS = (
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    ("NamespaceContentRemaining", "ContentRemoved", "All content successfully removed"),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
)


def namespace_conditions(
    old: list[Obj], remaining: Mapping[str, int], finalizers: Mapping[str, int], timestamp: str
) -> list[Obj]:
    """The namespace's status conditions given what content remains (count by
    ``resource.group``) and which finalizers hold it (count by finalizer); a condition
    keeps its lastTransitionTime while its status stays."""
    failing: dict[str, tuple[str, str]] = {}
    if remaining:
        parts = sorted(f"{r} has {n} resource instances" for r, n in remaining.items() if n)
        failing["NamespaceContentRemaining"] = (
            "SomeResourcesRemain",
            f"Some resources are remaining: {', '.join(parts)}",
        )
    if finalizers:
        parts = sorted(f"{f} in {n} resource instances" for f, n in finalizers.items() if n)
        failing["NamespaceFinalizersRemaining"] = (
            "SomeFinalizersRemain",
            f"Some content in the namespace has finalizers remaining: {', '.join(parts)}",
        )
    previous = {c.get("type"): c for c in old}
    conditions = [c for c in old if c.get("type") not in {t for t, _, _ in _CONDITIONS}]
    for kind, ok_reason, ok_message in _CONDITIONS:
        status, (reason, message) = (
            ("True", failing[kind])
            if kind in failing
            else (
                "False",
                (ok_reason, ok_message),
            )
        )
        before = previous.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        conditions.append(
            {
                "type": kind,
                "status": status,
                "lastTransitionTime": since or timestamp,
                "reason": reason,
                "message": message,
            }
        )
    return conditions


def crd_terminating(crd: Obj, step: tuple[str, str, str], timestamp: str) -> Obj:
    """A copy of ``crd`` with its Terminating condition at ``step`` (SetCRDCondition: the
    transition time kept while the status stays)."""
    out = copy.deepcopy(crd)
    status, reason, message = step
    conditions = out.setdefault("status", {}).setdefault("conditions", [])
    before = next((c for c in conditions if c.get("type") == TERMINATING), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    condition = {
        "type": TERMINATING,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or timestamp,
    }
    if before is None:
        conditions.append(condition)
    else:
        conditions[conditions.index(before)] = condition
    return out


def crd_terminating_create(plural: str, group: str) -> errors.StatusError:
    """The custom resource handler's answer to a create while the CRD is terminating."""
    return errors.StatusError(
        405,
        "MethodNotAllowed",
        "create not allowed while custom resource definition is terminating",
        {"group": group, "kind": plural},
    )
