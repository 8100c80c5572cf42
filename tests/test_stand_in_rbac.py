"""The stand-in authenticates and authorises as kube-apiserver does: ServiceAccount tokens
(TokenRequest, TokenReview), RBAC over Roles and ClusterRoles with the real 403 wording,
``kubectl auth can-i`` / ``whoami`` / ``create token``, privilege-escalation checks, and
``durapod dev`` running the operator and the API as ServiceAccounts that are never
refused what durapod needs."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod import permissions
from durapod.dev.apiserver import rbac, tokens
from durapod.dev.apiserver.auth import RequestLog, read_request_log
from durapod.dev.apiserver.tokens import User
from tests.helpers import REPO, TOKEN, LocalCluster, running_dev, wait_for

SA = "system:serviceaccount:default:bot"
SA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
def admin(local_cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=local_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


def _created(response: httpx.Response) -> Any:
    assert response.status_code == 201, response.text
    return response.json()


def _account(admin: httpx.Client, name: str = "bot", namespace: str = "default") -> Any:
    return _created(
        admin.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": name}}
        )
    )


def _token(admin: httpx.Client, name: str = "bot", namespace: str = "default", **spec: Any) -> str:
    answer = _created(
        admin.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
    )
    return str(answer["status"]["token"])


def _as(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})


def _grant(
    admin: httpx.Client, rules: list[dict[str, Any]], name: str = "r", namespace: str = "default"
) -> None:
    """A Role with ``rules`` bound to the default namespace's ``bot`` ServiceAccount."""
    _created(
        admin.post(
            f"{RBAC}/namespaces/{namespace}/roles",
            json={"metadata": {"name": name}, "rules": rules},
        )
    )
    _created(
        admin.post(
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            json={
                "metadata": {"name": name},
                "roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}],
            },
        )
    )


def _review(admin: httpx.Client, token: str, audiences: list[str] | None = None) -> Any:
    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = audiences
    return _created(
        admin.post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
    )["status"]


def _claims(token: str) -> Any:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _can(cluster: LocalCluster, *args: str, user: str = SA) -> str:
    """``kubectl auth can-i`` as ``user`` (impersonated: kubectl sends no token over
    plain HTTP, so ``--as`` is how a user checks another's rights here)."""
    return cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False).stdout.strip()


# -- request attributes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/default/pods", {}, ("list", "", "pods", "", "default", "")),
        ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "pods", "", "", "")),
        (
            "GET",
            "/apis/durapod.io/v1/namespaces/ns/taskruns",
            {"watch": "1", "fieldSelector": "metadata.name=r1"},
            ("watch", "durapod.io", "taskruns", "", "ns", "r1"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/ns/deployments",
            {},
            ("deletecollection", "apps", "deployments", "", "ns", ""),
        ),
        (
            "PATCH",
            "/apis/durapod.io/v1/namespaces/ns/taskruns/r1/status",
            {},
            ("patch", "durapod.io", "taskruns", "status", "ns", "r1"),
        ),
        # A namespace is in itself; its status is a subresource, not a resource.
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
        (
            "PUT",
            "/api/v1/namespaces/ns/status",
            {},
            ("update", "", "namespaces", "status", "ns", "ns"),
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/bot/token",
            {},
            ("create", "", "serviceaccounts", "token", "ns", "bot"),
        ),
    ],
)
def test_request_attributes_come_from_the_url_as_the_real_server_reads_them(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    """A real API server derives verb, group, resource, subresource, namespace and name from
    the URL (k8s.io/apiserver RequestInfoFactory.NewRequestInfo: GET of a collection is
    list, or watch with watch=true; a list of one metadata.name is authorised as for that
    name; DELETE of a collection is deletecollection); so does ours."""
    attrs = rbac.request_attributes(User("u"), method, path, query)
    assert attrs.resource_request
    got = (
        attrs.verb,
        attrs.api_group,
        attrs.resource,
        attrs.subresource,
        attrs.namespace,
        attrs.name,
    )
    assert got == expected


@pytest.mark.parametrize("path", ["/version", "/api", "/api/v1", "/apis/durapod.io/v1", "/healthz"])
def test_discovery_and_health_are_non_resource_urls(path: str) -> None:
    """A real API server treats /api, /api/v1, /apis/G/V, /version and /healthz as
    non-resource URLs whose verb is the method (NewRequestInfo); so does ours."""
    attrs = rbac.request_attributes(User("u"), "GET", path, {})
    assert not attrs.resource_request and attrs.verb == "get" and attrs.path == path


# -- authentication ----------------------------------------------------------------------


def test_no_credentials_is_the_admin_and_a_bad_token_is_401(local_cluster: LocalCluster) -> None:
    """kube-apiserver answers a token it cannot authenticate with 401 Unauthorized; without
    credentials its old localhost insecure port was the admin (system:unsecured in
    system:masters), which our plain-HTTP loopback server keeps."""
    plain = httpx.get(f"{local_cluster.url}/api/v1/namespaces/default/pods")
    assert plain.status_code == 200
    forged = httpx.get(
        f"{local_cluster.url}/api/v1/namespaces/default/pods",
        headers={"Authorization": "Bearer forged"},
    )
    assert forged.status_code == 401
    assert forged.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def test_kubectl_create_token_mints_a_service_account_jwt(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server's TokenRequest (``kubectl create token``) returns a JWT with the
    issuer, subject, audiences, expiry and the kubernetes.io claim naming the
    ServiceAccount (pkg/serviceaccount/claims.go), and refuses durations under ten
    minutes; so does ours."""
    account = _account(admin)
    made = local_cluster.kubectl("create", "token", "bot", "--duration=20m", "--audience=durapod")
    token = made.stdout.strip()
    claims = _claims(token)
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["sub"] == SA
    assert claims["aud"] == ["durapod"]
    assert claims["exp"] - claims["iat"] == 1200 and claims["nbf"] == claims["iat"]
    assert claims["kubernetes.io"] == {
        "namespace": "default",
        "serviceaccount": {"name": "bot", "uid": account["metadata"]["uid"]},
    }
    short = local_cluster.kubectl("create", "token", "bot", "--duration=5m", check=False)
    assert short.returncode != 0
    assert (
        'TokenRequest.authentication.k8s.io "bot" is invalid: spec.expirationSeconds: '
        "Invalid value: 300: may not specify a duration less than 10 minutes"
    ) in short.stderr
    missing = local_cluster.kubectl("create", "token", "nobody", check=False)
    assert 'serviceaccounts "nobody" not found' in missing.stderr


def test_a_service_account_token_authenticates_as_its_account(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server authenticates a ServiceAccount token as
    system:serviceaccount:NS:NAME in system:serviceaccounts, system:serviceaccounts:NS and
    system:authenticated (SelfSubjectReview, ``kubectl auth whoami``); so does ours."""
    account = _account(admin)
    with _as(local_cluster.url, _token(admin)) as bot:
        review = _created(
            bot.post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        )
    user = review["status"]["userInfo"]
    assert (user["username"], user["uid"], user["groups"]) == (
        SA,
        account["metadata"]["uid"],
        SA_GROUPS,
    )
    shown = local_cluster.kubectl("auth", "whoami", f"--as={SA}").stdout
    assert f"Username    {SA}" in shown
    assert f"Groups      [{' '.join(SA_GROUPS)}]" in shown


def test_token_review_refuses_wrong_audience_deleted_pod_and_gone_account(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server's TokenReview checks the audience against the requested ones (the
    server's own by default), and that the ServiceAccount and the bound pod still exist
    with the uids the token names, so a deleted pod's token is dead (pkg/serviceaccount
    jwt.go and claims.go); a request with such a token is 401. So does ours."""
    _account(admin)
    _created(
        admin.post(
            "/api/v1/namespaces/default/pods",
            json={
                "metadata": {"name": "p"},
                "spec": {
                    "serviceAccountName": "bot",
                    "containers": [{"name": "c", "image": "durapod:dev"}],
                },
            },
        )
    )
    pod = admin.get("/api/v1/namespaces/default/pods/p").json()
    bound = _token(
        admin,
        audiences=["durapod"],
        boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "p"},
    )
    assert _claims(bound)["kubernetes.io"]["pod"] == {"name": "p", "uid": pod["metadata"]["uid"]}

    good = _review(admin, bound, ["durapod"])
    assert good["authenticated"] is True and good["audiences"] == ["durapod"]
    assert good["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["p"]
    assert good["user"]["extra"]["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]

    wrong = _review(admin, bound)
    assert wrong["authenticated"] is False
    assert wrong["error"] == (
        '[invalid bearer token, token audiences ["durapod"] is invalid for the target '
        'audiences ["https://kubernetes.default.svc.cluster.local"]]'
    )
    with _as(local_cluster.url, bound) as holder:
        assert holder.get("/api").status_code == 401  # not an API server token

    assert admin.delete("/api/v1/namespaces/default/pods/p").status_code == 200
    dead = _review(admin, bound, ["durapod"])
    assert dead == {
        "authenticated": False,
        "user": {},
        "error": "[invalid bearer token, service account token has been invalidated]",
    }

    plain = _token(admin)
    assert _review(admin, plain)["authenticated"] is True
    assert admin.delete("/api/v1/namespaces/default/serviceaccounts/bot").status_code == 200
    assert _review(admin, plain)["error"] == (
        '[invalid bearer token, serviceaccounts "bot" not found]'
    )
    recreated = _account(admin)
    refused = _review(admin, plain)
    assert refused["authenticated"] is False
    assert (
        f"service account UID ({recreated['metadata']['uid']}) does not match claim"
        in (refused["error"])
    )
    with _as(local_cluster.url, plain) as holder:
        assert holder.get("/api").status_code == 401


def test_an_expired_token_is_refused() -> None:
    """A real API server refuses a ServiceAccount token past its expiry (plus go-jose's
    minute of leeway) with "service account token has expired"; so does ours."""
    key = b"k" * 32
    account = {"metadata": {"name": "bot", "namespace": "default", "uid": "u1"}}
    token, expiry = tokens.mint(key, account, seconds=600, now=time.time() - 700)
    objects = {("serviceaccounts", "default", "bot"): account}

    def lookup(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return objects.get((plural, namespace, name))

    assert tokens.verify(key, token, lookup, now=expiry + 30) is not None  # within leeway
    with pytest.raises(tokens.TokenError, match=r"^service account token has expired$"):
        tokens.verify(key, token, lookup, now=expiry + 61)
    with pytest.raises(tokens.TokenError, match="cryptographic primitive"):
        tokens.verify(b"other" * 8, token, lookup, now=expiry)


def test_token_request_binds_only_a_pod_of_that_account(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server binds a token only to an existing pod running as that
    ServiceAccount, with a matching uid (serviceaccount/storage/token.go); so does ours."""
    _account(admin)
    _created(
        admin.post(
            "/api/v1/namespaces/default/pods",
            json={
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "durapod:dev"}]},
            },
        )
    )
    url = "/api/v1/namespaces/default/serviceaccounts/bot/token"

    def request(ref: dict[str, Any]) -> httpx.Response:
        return admin.post(url, json={"spec": {"boundObjectRef": {"apiVersion": "v1", **ref}}})

    other = request({"kind": "Pod", "name": "p"})
    assert other.status_code == 400
    assert other.json()["message"] == (
        'cannot bind token for serviceaccount "bot" to pod running with different '
        "serviceaccount name."
    )
    assert request({"kind": "Pod", "name": "nope"}).json()["message"] == 'pods "nope" not found'
    # Pod "p" runs as its namespace's "default" ServiceAccount (the controller made it).
    stale = request({"kind": "Pod", "name": "p", "uid": "0000"})
    # The default ServiceAccount's pod, but bound through "bot": still refused.
    assert stale.status_code == 400
    moved = admin.post(
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        json={
            "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "0"}}
        },
    )
    assert moved.status_code == 409
    assert "the UID in the bound object reference (0) does not match" in moved.json()["message"]


# -- authorisation -----------------------------------------------------------------------


def test_refusals_are_403_with_the_real_wording(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server refuses an unauthorised request with 403 Forbidden, the message
    naming the user, verb, resource, API group and namespace (or the cluster scope) and
    details {name, group, kind} (responsewriters.ForbiddenStatusError); so does ours."""
    _account(admin)
    with _as(local_cluster.url, _token(admin)) as bot:
        listed = bot.get("/api/v1/namespaces/default/pods")
        named = bot.get("/apis/apps/v1/namespaces/default/deployments/web/scale")
        cluster = bot.get("/api/v1/namespaces")
        path = bot.get("/metrics")
        assert bot.get("/apis").status_code == 200  # discovery is everyone's
    assert listed.status_code == 403
    assert listed.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'pods is forbidden: User "{SA}" cannot list resource "pods" in API group "" '
        'in the namespace "default"',
        "reason": "Forbidden",
        "details": {"name": "", "group": "", "kind": "pods"},
        "code": 403,
    }
    assert named.json()["message"] == (
        f'deployments.apps "web" is forbidden: User "{SA}" cannot get resource '
        '"deployments/scale" in API group "apps" in the namespace "default"'
    )
    assert named.json()["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert cluster.json()["message"] == (
        f'namespaces is forbidden: User "{SA}" cannot list resource "namespaces" in API '
        'group "" at the cluster scope'
    )
    assert path.json()["message"] == f'forbidden: User "{SA}" cannot get path "/metrics"'


def test_can_i_follows_verbs_subresources_names_and_namespaces(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server's RBAC matches verbs, apiGroups, resources with their
    subresources (``pods/log``; ``*/scale`` for any resource's), resourceNames (which
    never allow a list) and the binding's namespace (rbac.go RuleAllows,
    evaluation_helpers.go); ``kubectl auth can-i`` shows it. So does ours."""
    _account(admin)
    _grant(
        admin,
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["settings"],
                "verbs": ["get", "update"],
            },
            {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]},
        ],
    )
    asked = {
        ("list", "pods"): "yes",
        ("get", "pods", "--subresource=log"): "yes",
        ("get", "pods", "--subresource=status"): "no",
        ("delete", "pods"): "no",
        ("list", "pods", "-n", "kube-system"): "no",
        ("get", "configmaps/settings"): "yes",
        ("get", "configmaps/other"): "no",
        ("list", "configmaps"): "no",
        ("update", "deployments.apps", "--subresource=scale"): "yes",
        ("update", "deployments.apps"): "no",
    }
    assert {args: _can(local_cluster, *args) for args in asked} == asked


def test_cluster_roles_grant_non_resource_urls_and_everywhere(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server's ClusterRoleBinding grants a ClusterRole's rules in every
    namespace and its nonResourceURLs, exactly or by a trailing ``*``; the default
    system:discovery and system:basic-user roles let every authenticated user discover
    the API and review itself (bootstrappolicy/policy.go). So does ours."""
    _account(admin)
    _created(
        admin.post(
            f"{RBAC}/clusterroles",
            json={
                "metadata": {"name": "reader"},
                "rules": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["watch"]},
                    {"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]},
                ],
            },
        )
    )
    _created(
        admin.post(
            f"{RBAC}/clusterrolebindings",
            json={
                "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": rbac.GROUP, "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:default"}],
            },
        )
    )
    asked = {
        ("watch", "deployments.apps", "-n", "kube-system"): "yes",
        ("watch", "deployments.apps", "--all-namespaces"): "yes",
        ("get", "/metrics"): "yes",
        ("get", "/logs/kubelet.log"): "yes",
        ("get", "/logsx"): "no",
        ("post", "/metrics"): "no",
        ("get", "/version"): "yes",
        ("create", "selfsubjectaccessreviews.authorization.k8s.io"): "yes",
    }
    assert {args: _can(local_cluster, *args) for args in asked} == asked
    listed = local_cluster.kubectl("auth", "can-i", "--list", f"--as={SA}").stdout
    assert "deployments.apps" in listed and "[/logs/*]" in listed


def test_subject_access_reviews_answer_for_any_user(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server's SubjectAccessReview and LocalSubjectAccessReview answer for the
    user and groups described (nothing added), with the RBAC reason when allowed; so does
    ours."""
    _account(admin)
    _grant(admin, [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    asked = {"verb": "get", "resource": "secrets", "namespace": "default"}
    sar = _created(
        admin.post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json={"spec": {"user": SA, "resourceAttributes": asked}},
        )
    )["status"]
    assert sar == {
        "allowed": True,
        "reason": 'RBAC: allowed by RoleBinding "r/default" of Role "r" to ServiceAccount '
        '"bot/default"',
    }
    stranger = _created(
        admin.post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json={"spec": {"user": "jane", "resourceAttributes": asked}},
        )
    )["status"]
    assert stranger == {"allowed": False}
    local = _created(
        admin.post(
            "/apis/authorization.k8s.io/v1/namespaces/kube-system/localsubjectaccessreviews",
            json={
                "spec": {"user": SA, "resourceAttributes": {"verb": "get", "resource": "secrets"}}
            },
        )
    )["status"]
    assert local["allowed"] is False
    neither = admin.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews", json={"spec": {"user": SA}}
    )
    assert neither.status_code == 422
    assert "exactly one of nonResourceAttributes or resourceAttributes" in neither.json()["message"]
    with _as(local_cluster.url, _token(admin)) as bot:
        denied = bot.post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json={"spec": {"user": SA, "resourceAttributes": asked}},
        )
    assert denied.status_code == 403  # needs system:auth-delegator, not basic-user


def test_impersonation_needs_the_impersonate_verb(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server lets a user act as another (Impersonate-User) only when RBAC
    allows ``impersonate`` on that user or ServiceAccount (the impersonation filter);
    so does ours."""
    _account(admin)
    with _as(local_cluster.url, _token(admin)) as bot:
        refused = bot.get("/api", headers={"Impersonate-User": "jane"})
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            f'users "jane" is forbidden: User "{SA}" cannot impersonate resource "users" in '
            'API group "" at the cluster scope'
        )
        _grant(
            admin,
            [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}],
        )
        _account(admin, "other")
        review = _created(
            bot.post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={},
                headers={"Impersonate-User": "system:serviceaccount:default:other"},
            )
        )
    assert review["status"]["userInfo"]["username"] == "system:serviceaccount:default:other"


def test_granting_more_than_one_holds_is_refused_unless_escalate_or_bind(
    local_cluster: LocalCluster, admin: httpx.Client
) -> None:
    """A real API server refuses a Role or binding granting permissions its writer does not
    hold, naming them, unless the writer may ``escalate`` the role or ``bind`` the role
    referred to (pkg/registry/rbac/validation ConfirmNoEscalation,
    escalation_check.go); so does ours."""
    _account(admin)
    _grant(
        admin,
        [
            {
                "apiGroups": [rbac.GROUP],
                "resources": ["roles", "rolebindings"],
                "verbs": ["create", "patch"],
            },
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        ],
        name="writer",
    )
    pods_reader = {
        "metadata": {"name": "pods-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }
    with _as(local_cluster.url, _token(admin)) as bot:
        refused = bot.post(f"{RBAC}/namespaces/default/roles", json=pods_reader)
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            'roles.rbac.authorization.k8s.io "pods-reader" is forbidden: user '
            f'"{SA}" (groups=["system:serviceaccounts" "system:serviceaccounts:default" '
            '"system:authenticated"]) is attempting to grant RBAC permissions not currently '
            'held:\n{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}'
        )
        within = {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        }
        _created(bot.post(f"{RBAC}/namespaces/default/roles", json=within))
        widened = bot.patch(
            f"{RBAC}/namespaces/default/roles/cm-reader",
            content=json.dumps({"rules": [*within["rules"], *pods_reader["rules"]]}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert widened.status_code == 403
        assert widened.json()["message"].startswith(
            'roles.rbac.authorization.k8s.io "cm-reader" is forbidden: user'
        )
        labelled = bot.patch(
            f"{RBAC}/namespaces/default/roles/cm-reader",
            content=json.dumps({"metadata": {"labels": {"team": "a"}}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert labelled.status_code == 200, labelled.text

        _created(admin.post(f"{RBAC}/namespaces/default/roles", json=pods_reader))
        binding = {
            "metadata": {"name": "pods-reader"},
            "roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": "pods-reader"},
            "subjects": [{"kind": "User", "name": "jane"}],
        }
        unbound = bot.post(f"{RBAC}/namespaces/default/rolebindings", json=binding)
        assert unbound.status_code == 403
        assert (
            "is attempting to grant RBAC permissions not currently held"
            in (unbound.json()["message"])
        )
        _grant(
            admin,
            [
                {
                    "apiGroups": [rbac.GROUP],
                    "resources": ["roles"],
                    "verbs": ["bind", "escalate"],
                    "resourceNames": ["pods-reader", "escalated"],
                }
            ],
            name="delegate",
        )
        _created(bot.post(f"{RBAC}/namespaces/default/rolebindings", json=binding))
        escalated = {**pods_reader, "metadata": {"name": "escalated"}}
        _created(bot.post(f"{RBAC}/namespaces/default/roles", json=escalated))


# -- durapod dev -------------------------------------------------------------------------


def test_durapod_dev_runs_the_operator_and_api_as_service_accounts_never_refused() -> None:
    """On a cluster the operator and the API run as ServiceAccounts with the chart's RBAC,
    and a missing permission is a 403. ``durapod dev`` runs them the same way, with
    ``durapod.permissions``: a run through kubectl and one through the durapod API succeed
    and no request of theirs is refused, while the user's kubeconfig stays the admin."""
    with running_dev("durapod-rbac-") as dev:
        dev.kubectl("apply", "-f", str(REPO / "examples/hello/"))
        dev.wait_phase("hello-1", "Succeeded")
        env = dev.env()
        with httpx.Client(
            base_url=env["DURAPOD_API_URL"] + "/v1/namespaces/default",
            headers={"Authorization": f"Bearer {env['DURAPOD_TOKEN']}"},
            timeout=60,
        ) as api:
            started = api.post("/tasks/hello/runs", json={"payload": {"name": "rbac"}})
            assert started.status_code == 202, started.text
            name = started.json()["name"]

            def finished() -> Any:
                # A long-poll: the API watches the TaskRun (a watch of one name).
                answer = api.get(f"/runs/{name}", params={"wait": 20})
                return answer.status_code == 200 and answer.json()["phase"] == "Succeeded"

            wait_for(finished, 60, f"run {name} to succeed through the API")

        ns = "durapod-system"
        for component in permissions.COMPONENTS:
            account = f"system:serviceaccount:{ns}:durapod-{component}"
            kubeconfig = (dev.home / f"kubeconfig-{component}").read_text()
            token = kubeconfig.split("token: ", 1)[1].split()[0]
            with _as(dev.kube_url, token) as process:
                whoami = _created(
                    process.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json={})
                )
            assert whoami["status"]["userInfo"]["username"] == account
            role = json.loads(
                dev.kubectl("get", "clusterrole", f"durapod-{component}", "-o", "json").stdout
            )
            assert role["rules"] == [r.manifest() for r in permissions.COMPONENTS[component]]
        can = dev.kubectl(
            "auth",
            "can-i",
            "get",
            "secrets",
            "-n",
            "default",
            f"--as=system:serviceaccount:{ns}:durapod-operator",
            check=False,
        )
        assert can.stdout.strip() == "no"
        assert "system:masters" in dev.kubectl("auth", "whoami").stdout

        def logged() -> list[dict[str, Any]]:
            entries = read_request_log(dev.home / "apiserver-requests.jsonl")
            users = {e.get("user") for e in entries}
            return (
                entries
                if {f"system:serviceaccount:{ns}:durapod-{c}" for c in ("operator", "api")} <= users
                else []
            )

        entries = wait_for(logged, 30, "requests of both ServiceAccounts in the request log")
    theirs = [
        e for e in entries if str(e.get("user", "")).startswith(f"system:serviceaccount:{ns}:")
    ]
    refused = [e for e in theirs if e["decision"] != "allow"]
    assert refused == []
    made = {
        (e["user"].rsplit(":", 1)[1], e["verb"], e["resource"], e["subresource"]) for e in theirs
    }
    assert ("durapod-operator", "create", "pods", "") in made
    assert ("durapod-operator", "patch", "taskruns", "status") in made
    assert ("durapod-api", "create", "taskruns", "") in made


def test_the_request_log_keeps_one_previous_file(tmp_path: Path) -> None:
    """kube-apiserver's audit log rotates by size and keeps older files; the stand-in's
    request log starts again past its limit, keeping the previous file as ``.1``, and
    reading it gives every entry in order."""
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, limit=200)
    for n in range(10):
        log.write({"n": n, "padding": "x" * 40})
    log.close()
    assert path.with_name("requests.jsonl.1").exists()
    entries = [e["n"] for e in read_request_log(path)]
    assert entries[-1] == 9 and entries == sorted(entries) and len(entries) < 10


def test_every_namespace_gets_a_default_service_account_and_pods_need_theirs(
    admin: httpx.Client,
) -> None:
    """A real cluster's ServiceAccount controller gives every namespace a "default"
    account, and the ServiceAccount admission plugin refuses a pod whose account does not
    exist (plugin/pkg/admission/serviceaccount); so does ours."""
    _created(admin.post("/api/v1/namespaces", json={"metadata": {"name": "fresh"}}))
    assert admin.get("/api/v1/namespaces/fresh/serviceaccounts/default").status_code == 200
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    made = _created(admin.post("/api/v1/namespaces/fresh/pods", json=pod))
    assert made["spec"]["serviceAccountName"] == "default"
    pod["metadata"]["name"] = "q"
    pod["spec"]["serviceAccountName"] = "ghost"
    refused = admin.post("/api/v1/namespaces/fresh/pods", json=pod)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        'pods "q" is forbidden: error looking up service account fresh/ghost: '
        'serviceaccount "ghost" not found'
    )
