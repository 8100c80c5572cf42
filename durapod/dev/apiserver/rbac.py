"""Authorisation as kube-apiserver's RBAC authorizer decides it.

What a request asks for comes from its URL (``RequestInfoFactory.NewRequestInfo`` in
k8s.io/apiserver); whether it may is decided from the stored ClusterRoleBindings and
RoleBindings and the rules of the roles they bind (``plugin/pkg/auth/authorizer/rbac``
and ``pkg/registry/rbac/validation`` in kubernetes/kubernetes): verbs, apiGroups,
resources (``pods/log``, ``*/scale``), resourceNames, nonResourceURLs (a trailing ``*``)
and ``*`` wildcards. Members of ``system:masters`` may do anything, as the privileged
group authorizer lets them. Writing a role or a binding that grants more than the writer
holds is refused unless the writer may ``escalate`` or ``bind``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from durapod.dev.apiserver import errors
from durapod.dev.apiserver.storage import Obj, Storage
from durapod.dev.apiserver.tokens import User, service_account_user

GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
#: Namespace subresources that stay subresources, not resources of their own.
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_EXACT_NAME = re.compile(r"metadata\.name==?([^,]*)")
_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True)
class Attributes:
    """What one request asks to do (``authorizer.Attributes``)."""

    user: User
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def record(self) -> Obj:
        """The attributes as a request-log entry."""
        return {
            "user": self.user.name,
            "verb": self.verb,
            "apiGroup": self.api_group,
            "resource": self.resource,
            "subresource": self.subresource,
            "namespace": self.namespace,
            "name": self.name,
        }


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def request_attributes(user: User, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The attributes of a request from its method, path and query, as the real server
    works them out: ``GET`` of a collection is ``list`` (``watch`` with ``watch=true``),
    ``DELETE`` of one is ``deletecollection``; anything outside ``/api`` and ``/apis/G``
    is a non-resource URL whose verb is the lowercased method."""
    plain = Attributes(user, method.lower(), False, path)
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return plain
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return plain
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = _VERBS.get(method, "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "false").lower() not in ("false", "0") else "list"
        # A list or watch of one name (kubectl wait, delete) is authorised as for it.
        for term in query.get("fieldSelector", "").split(","):
            if match := _EXACT_NAME.fullmatch(term.strip()):
                name = match.group(1)
                break
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        user, verb, True, path, group, version, resource, subresource, namespace, name
    )


# -- matching rules (pkg/apis/rbac/v1/evaluation_helpers.go) ----------------------------


def _has(items: Sequence[str] | None, wanted: str) -> bool:
    return "*" in (items or ()) or wanted in (items or ())


def _resource_matches(rule: Obj, combined: str, subresource: str) -> bool:
    for resource in rule.get("resources") or ():
        if resource in ("*", combined):
            return True
        # "*/scale" matches the scale subresource of any resource.
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def _url_matches(rule: Obj, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or ():
        if url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Obj) -> bool:
    """Whether one PolicyRule allows the request (``RuleAllows``)."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return _url_matches(rule, attrs.path)
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    names = rule.get("resourceNames") or ()
    return (
        _has(rule.get("apiGroups"), attrs.api_group)
        and _resource_matches(rule, combined, attrs.subresource)
        and (not names or attrs.name in names)
    )


# -- resolving the rules that apply to a user (pkg/registry/rbac/validation/rule.go) ---


def _applies_to(user: User, subject: Obj, namespace: str) -> bool:
    kind, name = subject.get("kind"), str(subject.get("name", ""))
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        # A RoleBinding's ServiceAccount subject defaults to the binding's namespace.
        sa_namespace = subject.get("namespace") or namespace
        return bool(sa_namespace) and user.name == service_account_user(sa_namespace, name)
    return False


def _describe_subject(subject: Obj, namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        where = subject.get("namespace") or namespace
        return f'ServiceAccount "{subject.get("name")}/{where}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def _role_rules(storage: Storage, ref: Obj, namespace: str) -> list[Obj] | None:
    if ref.get("kind") == "ClusterRole":
        role = storage.get(f"{GROUP}/clusterroles", "", ref.get("name", ""))
    elif ref.get("kind") == "Role" and namespace:
        role = storage.get(f"{GROUP}/roles", namespace, ref.get("name", ""))
    else:
        role = None
    return None if role is None else list(role.get("rules") or [])


def visit_rules(storage: Storage, user: User, namespace: str) -> Iterator[tuple[str, Obj]]:
    """Each rule that applies to ``user`` in ``namespace`` with where it comes from:
    ClusterRoleBindings first, then the namespace's RoleBindings."""
    for binding in storage.objects(f"{GROUP}/clusterrolebindings"):
        subject = next((s for s in binding.get("subjects") or [] if _applies_to(user, s, "")), None)
        ref = binding.get("roleRef") or {}
        if subject is None or (rules := _role_rules(storage, ref, "")) is None:
            continue
        source = (
            f'ClusterRoleBinding "{binding["metadata"]["name"]}" of {ref.get("kind")} '
            f'"{ref.get("name")}" to {_describe_subject(subject, "")}'
        )
        for rule in rules:
            yield source, rule
    if not namespace:
        return
    for binding in storage.objects(f"{GROUP}/rolebindings", namespace):
        subjects = binding.get("subjects") or []
        subject = next((s for s in subjects if _applies_to(user, s, namespace)), None)
        ref = binding.get("roleRef") or {}
        if subject is None or (rules := _role_rules(storage, ref, namespace)) is None:
            continue
        source = (
            f'RoleBinding "{binding["metadata"]["name"]}/{namespace}" of {ref.get("kind")} '
            f'"{ref.get("name")}" to {_describe_subject(subject, namespace)}'
        )
        for rule in rules:
            yield source, rule


def rules_for(storage: Storage, user: User, namespace: str) -> list[Obj]:
    if MASTERS in user.groups:
        return [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    return [rule for _, rule in visit_rules(storage, user, namespace)]


def authorize(storage: Storage, attrs: Attributes) -> Decision:
    """Allow when ``system:masters`` or any bound rule allows; RBAC has no denials, so
    anything else has no opinion, which the server answers 403."""
    if MASTERS in attrs.user.groups:
        return Decision(True)
    for source, rule in visit_rules(storage, attrs.user, attrs.namespace):
        if rule_allows(attrs, rule):
            return Decision(True, f"RBAC: allowed by {source}")
    return Decision(False)


def forbidden(attrs: Attributes, reason: str = "") -> errors.StatusError:
    """The 403 the real server answers (``responsewriters.ForbiddenStatusError``)."""
    user = attrs.user.name
    if not attrs.resource_request:
        message = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        where = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        message = (
            f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group '
            f'"{attrs.api_group}" {where}'
        )
    if reason:
        message = f"{message}: {reason}"
    return _forbidden(attrs.resource, attrs.api_group, attrs.name, message)


def _forbidden(resource: str, group: str, name: str, message: str) -> errors.StatusError:
    """``apierrors.NewForbidden``: the qualified resource and name before the reason."""
    if resource:
        qualified = errors.qualified(resource, group)
        head = f'{qualified} "{name}" is forbidden' if name else f"{qualified} is forbidden"
    else:
        head = "forbidden"
    return errors.StatusError(
        403,
        "Forbidden",
        f"{head}: {message}",
        {"name": name, "group": group, "kind": resource},
    )


# -- privilege escalation (pkg/registry/rbac/validation, escalation_check.go) -----------


def _breakdown(rule: Obj) -> list[Obj]:
    """A rule as rules of one verb, one group, one resource and at most one name."""
    out: list[Obj] = []
    verbs = rule.get("verbs") or []
    names = rule.get("resourceNames") or []
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in verbs:
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                if names:
                    out.extend({**base, "resourceNames": [n]} for n in names)
                else:
                    out.append(base)
    for url in rule.get("nonResourceURLs") or []:
        out.extend({"nonResourceURLs": [url], "verbs": [v]} for v in verbs)
    return out


def _covers(owner: Obj, sub: Obj) -> bool:
    def all_in(key: str) -> bool:
        have = owner.get(key) or []
        return "*" in have or all(x in have for x in sub.get(key) or [])

    urls = all(
        any(
            o == u or (o.endswith("*") and u.startswith(o.rstrip("*")))
            for o in owner.get("nonResourceURLs") or []
        )
        for u in sub.get("nonResourceURLs") or []
    )
    owner_names = owner.get("resourceNames") or []
    sub_names = sub.get("resourceNames") or []
    names = not owner_names or (bool(sub_names) and all(n in owner_names for n in sub_names))
    return all_in("verbs") and all_in("apiGroups") and all_in("resources") and urls and names


def uncovered(owner_rules: Sequence[Obj], rules: Sequence[Obj]) -> list[Obj]:
    """The parts of ``rules`` that ``owner_rules`` do not grant (``validation.Covers``)."""
    return [
        sub
        for rule in rules
        for sub in _breakdown(rule)
        if not any(_covers(owner, sub) for owner in owner_rules)
    ]


def _compact(rules: Sequence[Obj]) -> list[Obj]:
    """Simple rules for one group and resource merged into one (``CompactRules``)."""
    merged: dict[tuple[str, str], Obj] = {}
    out: list[Obj] = []
    for rule in rules:
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            out.append(rule)
            continue
        key = (rule["apiGroups"][0], rule["resources"][0])
        if key in merged:
            merged[key]["verbs"] += [v for v in rule["verbs"] if v not in merged[key]["verbs"]]
        else:
            merged[key] = {**rule, "verbs": list(rule["verbs"])}
            out.append(merged[key])
    return out


def _go_list(items: Sequence[str]) -> str:
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def compact_string(rule: Obj) -> str:
    """A rule as escalation errors show it (``CompactString``)."""
    parts = [
        f"{label}:{_go_list(rule[key])}"
        for label, key in (
            ("APIGroups", "apiGroups"),
            ("Resources", "resources"),
            ("NonResourceURLs", "nonResourceURLs"),
            ("ResourceNames", "resourceNames"),
            ("Verbs", "verbs"),
        )
        if rule.get(key)
    ]
    return "{" + ", ".join(parts) + "}"


def check_escalation(storage: Storage, user: User, kind: str, obj: Obj) -> None:
    """Refuse (403) a Role, ClusterRole or binding that grants more than ``user`` holds,
    unless the user may ``escalate`` that role or ``bind`` the role referred to."""
    if MASTERS in user.groups:
        return
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    plural = kind.lower() + "s"
    if kind in ("Role", "ClusterRole"):
        escalate = Attributes(user, "escalate", True, "", GROUP, "v1", plural, "", namespace, name)
        if authorize(storage, escalate).allowed:
            return
        rules: list[Obj] = list(obj.get("rules") or [])
    else:
        ref = obj.get("roleRef") or {}
        bind = Attributes(
            user,
            "bind",
            True,
            "",
            ref.get("apiGroup", GROUP),
            "v1",
            "clusterroles" if ref.get("kind") == "ClusterRole" else "roles",
            "",
            namespace,
            ref.get("name", ""),
        )
        if authorize(storage, bind).allowed:
            return
        bound = _role_rules(storage, ref, namespace)
        if bound is None:
            # The role lister's NotFound, which names the resource in the singular.
            missing_role = f'{str(ref.get("kind", "")).lower()}.{GROUP} "{ref.get("name")}"'
            raise _forbidden(plural, GROUP, name, f"{missing_role} not found")
        rules = bound
    missing = uncovered(rules_for(storage, user, namespace), rules)
    if not missing:
        return
    shown = sorted({compact_string(r) for r in _compact(missing)})
    message = (
        f'user "{user.name}" (groups={_go_list(user.groups)}) is attempting to grant RBAC '
        "permissions not currently held:\n" + "\n".join(shown)
    )
    raise _forbidden(plural, GROUP, name, message)


# -- the default policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go) ----

_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
_DISCOVERY_URLS = [*_PUBLIC_URLS, "/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]
_DEFAULT_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _cluster_role(name: str, rules: list[Obj]) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _DEFAULT_LABELS, "annotations": _AUTOUPDATE},
        "rules": rules,
    }


def _binding(name: str, role: str, groups: Sequence[str]) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": _DEFAULT_LABELS, "annotations": _AUTOUPDATE},
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups],
    }


def default_policy() -> list[Obj]:
    """The default ClusterRoles and bindings every cluster starts with that matter here:
    cluster-admin for ``system:masters``; discovery, health and the self-reviews
    (``whoami``, ``can-i``) for every authenticated user; TokenReview and
    SubjectAccessReview for whoever is bound to ``system:auth-delegator``."""
    return [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _cluster_role("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]),
        _cluster_role(
            "system:public-info-viewer", [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}]
        ),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["selfsubjectreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _cluster_role(
            "system:auth-delegator",
            [
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["tokenreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["subjectaccessreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _binding("cluster-admin", "cluster-admin", [MASTERS]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            ["system:authenticated", "system:unauthenticated"],
        ),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
    ]


def subject_attributes(user: User, spec: Obj, namespace: str | None = None) -> Attributes:
    """The attributes a SubjectAccessReview's spec asks about."""
    if (res := spec.get("resourceAttributes")) is not None:
        return Attributes(
            user,
            res.get("verb", ""),
            True,
            "",
            res.get("group", ""),
            res.get("version", ""),
            res.get("resource", ""),
            res.get("subresource", ""),
            res.get("namespace", "") if namespace is None else namespace,
            res.get("name", ""),
        )
    other: Obj = spec.get("nonResourceAttributes") or {}
    return Attributes(user, other.get("verb", ""), False, other.get("path", ""))


def rules_review(storage: Storage, user: User, namespace: str) -> Obj:
    """A SelfSubjectRulesReview's status: what ``user`` may do in ``namespace``."""
    rules = rules_for(storage, user, namespace)
    if MASTERS in user.groups:
        rules = [*rules, {"nonResourceURLs": ["*"], "verbs": ["*"]}]
    resource_rules = [
        {k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)}
        for r in rules
        if r.get("resources")
    ]
    url_rules = [
        {"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}
        for r in rules
        if r.get("nonResourceURLs")
    ]
    return {"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": False}
