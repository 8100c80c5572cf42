"""The Kubernetes permissions durapod's processes need, in one place.

The Helm chart renders these rules, ``durapod dev`` grants exactly them to the operator's
and the API's ServiceAccounts, and a test checks that an end-to-end run under them is
never refused, so a missing verb fails here as it would on a cluster. Least privilege:
no wildcards; each rule says which code needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from durapod.resources.models import GROUP

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class Rule:
    """One PolicyRule, with why durapod needs it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    #: The resource is cluster-scoped: only a ClusterRole can grant it, whether or not
    #: the chart's ``watchNamespaces`` limits the rest to Roles in those namespaces.
    cluster_scoped: bool = False

    def manifest(self) -> dict[str, Any]:
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


#: The operator: kopf watches runs, their pods and schedules; the reconciler creates and
#: deletes pods, writes run status and Events, and fires schedules.
OPERATOR: tuple[Rule, ...] = (
    Rule(
        (GROUP,),
        ("taskruns",),
        ("get", "list", "watch", "create", "patch", "delete"),
        "kopf watches runs and the resync lists them; schedules create runs and cancel "
        "(patch spec.cancel) those they replace; expired runs are deleted",
    ),
    Rule(
        (GROUP,),
        ("taskruns/status",),
        ("patch",),
        "the reconciler writes run status and the last checkpoint",
    ),
    Rule((GROUP,), ("taskdefinitions",), ("get",), "a run's definition is read by name"),
    Rule(
        (GROUP,),
        ("taskschedules",),
        ("get", "list", "watch"),
        "kopf watches schedules; the resync lists them; the scheduler reads one by name",
    ),
    Rule(
        (GROUP,),
        ("taskschedules/status",),
        ("patch",),
        "the scheduler records the last firing and the next one",
    ),
    Rule(
        ("",),
        ("pods",),
        ("get", "list", "watch", "create", "delete"),
        "each attempt is a pod the operator creates, watches (kopf, by label), reads and deletes",
    ),
    Rule(("",), ("events",), ("create",), "run Events (kubectl describe tr)"),
    Rule(
        ("apiextensions.k8s.io",),
        ("customresourcedefinitions",),
        ("list", "watch"),
        "kopf's resource observer lists and watches CRDs",
        cluster_scoped=True,
    ),
)

#: The HTTP API: it creates and reads runs for its callers, long-polls their end, reads
#: their pods' logs and webhook Secrets, and checks callers' ServiceAccount tokens.
API: tuple[Rule, ...] = (
    Rule(
        (GROUP,),
        ("taskruns",),
        ("get", "watch", "create", "patch"),
        "runs are created (triggers, children, reruns), read, long-polled (a watch of one "
        "name) and cancelled (patch spec.cancel) through the API",
    ),
    Rule((GROUP,), ("taskdefinitions",), ("get",), "a trigger reads its definition by name"),
    Rule(
        ("",),
        ("secrets",),
        ("get",),
        "a webhook's signing Secret, in the namespace of its TaskDefinition",
    ),
    Rule(("",), ("pods/log",), ("get",), "`durapod runs logs` reads the logs of a run's pods"),
    Rule(
        ("authentication.k8s.io",),
        ("tokenreviews",),
        ("create",),
        "callers' ServiceAccount tokens are checked by TokenReview",
        cluster_scoped=True,
    ),
)

#: What the operator needs beyond ``OPERATOR`` when it serves only some namespaces
#: (``DURAPOD_WATCH_NAMESPACES``, the chart's ``watchNamespaces``): kopf, run with a list of
#: namespaces, lists and watches Namespaces to learn which of them exist (denied, it logs a
#: warning and assumes they all do).
OPERATOR_WATCHING_NAMESPACES: tuple[Rule, ...] = (
    Rule(
        ("",),
        ("namespaces",),
        ("list", "watch"),
        "kopf's namespace observer, when the operator serves a list of namespaces",
        cluster_scoped=True,
    ),
)

#: Component name to its rules.
COMPONENTS: dict[str, tuple[Rule, ...]] = {"operator": OPERATOR, "api": API}


def role_name(component: str, prefix: str = "durapod") -> str:
    """The name of a component's ClusterRole, binding and ServiceAccount."""
    return f"{prefix}-{component}"


def cluster_roles(prefix: str = "durapod") -> list[dict[str, Any]]:
    """One ClusterRole per component."""
    return [
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "ClusterRole",
            "metadata": {"name": role_name(component, prefix)},
            "rules": [rule.manifest() for rule in rules],
        }
        for component, rules in COMPONENTS.items()
    ]


def cluster_role_bindings(namespace: str, prefix: str = "durapod") -> list[dict[str, Any]]:
    """Each component's ClusterRole bound to its ServiceAccount in ``namespace``."""
    return [
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role_name(component, prefix)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role_name(component, prefix),
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": role_name(component, prefix),
                    "namespace": namespace,
                }
            ],
        }
        for component in COMPONENTS
    ]
