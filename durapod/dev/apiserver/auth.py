"""Who a request is from and whether it may: the stand-in's authentication, authorisation,
its review and token endpoints, and a log of every request with its decision.

Authentication tries, as kube-apiserver does, the static tokens (a token file: the admin
kubeconfig's token, in ``system:masters``), then ServiceAccount tokens (see ``tokens``);
``Impersonate-*`` headers then act as another user if RBAC allows ``impersonate``.
Authorisation is RBAC (see ``rbac``). The endpoints are TokenRequest
(``serviceaccounts/token``), TokenReview, SelfSubjectReview (``kubectl auth whoami``),
SelfSubjectAccessReview (``kubectl auth can-i``), SelfSubjectRulesReview (``can-i
--list``), SubjectAccessReview and LocalSubjectAccessReview.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from durapod.dev.apiserver import errors, rbac, tokens
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.apiserver.rbac import Attributes
from durapod.dev.apiserver.registry import ResourceType
from durapod.dev.apiserver.storage import Obj, Storage
from durapod.dev.apiserver.tokens import AUTHENTICATED, User

#: Who a request without credentials is. Like kube-apiserver's old localhost insecure
#: port (``system:unsecured``), plain HTTP without a token is the cluster admin: kubectl
#: sends no token over http:// unless its kubeconfig names one, and the stand-in only
#: listens on loopback.
INSECURE_SUPERUSER = User("system:unsecured", "", (rbac.MASTERS, AUTHENTICATED))
#: Who a request without credentials over HTTPS is (the anonymous authenticator).
ANONYMOUS = User("system:anonymous", "", ("system:unauthenticated",))
#: The resources whose POST this module answers, with the kinds they answer with.
ENDPOINTS = {
    ("", "serviceaccounts", "token"): "TokenRequest",
    ("authentication.k8s.io", "tokenreviews", None): "TokenReview",
    ("authentication.k8s.io", "selfsubjectreviews", None): "SelfSubjectReview",
    ("authorization.k8s.io", "selfsubjectaccessreviews", None): "SelfSubjectAccessReview",
    ("authorization.k8s.io", "selfsubjectrulesreviews", None): "SelfSubjectRulesReview",
    ("authorization.k8s.io", "subjectaccessreviews", None): "SubjectAccessReview",
    ("authorization.k8s.io", "localsubjectaccessreviews", None): "LocalSubjectAccessReview",
}
_RBAC_KINDS = {
    "roles": "Role",
    "clusterroles": "ClusterRole",
    "rolebindings": "RoleBinding",
    "clusterrolebindings": "ClusterRoleBinding",
}
#: What an update may change in a role or binding without an escalation check: what the
#: garbage collector touches, and what the server owns.
_GC_AND_SERVER_FIELDS = (
    "ownerReferences",
    "finalizers",
    "resourceVersion",
    "managedFields",
    "uid",
    "creationTimestamp",
    "generation",
)
#: Beyond this the request log starts again, keeping the previous file as ``.1``.
REQUEST_LOG_BYTES = 64 * 1024 * 1024


def unauthorized() -> errors.StatusError:
    return errors.StatusError(401, "Unauthorized", "Unauthorized")


def static_user(entry: Mapping[str, Any]) -> User:
    """A static token's user, from a ``Cluster.tokens`` entry (``username``, ``uid``,
    ``groups``), with ``system:authenticated`` as the server adds it to everyone."""
    groups = tuple(entry.get("groups") or ())
    if AUTHENTICATED not in groups:
        groups = (*groups, AUTHENTICATED)
    return User(str(entry.get("username", "")), str(entry.get("uid", "")), groups)


def install_default_policy(cluster: Cluster) -> None:
    """Store the default ClusterRoles and bindings a cluster starts with (kube-apiserver's
    RBAC post-start hook), those not there yet."""
    for obj in rbac.default_policy():
        rt = cluster.registry.find(rbac.GROUP, "v1", obj["kind"].lower() + "s")
        assert rt is not None
        if cluster.storage.get(rt.key, "", obj["metadata"]["name"]) is None:
            cluster.create(rt, "", obj, Options())


class RequestLog:
    """One JSON line per request: who, what, and what was decided (an audit log)."""

    def __init__(self, path: Path, limit: int = REQUEST_LOG_BYTES) -> None:
        self.path = path
        self.limit = limit
        self._file: IO[str] = path.open("a", buffering=1)
        self._size = path.stat().st_size

    def write(self, entry: Obj) -> None:
        if self._size > self.limit:
            self._file.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._file = self.path.open("a", buffering=1)
            self._size = 0
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        self._file.write(line)
        self._size += len(line)

    def close(self) -> None:
        self._file.close()


def read_request_log(path: Path) -> list[Obj]:
    """The entries of a request log, oldest first (the rotated part included)."""
    entries: list[Obj] = []
    for part in (path.with_name(path.name + ".1"), path):
        if part.exists():
            entries.extend(json.loads(line) for line in part.read_text().splitlines() if line)
    return entries


class Auth:
    """Authentication, authorisation and the token and review endpoints of one server."""

    def __init__(
        self,
        storage: Storage,
        static_tokens: Mapping[str, User],
        request_log: Path | None = None,
    ) -> None:
        self.storage = storage
        self.static_tokens = dict(static_tokens)
        #: The key ServiceAccount tokens are signed with, made anew at each start (so
        #: tokens do not outlive the stand-in, whose objects do not either).
        self.key = secrets.token_bytes(32)
        self.log = RequestLog(request_log) if request_log is not None else None

    def _lookup(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.storage.get(f"/{plural}", namespace, name)

    # -- authentication ----------------------------------------------------------------

    def review(self, token: str, audiences: Sequence[str] = ()) -> tuple[User, list[str]]:
        """The user of ``token`` and the audiences it is good for. Raises
        :class:`tokens.TokenError`: with kube's words for a token of ours that is not (or no
        longer) good, without any for a token no authenticator knows."""
        wanted = list(audiences) or list(tokens.API_AUDIENCES)
        if (user := self.static_tokens.get(token)) is not None:
            # A static token carries no audience: it is good only for the server's own.
            meeting = [a for a in wanted if a in tokens.API_AUDIENCES]
            if meeting:
                return user, meeting
            raise tokens.TokenError("")
        found = tokens.verify(self.key, token, self._lookup, wanted)
        if found is None:
            raise tokens.TokenError("")
        return found

    def authenticate(self, headers: Mapping[str, str], secure: bool = False) -> User:
        """The user of a request's bearer token; without one, ``system:anonymous`` over
        HTTPS and the admin over plain HTTP (see :data:`INSECURE_SUPERUSER`)."""
        sent = headers.get("Authorization")
        if sent is None:
            return ANONYMOUS if secure else INSECURE_SUPERUSER
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        try:
            return self.review(token.strip())[0]
        except tokens.TokenError as exc:
            raise unauthorized() from exc

    def impersonate(self, user: User, headers: Mapping[str, str], groups: list[str]) -> User:
        """The user named by ``Impersonate-User`` (and ``-Group``, ``-Uid``), once RBAC
        lets ``user`` impersonate each (the impersonation filter)."""
        name = headers.get("Impersonate-User", "")
        uid = headers.get("Impersonate-Uid", "")
        if not name:
            if groups or uid:
                raise errors.bad_request("requested impersonation without impersonating a user")
            return user
        asks: list[Attributes] = []
        as_groups = list(groups)
        if name.startswith(tokens.SA_PREFIX) and ":" in name[len(tokens.SA_PREFIX) :]:
            namespace, sa = name[len(tokens.SA_PREFIX) :].split(":", 1)
            asks.append(_impersonating(user, "", "serviceaccounts", sa, namespace))
            if not groups:
                as_groups = list(tokens.service_account_groups(namespace))
        else:
            asks.append(_impersonating(user, "", "users", name))
        asks.extend(_impersonating(user, "", "groups", g) for g in groups)
        if uid:
            asks.append(_impersonating(user, "authentication.k8s.io", "uids", uid))
        for ask in asks:
            decision = rbac.authorize(self.storage, ask)
            if not decision.allowed:
                raise rbac.forbidden(ask, decision.reason)
        if name != "system:anonymous" and not {AUTHENTICATED, "system:unauthenticated"} & set(
            as_groups
        ):
            as_groups.append(AUTHENTICATED)
        return User(name, uid, tuple(as_groups))

    # -- the whole gate ----------------------------------------------------------------

    def admit(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        impersonate_groups: list[str],
        secure: bool = False,
    ) -> User:
        """Authenticate, impersonate and authorise one request (``secure``: it came over
        HTTPS), logging the decision; raises the 401 or 403 the real server would answer."""
        entry: Obj = {"time": datetime.now(UTC).isoformat(), "method": method, "path": path}
        try:
            user = self.authenticate(headers, secure)
            user = self.impersonate(user, headers, impersonate_groups)
        except errors.StatusError as exc:
            self._write({**entry, "decision": exc.reason})
            raise
        attrs = rbac.request_attributes(user, method, path, query)
        decision = rbac.authorize(self.storage, attrs)
        self._write(
            {**entry, **attrs.record(), "decision": "allow" if decision.allowed else "forbid"}
        )
        if not decision.allowed:
            raise rbac.forbidden(attrs, decision.reason)
        return user

    def _write(self, entry: Obj) -> None:
        if self.log is not None:
            self.log.write(entry)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    # -- guarding RBAC writes ----------------------------------------------------------

    def guards(self, user: User, rt: ResourceType) -> bool:
        """Whether ``user``'s writes of ``rt`` are checked for privilege escalation."""
        return (
            rt.group == rbac.GROUP and rt.plural in _RBAC_KINDS and rbac.MASTERS not in user.groups
        )

    def check_grant(self, user: User, plural: str, namespace: str, obj: Obj) -> None:
        """Refuse (403) writing a role or binding that grants more than ``user`` holds.
        Only changes to what the garbage collector touches are let through unchecked."""
        meta = {**(obj.get("metadata") or {}), "namespace": namespace}
        new = {**obj, "metadata": meta}
        current = self.storage.get(f"{rbac.GROUP}/{plural}", namespace, meta.get("name", ""))
        if current is not None and _without_gc_fields(current) == _without_gc_fields(new):
            return
        rbac.check_escalation(self.storage, user, _RBAC_KINDS[plural], new)

    # -- the endpoints -----------------------------------------------------------------

    def serves(self, group: str, plural: str, subresource: str | None) -> bool:
        return (group, plural, subresource) in ENDPOINTS

    def answer(
        self,
        user: User,
        group: str,
        plural: str,
        namespace: str,
        name: str | None,
        body: Obj,
    ) -> Obj:
        """The created object a POST to one of :data:`ENDPOINTS` answers (201)."""
        subresource = "token" if plural == "serviceaccounts" else None
        kind = ENDPOINTS[(group, plural, subresource)]
        spec = body.get("spec") or {}
        if kind == "TokenRequest":
            status, spec = self.token_request(namespace, name or "", spec)
        elif kind == "TokenReview":
            status = self.token_review(spec)
        elif kind == "SelfSubjectReview":
            status = {"userInfo": user.info()}
        elif kind == "SelfSubjectRulesReview":
            status = rbac.rules_review(self.storage, user, spec.get("namespace", ""))
        else:
            status = self.access_review(kind, user, namespace, spec)
        meta = dict(body.get("metadata") or {})
        meta.setdefault("creationTimestamp", None)
        if kind in ("TokenRequest", "LocalSubjectAccessReview"):
            meta["namespace"] = namespace
        if kind == "TokenRequest":
            meta["name"] = name
        answer = {
            "kind": kind,
            "apiVersion": f"{group or 'authentication.k8s.io'}/v1",
            "metadata": meta,
            "spec": spec,
            "status": status,
        }
        if kind == "SelfSubjectReview":
            del answer["spec"]  # it has none: who asks is the question
        return answer

    def mint(
        self,
        namespace: str,
        service_account: str,
        audiences: Sequence[str] = tokens.API_AUDIENCES,
        seconds: int = tokens.DEFAULT_EXPIRATION_SECONDS,
        pod: str | None = None,
    ) -> tuple[str, int]:
        """A token for a stored ServiceAccount, bound to a stored pod when named, and
        its expiry (epoch seconds): what a TokenRequest or a projected volume gets."""
        sa = self._lookup("serviceaccounts", namespace, service_account)
        if sa is None:
            raise errors.not_found("serviceaccounts", "", service_account)
        bound = None
        if pod is not None:
            bound = self._lookup("pods", namespace, pod)
            if bound is None:
                raise errors.not_found("pods", "", pod)
        return tokens.mint(self.key, sa, audiences, seconds, bound)

    def token_request(self, namespace: str, name: str, spec: Obj) -> tuple[Obj, Obj]:
        """A TokenRequest's status and defaulted spec (``serviceaccount/storage/token.go``)."""
        spec = {
            **spec,
            "audiences": list(spec.get("audiences") or tokens.API_AUDIENCES),
            "expirationSeconds": int(
                spec.get("expirationSeconds") or tokens.DEFAULT_EXPIRATION_SECONDS
            ),
        }
        seconds = spec["expirationSeconds"]
        if seconds < tokens.MIN_EXPIRATION_SECONDS or seconds > tokens.MAX_EXPIRATION_SECONDS:
            text = "less than 10 minutes" if seconds < 600 else "larger than 2^32 seconds"
            cause = {
                "reason": "FieldValueInvalid",
                "field": "spec.expirationSeconds",
                "message": f"Invalid value: {seconds}: may not specify a duration {text}",
            }
            raise errors.invalid("TokenRequest", "authentication.k8s.io", name, [cause])
        if self._lookup("serviceaccounts", namespace, name) is None:
            raise errors.not_found("serviceaccounts", "", name)
        pod_name = None
        if (ref := spec.get("boundObjectRef")) is not None:
            pod_name = self._bound_pod(namespace, name, ref)
        token, expiry = self.mint(namespace, name, spec["audiences"], seconds, pod_name)
        stamp = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "expirationTimestamp": stamp}, spec

    def _bound_pod(self, namespace: str, name: str, ref: Obj) -> str:
        kind, api_version = ref.get("kind", ""), ref.get("apiVersion", "v1")
        if (kind, api_version) != ("Pod", "v1"):
            group = api_version.rpartition("/")[0]
            version = api_version.rpartition("/")[2]
            # Secrets and Nodes can be bound on a cluster; nothing here needs them.
            raise errors.bad_request(
                f"cannot bind token to object of type {group}/{version}, Kind={kind}"
            )
        pod = self._lookup("pods", namespace, ref.get("name", ""))
        if pod is None:
            raise errors.not_found("pods", "", ref.get("name", ""))
        if ((pod.get("spec") or {}).get("serviceAccountName") or "default") != name:
            raise errors.bad_request(
                f'cannot bind token for serviceaccount "{name}" to pod running with '
                "different serviceaccount name."
            )
        if ref.get("uid") and ref["uid"] != pod["metadata"]["uid"]:
            raise errors.StatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on Pod "{ref["name"]}": the UID in the bound '
                f"object reference ({ref['uid']}) does not match the UID in record. The "
                "object might have been deleted and then recreated",
                {"name": ref["name"], "kind": "Pod"},
            )
        return str(ref["name"])

    def token_review(self, spec: Obj) -> Obj:
        try:
            user, audiences = self.review(spec.get("token", ""), spec.get("audiences") or ())
        except tokens.TokenError as exc:
            status: Obj = {"authenticated": False, "user": {}}
            if str(exc):
                # The request authenticators' union, as a real server words it.
                status["error"] = f"[invalid bearer token, {exc}]"
            return status
        return {"authenticated": True, "user": user.info(), "audiences": audiences}

    def access_review(self, kind: str, user: User, namespace: str, spec: Obj) -> Obj:
        """A (Self|Local)SubjectAccessReview's status: may the subject do that?"""
        has_resource = spec.get("resourceAttributes") is not None
        if has_resource == (spec.get("nonResourceAttributes") is not None):
            text = (
                "cannot be specified in combination with resourceAttributes"
                if has_resource
                else "exactly one of nonResourceAttributes or resourceAttributes must be specified"
            )
            field = "nonResourceAttributes" if has_resource else "resourceAttributes"
            cause = {
                "reason": "FieldValueInvalid",
                "field": f"spec.{field}",
                "message": f"Invalid value: null: {text}",
            }
            raise errors.invalid(kind, "authorization.k8s.io", "", [cause])
        subject = user
        if kind != "SelfSubjectAccessReview":
            if not spec.get("user") and not spec.get("groups"):
                cause = {
                    "reason": "FieldValueInvalid",
                    "field": "spec.user",
                    "message": 'Invalid value: "": at least one of user or group must be specified',
                }
                raise errors.invalid(kind, "authorization.k8s.io", "", [cause])
            # Exactly the user described: no group is added.
            subject = User(
                spec.get("user", ""),
                spec.get("uid", ""),
                tuple(spec.get("groups") or ()),
                dict(spec.get("extra") or {}),
            )
        local = None
        if kind == "LocalSubjectAccessReview":
            asked = (spec.get("resourceAttributes") or {}).get("namespace", "")
            if asked not in ("", namespace):
                cause = {
                    "reason": "FieldValueInvalid",
                    "field": "spec.resourceAttributes.namespace",
                    "message": f'Invalid value: "{asked}": must match metadata.namespace',
                }
                raise errors.invalid(kind, "authorization.k8s.io", "", [cause])
            local = namespace
        decision = rbac.authorize(self.storage, rbac.subject_attributes(subject, spec, local))
        status: Obj = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return status


def _impersonating(
    user: User, group: str, resource: str, name: str, namespace: str = ""
) -> Attributes:
    return Attributes(user, "impersonate", True, "", group, "v1", resource, "", namespace, name)


def _without_gc_fields(obj: Obj) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _GC_AND_SERVER_FIELDS}
    return {**obj, "metadata": meta}
