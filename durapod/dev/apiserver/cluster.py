"""The API server's semantics over the object store, independent of HTTP.

Create, update, patch, delete and their subresources behave as kube-apiserver's do for
what kopf, kubectl and the durapod operator use: server-owned metadata, optimistic
concurrency, the status subresource, finalizers, graceful pod deletion, owner-reference
garbage collection, CRD registration and custom-resource schema admission.
"""

from __future__ import annotations

import base64
import copy
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from durapod.dev.apiserver import errors, metadata, patching, schema
from durapod.dev.apiserver.registry import Registry, ResourceType
from durapod.dev.apiserver.storage import Obj, Storage

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_OWNED = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteResult:
    obj: Obj
    warnings: list[str] = field(default_factory=list)
    created: bool = False


@dataclass
class Options:
    """Query parameters that shape a write."""

    field_validation: str = "Warn"
    dry_run: bool = False


class Cluster:
    """One in-memory cluster: its resource types and its objects."""

    def __init__(self, tokens: dict[str, dict[str, Any]] | None = None) -> None:
        self.registry = Registry()
        self.storage = Storage()
        #: Bearer tokens TokenReview accepts, each with the user it stands for.
        self.tokens: dict[str, dict[str, Any]] = dict(tokens or {})
        for name in ("default", "kube-system"):
            self._store_new(
                self._type("", "namespaces"),
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )

    # -- reads -------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.storage.get(rt.key, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    def objects(self, rt: ResourceType, namespace: str | None) -> list[Obj]:
        return self.storage.objects(rt.key, namespace)

    # -- create ------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Obj, opts: Options) -> WriteResult:
        self._check_kind(rt, body)
        meta = body.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request"
                )
            meta["namespace"] = namespace
            if self.storage.get("/namespaces", "", namespace) is None:
                raise errors.not_found("namespaces", "", namespace)
        else:
            meta.pop("namespace", None)
        if rt.plural == "tokenreviews":
            return WriteResult(self._review_token(body), created=True)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        {
                            "reason": "FieldValueRequired",
                            "field": "metadata.name",
                            "message": "Required value: name or generateName is required",
                        }
                    ],
                )
            meta["name"] = meta["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
        self._check_name(rt, meta["name"])
        if self.storage.get(rt.key, meta.get("namespace", ""), meta["name"]) is not None:
            raise errors.already_exists(rt.plural, rt.group, meta["name"])
        for key in _SERVER_OWNED:
            meta.pop(key, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if "status" in rt.subresources:
            body.pop("status", None)
        if rt.plural == "pods":
            self._check_quota(namespace, body)
            body["status"] = {"phase": "Pending", "qosClass": "Burstable"}
            body.setdefault("spec", {}).setdefault("terminationGracePeriodSeconds", 30)
        elif rt.plural == "namespaces":
            body["status"] = {"phase": "Active"}
        body, warnings = self._admit(rt, body, opts)
        if opts.dry_run:
            return WriteResult(body, warnings, created=True)
        return WriteResult(self._store_new(rt, body), warnings, created=True)

    def _store_new(self, rt: ResourceType, body: Obj) -> Obj:
        body.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
        body["metadata"].setdefault("creationTimestamp", now())
        body["metadata"].setdefault("generation", 1)
        stored = self.storage.write(rt.key, body, "ADDED")
        if rt.plural == "customresourcedefinitions":
            stored = self._establish(rt, stored)
        return stored

    def _establish(self, rt: ResourceType, crd: Obj) -> Obj:
        """Register the CRD's resources and report it Established, as the server does."""
        self.registry.add_crd(crd)
        updated = copy.deepcopy(crd)
        updated["status"] = {
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": now(),
                }
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        return self.storage.write(rt.key, updated, "MODIFIED")

    # -- update and patch --------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        subresource: str | None,
        opts: Options,
    ) -> WriteResult:
        self._check_kind(rt, body)
        current = self.get(rt, namespace, name)
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        body_name = body.get("metadata", {}).get("name")
        if body_name not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        return self._replace(rt, current, body, subresource, opts)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        subresource: str | None,
        opts: Options,
    ) -> WriteResult:
        if rt.custom and content_type not in patching.CR_PATCH_TYPES:
            raise errors.StatusError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        current = self.storage.get(rt.key, namespace, name)
        if current is None:
            if content_type != patching.APPLY:
                raise errors.not_found(rt.plural, rt.group, name)
            body = patching.apply_patch(content_type, {}, raw)
            body.setdefault("metadata", {})["name"] = name
            return self.create(rt, namespace, body, opts)
        patched = patching.apply_patch(content_type, copy.deepcopy(current), raw)
        sent_rv = patched.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        return self._replace(rt, current, patched, subresource, opts)

    def _replace(
        self, rt: ResourceType, current: Obj, body: Obj, subresource: str | None, opts: Options
    ) -> WriteResult:
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = body.get("status")
        else:
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
            meta = new.setdefault("metadata", {})
            for key in _SERVER_OWNED:
                meta.pop(key, None)
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            meta["name"] = current["metadata"]["name"]
            if "namespace" in current["metadata"]:
                meta["namespace"] = current["metadata"]["namespace"]
            if "status" in rt.subresources:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = current["status"]
            _forbid_new_finalizers(rt, current, meta)
        new, warnings = self._admit(rt, new, opts)
        if new.get("status") is None:
            new.pop("status", None)
        if _content(new) != _content(current):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        unchanged = {**new, "metadata": {**new["metadata"], "resourceVersion": ""}} == {
            **current,
            "metadata": {**current["metadata"], "resourceVersion": ""},
        }
        if opts.dry_run or unchanged:
            return WriteResult(new if opts.dry_run else current, warnings)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return WriteResult(self._remove(rt, new), warnings)
        stored = self.storage.write(rt.key, new, "MODIFIED")
        if rt.plural == "customresourcedefinitions" and subresource != "status":
            stored = self._establish(rt, stored)
        return WriteResult(stored, warnings)

    # -- delete ------------------------------------------------------------------------

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: dict[str, Any] | None
    ) -> Obj:
        options = options or {}
        current = self.get(rt, namespace, name)
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != current["metadata"]["uid"]) or (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(rt.plural, rt.group, name)
        meta = current["metadata"]
        grace = self._grace(rt, current, options)
        if meta.get("finalizers") or grace > 0:
            if meta.get("deletionTimestamp"):
                return current
            marked = copy.deepcopy(current)
            marked["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
            return self.storage.write(rt.key, marked, "MODIFIED")
        return self._remove(rt, current, options.get("propagationPolicy", "Background"))

    def _grace(self, rt: ResourceType, obj: Obj, options: dict[str, Any]) -> int:
        """Seconds a pod gets to stop; other kinds and pods no kubelet runs go at once."""
        if rt.plural != "pods":
            return 0
        phase = obj.get("status", {}).get("phase")
        if not obj.get("spec", {}).get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
        return max(int(grace), 0)

    def _remove(self, rt: ResourceType, obj: Obj, propagation: str = "Background") -> Obj:
        gone = self.storage.remove(rt.key, obj)
        if rt.plural == "customresourcedefinitions":
            self.registry.remove_crd(obj["metadata"]["name"])
        if rt.plural == "namespaces":
            self._delete_namespace_content(obj["metadata"]["name"])
        self._collect_dependents(obj, propagation)
        return gone

    def _collect_dependents(self, owner: Obj, propagation: str) -> None:
        """Owner-reference garbage collection of what the removed object owned."""
        uid = owner["metadata"]["uid"]
        for key in self.storage.all_keys():
            types = self.registry.by_key(key)
            if not types:
                continue
            for obj in self.storage.objects(key):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == uid for ref in refs):
                    continue
                if propagation == "Orphan":
                    kept = copy.deepcopy(obj)
                    kept["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self.storage.write(key, kept, "MODIFIED")
                else:
                    meta = obj["metadata"]
                    self.delete(types[0], meta.get("namespace", ""), meta["name"], {})

    def _delete_namespace_content(self, namespace: str) -> None:
        for key in self.storage.all_keys():
            types = self.registry.by_key(key)
            for obj in self.storage.objects(key, namespace):
                if types and types[0].namespaced:
                    self._remove(types[0], obj)

    # -- pods --------------------------------------------------------------------------

    def bind(self, namespace: str, name: str, node: str) -> Obj:
        rt = self._type("", "pods")
        pod = copy.deepcopy(self.get(rt, namespace, name))
        if pod["spec"].get("nodeName"):
            raise errors.conflict("pods", "", name)
        pod["spec"]["nodeName"] = node
        return self.storage.write(rt.key, pod, "MODIFIED")

    def evict(self, namespace: str, name: str, options: dict[str, Any]) -> None:
        """The Eviction API: mark the pod as a disruption target, then delete it gracefully."""
        rt = self._type("", "pods")
        pod = copy.deepcopy(self.get(rt, namespace, name))
        if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            conditions = [
                c
                for c in pod["status"].get("conditions", [])
                if c.get("type") != "DisruptionTarget"
            ]
            conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting",
                    "lastTransitionTime": now(),
                    "lastProbeTime": None,
                }
            )
            pod["status"]["conditions"] = conditions
            self.storage.write(rt.key, pod, "MODIFIED")
        self.delete(rt, namespace, name, options)

    def _check_quota(self, namespace: str, pod: Obj) -> None:
        """ResourceQuota admission: count/pods, requests.cpu and requests.memory."""
        live = [
            p
            for p in self.storage.objects("/pods", namespace)
            if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        for quota in self.storage.objects("/resourcequotas", namespace):
            hard = (quota.get("spec") or {}).get("hard") or {}
            exceeded, requested, used, limited = [], [], [], []
            for key, limit in hard.items():
                measure = _QUOTA_MEASURES.get(key)
                if measure is None:
                    continue
                want, have = measure(pod), sum(measure(p) for p in live)
                if have + want > _quantity(limit):
                    exceeded.append(key)
                    requested.append(f"{key}={_shown(want)}")
                    used.append(f"{key}={_shown(have)}")
                    limited.append(f"{key}={limit}")
            if exceeded:
                name = pod["metadata"].get("name", "")
                raise errors.StatusError(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, '
                    f"requested: {','.join(requested)}, used: {','.join(used)}, "
                    f"limited: {','.join(limited)}",
                    {"name": name, "kind": "pods"},
                )

    # -- helpers -----------------------------------------------------------------------

    def _type(self, group: str, plural: str) -> ResourceType:
        rt = self.registry.find(group, "v1", plural)
        assert rt is not None
        return rt

    def _check_kind(self, rt: ResourceType, body: Obj) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind not in (None, rt.kind) or api_version not in (None, rt.api_version):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version}) or the kind ({kind}) does not match {rt.kind}"
            )
        body["kind"], body["apiVersion"] = rt.kind, rt.api_version

    def _check_name(self, rt: ResourceType, name: str) -> None:
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                        "consist of lower case alphanumeric characters, '-' or '.', and "
                        "must start and end with an alphanumeric character",
                    }
                ],
            )

    def _admit(self, rt: ResourceType, body: Obj, opts: Options) -> tuple[Obj, list[str]]:
        meta = body.get("metadata") or {}
        if causes := metadata.problems(meta):
            raise errors.invalid(rt.kind, rt.group, meta.get("name", ""), causes)
        if rt.plural == "secrets" and body.get("stringData"):
            # stringData is write-only: the server merges it into data, base64-encoded.
            data = body.setdefault("data", {})
            for key, value in body.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if rt.schema is None:
            return body, []
        admitted, outcome = schema.admit(body, rt.schema)
        name = body.get("metadata", {}).get("name", "")
        if outcome.unknown_fields and opts.field_validation == "Strict":
            detail = ", ".join(f'unknown field "{f}"' for f in outcome.unknown_fields)
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled '
                f"as a {rt.kind}: strict decoding error: {detail}"
            )
        if outcome.causes:
            raise errors.invalid(rt.kind, rt.group, name, outcome.causes)
        warnings = []
        if opts.field_validation == "Warn":
            warnings = [f'unknown field "{f}"' for f in outcome.unknown_fields]
        return admitted, warnings

    def _review_token(self, review: Obj) -> Obj:
        token = (review.get("spec") or {}).get("token", "")
        user = self.tokens.get(token)
        review["status"] = (
            {
                "authenticated": True,
                "user": user,
                "audiences": review["spec"].get("audiences") or [],
            }
            if user
            else {"authenticated": False, "error": "invalid bearer token"}
        )
        return review


def _forbid_new_finalizers(rt: ResourceType, current: Obj, meta: Obj) -> None:
    """An object being deleted may lose finalizers, never gain them."""
    if not current["metadata"].get("deletionTimestamp"):
        return
    if set(meta.get("finalizers") or []) - set(current["metadata"].get("finalizers") or []):
        message = "Forbidden: no new finalizers can be added if the object is being deleted"
        cause = {
            "reason": "FieldValueForbidden",
            "field": "metadata.finalizers",
            "message": message,
        }
        raise errors.invalid(rt.kind, rt.group, meta["name"], [cause])


_SUFFIXES = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _quantity(text: Any) -> float:
    """A Kubernetes quantity ("500m", "256Mi", "3") as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not match or match.group(2) not in ("", *_SUFFIXES):
        raise errors.bad_request(f"quantities must match the regular expression: {text!r}")
    return float(match.group(1)) * _SUFFIXES.get(match.group(2), 1.0)


def _shown(value: float) -> str:
    return f"{value:g}"


def _requests(resource: str) -> Any:
    def total(pod: Obj) -> float:
        return sum(
            _quantity(((c.get("resources") or {}).get("requests") or {}).get(resource, 0))
            for c in (pod.get("spec") or {}).get("containers") or []
        )

    return total


_QUOTA_MEASURES = {
    "pods": lambda pod: 1.0,
    "count/pods": lambda pod: 1.0,
    "requests.cpu": _requests("cpu"),
    "cpu": _requests("cpu"),
    "requests.memory": _requests("memory"),
    "memory": _requests("memory"),
}


def _content(obj: Obj) -> Obj:
    """What counts as a change for ``metadata.generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
