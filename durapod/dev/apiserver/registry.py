"""The resource types the stand-in serves: the built-ins the operator and kubectl use,
plus every custom resource registered by creating its CustomResourceDefinition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: Subresources beside the main resource: "status", "log", "eviction", "binding".
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    #: The structural openAPIV3Schema of a custom resource; None for built-ins.
    schema: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def custom(self) -> bool:
        return self.schema is not None

    def discovery(self) -> list[dict[str, Any]]:
        """The APIResourceList entries of this type and its subresources."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        for sub in self.subresources:
            entry: dict[str, Any] = {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }
            entry.update(_SUBRESOURCE_KINDS.get(sub, {}))
            entries.append(entry)
        return entries


#: Subresources whose kind or verbs differ from their parent's, as discovery shows them.
_SUBRESOURCE_KINDS: dict[str, dict[str, Any]] = {
    "log": {"kind": "Pod", "verbs": ["get"]},
    "eviction": {"kind": "Eviction", "group": "policy", "version": "v1", "verbs": ["create"]},
    "binding": {"kind": "Binding", "verbs": ["create"]},
    "token": {
        "kind": "TokenRequest",
        "group": "authentication.k8s.io",
        "version": "v1",
        "verbs": ["create"],
    },
    "scale": {"kind": "Scale", "group": "autoscaling", "version": "v1"},
    "finalize": {"verbs": ["update"]},
}
_REVIEW = ("create",)


def _core(plural: str, kind: str, namespaced: bool = True, **extra: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind.lower(), kind, namespaced, **extra)


def _grouped(
    group: str, plural: str, kind: str, namespaced: bool = True, **extra: Any
) -> ResourceType:
    return ResourceType(group, "v1", plural, kind.lower(), kind, namespaced, **extra)


#: The built-in kinds durapod, its chart, kubectl and Helm touch (their schemas come from
#: the upstream OpenAPI definitions; see ``builtins``).
BUILTINS: tuple[ResourceType, ...] = (
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status", "finalize"),
    ),
    _core("nodes", "Node", namespaced=False, short_names=("no",), subresources=("status",)),
    _core(
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=("status", "log", "eviction", "binding"),
    ),
    _core("events", "Event", short_names=("ev",)),
    _core("secrets", "Secret"),
    _core("configmaps", "ConfigMap", short_names=("cm",)),
    _core("serviceaccounts", "ServiceAccount", short_names=("sa",), subresources=("token",)),
    _core("resourcequotas", "ResourceQuota", short_names=("quota",), subresources=("status",)),
    _core(
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
    ),
    _core("endpoints", "Endpoints", short_names=("ep",)),
    _grouped(
        "apps",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    _grouped(
        "apps",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    _grouped(
        "apps",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    _grouped("batch", "jobs", "Job", categories=("all",), subresources=("status",)),
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        True,
        short_names=("hpa",),
        categories=("all",),
        subresources=("status",),
    ),
    _grouped("rbac.authorization.k8s.io", "roles", "Role"),
    _grouped("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _grouped("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", namespaced=False),
    _grouped(
        "rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
    ),
    _grouped(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        subresources=("status",),
    ),
    _grouped("networking.k8s.io", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _grouped(
        "networking.k8s.io", "ingresses", "Ingress", short_names=("ing",), subresources=("status",)
    ),
    _grouped("coordination.k8s.io", "leases", "Lease"),
    _grouped("events.k8s.io", "events", "Event", short_names=("ev",)),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        subresources=("status",),
    ),
    _grouped("authentication.k8s.io", "tokenreviews", "TokenReview", False, verbs=_REVIEW),
    _grouped(
        "authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview", False, verbs=_REVIEW
    ),
    _grouped(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=_REVIEW,
    ),
    _grouped(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        verbs=_REVIEW,
    ),
    _grouped(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        verbs=_REVIEW,
    ),
    _grouped(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        False,
        verbs=_REVIEW,
    ),
)


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types one CustomResourceDefinition serves, one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                subresources=("status",) if "status" in version.get("subresources", {}) else (),
                schema=version.get("schema", {}).get("openAPIV3Schema")
                or {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                printer_columns=tuple(version.get("additionalPrinterColumns", ())),
            )
        )
    return types


class Registry:
    """Resource types by group/version, updated as CRDs come and go."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}
        for rt in BUILTINS:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def add_crd(self, crd: dict[str, Any]) -> None:
        self.remove_crd(crd["metadata"]["name"])
        types = from_crd(crd)
        self._crd_types[crd["metadata"]["name"]] = types
        for rt in types:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_crd(self, name: str) -> None:
        for rt in self._crd_types.pop(name, []):
            self._types.pop((rt.group, rt.version, rt.plural), None)

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_key(self, key: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.key == key]

    def versions(self, group: str) -> list[str]:
        return sorted({rt.version for rt in self._types.values() if rt.group == group})

    def groups(self) -> list[str]:
        return sorted({rt.group for rt in self._types.values() if rt.group})

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group == group and rt.version == version]
