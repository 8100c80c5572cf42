"""The API server's semantics over the object store, independent of HTTP.

Create, update, patch, delete and their subresources behave as kube-apiserver's do for
what kopf, kubectl and the durapod operator use: server-owned metadata, optimistic
concurrency, the status subresource, finalizers, graceful pod deletion, owner-reference
garbage collection, CRD registration and custom-resource schema admission.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from durapod.dev.apiserver import (
    admission,
    builtins,
    decoding,
    deletion,
    errors,
    managed,
    metadata,
    patching,
    pods,
    scale,
    schema,
    serviceaccounts,
    tls,
)
from durapod.dev.apiserver.registry import Registry, ResourceType
from durapod.dev.apiserver.storage import EVENT_TTL_SECONDS, Obj, Storage

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CRDS = "apiextensions.k8s.io/customresourcedefinitions"
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
    #: ``fieldManager``: who owns what this write sets (required for apply).
    field_manager: str = ""
    #: ``force`` (apply only): take over fields other managers own; None when not sent.
    force: bool | None = None
    #: The client's User-Agent, whose first part names the manager when none is given.
    user_agent: str = ""


class Cluster:
    """One in-memory cluster: its resource types and its objects."""

    def __init__(
        self,
        tokens: dict[str, dict[str, Any]] | None = None,
        event_ttl: float = EVENT_TTL_SECONDS,
    ) -> None:
        self.registry = Registry()
        #: ``event_ttl``: seconds an Event lives after its last write (``--event-ttl``).
        self.storage = Storage(event_ttl=event_ttl)
        #: Owners (by uid) and namespaces whose deletion is being carried out right now:
        #: removals it causes do not start it again.
        self._collecting: set[str] = set()
        self._terminating: set[str] = set()
        #: CRDs whose custom resources are being deleted right now (likewise).
        self._cleaning: set[str] = set()
        #: Static bearer tokens (a token file), each with the user it stands for; the
        #: server authenticates them (see ``auth``).
        self.tokens: dict[str, dict[str, Any]] = dict(tokens or {})
        #: The cluster's CA: it signs the API server's serving certificate, and every
        #: namespace has it as the ``kube-root-ca.crt`` ConfigMap.
        self.authority = tls.Authority()
        for name in ("default", "kube-system"):
            self._store_new(
                self._type("", "namespaces"),
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    # SetDefaults_Namespace labels every namespace with its name.
                    "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
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

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Obj,
        opts: Options,
        applied: list[Obj] | None = None,
    ) -> WriteResult:
        managed.check_options("CreateOptions", opts.field_manager, False, None)
        self._check_kind(rt, body)
        meta = body.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request"
                )
            meta["namespace"] = namespace
            space = self.storage.get("/namespaces", "", namespace)
            if space is None:
                raise errors.not_found("namespaces", "", namespace)
            if (space.get("status") or {}).get("phase") == deletion.TERMINATING:
                name = meta.get("name") or ""
                raise deletion.terminating(rt.plural, rt.group, name, namespace)
        else:
            meta.pop("namespace", None)
        if rt.custom:
            crd = self.storage.get(_CRDS, "", f"{rt.plural}.{rt.group}")
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                raise deletion.crd_terminating_create(rt.plural, rt.group)
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
            self._check_service_account(namespace, body)
            self._check_quota(namespace, body)
            body["status"] = {"phase": "Pending", "qosClass": pods.qos_class(body)}
            body.setdefault("spec", {}).setdefault("terminationGracePeriodSeconds", 30)
        elif rt.plural == "namespaces":
            body["status"] = {"phase": "Active"}
            # Every namespace carries the finalizer the namespace controller clears.
            spec = body.setdefault("spec", {})
            if deletion.KUBERNETES not in (spec.get("finalizers") or []):
                spec["finalizers"] = [*(spec.get("finalizers") or []), deletion.KUBERNETES]
        body, warnings = self._admit(rt, body, opts)
        self._record(rt, None, body, None, opts, applied)
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
        elif rt.plural == "namespaces":
            # The ServiceAccount controller's work: every namespace has a "default" one.
            account: Obj = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": stored["metadata"]["name"]},
            }
            self._store_new(self._type("", "serviceaccounts"), account)
            self._publish_root_ca(stored["metadata"]["name"])
        return stored

    def _publish_root_ca(self, namespace: str) -> None:
        """The root-CA publisher: ``kube-root-ca.crt`` in the namespace."""
        ca = serviceaccounts.root_ca_configmap(namespace, self.authority.cert_pem)
        self._store_new(self._type("", "configmaps"), ca)

    def _check_service_account(self, namespace: str, pod: Obj) -> None:
        """The ServiceAccount admission plugin: a pod runs as an account that exists, and
        gets its token mounted unless either says not to (see ``serviceaccounts``)."""
        spec = pod.setdefault("spec", {})
        account = spec.get("serviceAccountName") or "default"
        spec["serviceAccountName"] = account
        found = self.storage.get("/serviceaccounts", namespace, account)
        if found is None:
            name = pod["metadata"].get("name", "")
            raise errors.StatusError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: error looking up service account '
                f'{namespace}/{account}: serviceaccount "{account}" not found',
                {"name": name, "kind": "pods"},
            )
        if serviceaccounts.should_automount(found, pod):
            serviceaccounts.mount_token(pod)

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
        managed.check_options("UpdateOptions", opts.field_manager, False, None)
        self._check_kind(rt, body)
        current = self.get(rt, namespace, name)
        body_name = body.get("metadata", {}).get("name")
        if body_name not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if not sent_rv and not _unconditional_update(rt):
            # The generic registry's check for kinds whose strategy refuses blind writes.
            cause = {
                "reason": "FieldValueInvalid",
                "field": "metadata.resourceVersion",
                "message": "Invalid value: 0: must be specified for an update",
            }
            raise errors.invalid(rt.plural, rt.group, name, [cause])
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
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
        apply = content_type == patching.APPLY
        managed.check_options("PatchOptions", opts.field_manager, apply, opts.force)
        if apply:
            return self._apply(rt, namespace, name, raw, subresource, opts)
        current = self.storage.get(rt.key, namespace, name)
        if current is None:
            raise errors.not_found(rt.plural, rt.group, name)
        schema = None if rt.custom else builtins.definition(rt.group, rt.version, rt.kind)
        patched = patching.apply_patch(content_type, copy.deepcopy(current), raw, schema)
        sent_rv = patched.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        try:
            return self._replace(rt, current, patched, subresource, opts)
        except decoding.DecodeError as exc:
            # A patched built-in that does not decode is the patch's fault: 422 on "patch".
            strategic = content_type == patching.STRATEGIC
            raise decoding.patch_error(exc, strategic, patched, raw) from None

    def _apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        raw: bytes,
        subresource: str | None,
        opts: Options,
    ) -> WriteResult:
        """Server-side apply: the configuration merged by field ownership (see ``managed``);
        a missing object is created, except through a subresource."""
        config = managed.configuration(raw)
        current = self.storage.get(rt.key, namespace, name)
        if current is None and subresource is not None:
            raise errors.not_found(rt.plural, rt.group, name)
        write = managed.writing(rt, subresource, now())
        try:
            merged, entries = managed.applied(
                current, config, opts.field_manager, bool(opts.force), write
            )
        except managed.Conflicts as exc:
            raise exc.status() from None
        merged = copy.deepcopy(merged)
        merged_name = merged.setdefault("metadata", {}).get("name", "")
        if merged_name != name:
            raise errors.bad_request(
                f"the name of the object ({merged_name}) does not match the name on the URL "
                f"({name})"
            )
        if current is None:
            return self.create(rt, namespace, merged, opts, entries or [])
        sent_rv = (config.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        return self._replace(rt, current, merged, subresource, opts, entries or [])

    def _replace(
        self,
        rt: ResourceType,
        current: Obj,
        body: Obj,
        subresource: str | None,
        opts: Options,
        applied: list[Obj] | None = None,
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
        new, warnings = self._admit(rt, new, opts, current, subresource)
        if new.get("status") is None:
            new.pop("status", None)
        self._record(rt, current, new, subresource, opts, applied)
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

    def _record(
        self,
        rt: ResourceType,
        current: Obj | None,
        new: Obj,
        subresource: str | None,
        opts: Options,
        applied: list[Obj] | None,
    ) -> None:
        """Keep ``metadata.managedFields``: an apply's entries as computed, or those of an
        update by the request's manager (see ``managed.updated``)."""
        if applied is None:
            manager = managed.manager_name(opts.field_manager, opts.user_agent)
            write = managed.writing(rt, subresource, now())
            applied = managed.updated(current, new, manager, write) or []
        if applied:
            new["metadata"]["managedFields"] = applied
        else:
            new["metadata"].pop("managedFields", None)

    # -- delete ------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: dict[str, Any] | None,
        dry_run: bool = False,
    ) -> Obj:
        """DELETE: at once, or (finalizers, a pod's grace period, foreground propagation,
        a namespace) marked with a deletionTimestamp until what holds it is done. With
        ``dry_run`` nothing changes and the answer is what would have been."""
        options = options or {}
        current = self.get(rt, namespace, name)
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != current["metadata"]["uid"]) or (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(rt.plural, rt.group, name)
        if rt.plural == "namespaces":
            return self._delete_namespace(rt, current, dry_run)
        if rt.key == _CRDS and not current["metadata"].get("deletionTimestamp"):
            return self._delete_crd(rt, current, dry_run)
        meta = current["metadata"]
        policy = deletion.propagation(options)
        grace = self._grace(rt, current, options)
        if dry_run:
            if meta.get("finalizers") or grace > 0 or policy == "Foreground":
                hold = deletion.FOREGROUND if policy == "Foreground" else None
                return deletion.marked(current, now(), grace, hold)
            return current
        if policy == "Orphan":
            # The garbage collector orphans the dependents at once, whatever else holds
            # the owner (its "orphan" finalizer is gone as soon as it is added).
            self._collect_dependents(current, "Orphan")
            current = self.get(rt, namespace, name)
        if policy == "Foreground" and not meta.get("deletionTimestamp"):
            stored = self.storage.write(
                rt.key, deletion.marked(current, now(), grace, deletion.FOREGROUND), "MODIFIED"
            )
            self._foreground_step(rt, stored)
            return stored
        if meta.get("finalizers") or grace > 0:
            shorter = grace < (meta.get("deletionGracePeriodSeconds") or 0)
            if meta.get("deletionTimestamp") and not shorter:
                return current
            # Marked, or (a kubelet's final delete of a pod still held) its grace shortened.
            return self.storage.write(rt.key, deletion.marked(current, now(), grace), "MODIFIED")
        return self._remove(rt, current, policy)

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
        meta = obj["metadata"]
        if rt.plural == "namespaces" and (obj.get("spec") or {}).get("finalizers"):
            # A namespace goes only once the namespace controller has emptied it.
            if obj != self.storage.get(rt.key, "", meta["name"]):
                self.storage.write(rt.key, obj, "MODIFIED")
            self._namespace_progress(meta["name"])
            return self.storage.get(rt.key, "", meta["name"]) or obj
        if self.storage.get(rt.key, meta.get("namespace", ""), meta["name"]) is None:
            return obj  # already gone (reached twice by one cascade)
        gone = self.storage.remove(rt.key, obj)
        if rt.plural == "customresourcedefinitions":
            self.registry.remove_crd(meta["name"])
        self._collect_dependents(obj, propagation)
        self._after_removal(rt, gone)
        return gone

    def _collect_dependents(self, owner: Obj, propagation: str) -> None:
        """Owner-reference garbage collection of what the owner owned: orphaned (the
        reference dropped) or deleted, each in the foreground if it owns things itself
        and its owner went in the foreground (as the garbage collector does)."""
        uid = owner["metadata"]["uid"]
        for dep_rt, dependent in self._dependents(uid):
            meta = dependent["metadata"]
            if propagation == "Orphan":
                kept = copy.deepcopy(dependent)
                refs = meta.get("ownerReferences") or []
                kept["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                if not kept["metadata"]["ownerReferences"]:
                    del kept["metadata"]["ownerReferences"]
                self.storage.write(dep_rt.key, kept, "MODIFIED")
                continue
            if meta.get("deletionTimestamp"):
                continue
            cascade = "Background"
            if propagation == "Foreground" and self._dependents(meta["uid"]):
                cascade = "Foreground"
            with contextlib.suppress(errors.StatusError):  # gone meanwhile
                self.delete(
                    dep_rt, meta.get("namespace", ""), meta["name"], {"propagationPolicy": cascade}
                )

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found = []
        for key in self.storage.all_keys():
            types = self.registry.by_key(key)
            if not types:
                continue
            for obj in self.storage.objects(key):
                if deletion.reference_to(obj, uid) is not None:
                    found.append((types[0], obj))
        return found

    def _foreground_step(self, rt: ResourceType, owner: Obj) -> None:
        """The garbage collector's turn for an owner deleted in the foreground: its
        dependents are deleted; once none with ``blockOwnerDeletion`` is left, its
        ``foregroundDeletion`` finalizer goes (and with the last finalizer, the owner)."""
        meta = owner["metadata"]
        uid = meta["uid"]
        if uid in self._collecting:
            return  # a removal this step caused; the step itself looks again below
        self._collecting.add(uid)
        try:
            self._collect_dependents(owner, "Foreground")
        finally:
            self._collecting.discard(uid)
        blocked = any(
            (deletion.reference_to(dependent, uid) or {}).get("blockOwnerDeletion")
            for _, dependent in self._dependents(uid)
        )
        current = self.storage.get(rt.key, meta.get("namespace", ""), meta["name"])
        if blocked or current is None or current["metadata"]["uid"] != uid:
            return
        if deletion.FOREGROUND not in (current["metadata"].get("finalizers") or []):
            return
        released = deletion.without_finalizer(current, deletion.FOREGROUND)
        if released["metadata"].get("finalizers") or released["metadata"].get(
            "deletionGracePeriodSeconds"
        ):
            # Other finalizers, or a pod's grace period (its kubelet ends it), still hold.
            self.storage.write(rt.key, released, "MODIFIED")
        else:
            self._remove(rt, released, "Background")

    def _owner_type(self, ref: Obj) -> ResourceType | None:
        group, _, version = str(ref.get("apiVersion", "")).rpartition("/")
        for rt in self.registry.in_group_version(group, version):
            if rt.kind == ref.get("kind"):
                return rt
        return None

    def _after_removal(self, rt: ResourceType, gone: Obj) -> None:
        """What a removal lets go on: owners waiting in the foreground for it, and the
        Terminating namespace it was in."""
        meta = gone["metadata"]
        for ref in meta.get("ownerReferences") or []:
            owner_rt = self._owner_type(ref)
            if owner_rt is None:
                continue
            place = meta.get("namespace", "") if owner_rt.namespaced else ""
            owner = self.storage.get(owner_rt.key, place, str(ref.get("name", "")))
            if (
                owner is not None
                and owner["metadata"].get("uid") == ref.get("uid")
                and owner["metadata"].get("deletionTimestamp")
                and deletion.FOREGROUND in (owner["metadata"].get("finalizers") or [])
            ):
                self._foreground_step(owner_rt, owner)
        namespace = meta.get("namespace")
        if rt.namespaced and namespace:
            space = self.storage.get("/namespaces", "", namespace)
            if space is not None and space["metadata"].get("deletionTimestamp"):
                self._namespace_progress(namespace)
            elif (rt.key, meta["name"]) == ("/configmaps", serviceaccounts.ROOT_CA_CONFIGMAP):
                self._publish_root_ca(namespace)  # the publisher puts it back
        if rt.custom:
            self._crd_progress(f"{rt.plural}.{rt.group}")

    # -- custom resource definitions ---------------------------------------------------

    def _delete_crd(self, rt: ResourceType, current: Obj, dry_run: bool) -> Obj:
        """The CRD registry's delete: the CRD is marked Terminating and held by the
        cleanup finalizer; its finalizer controller deletes every custom resource as its
        own DELETE would (so their finalizers hold it) and lets the CRD go once none is
        left."""
        marked = deletion.marked(current, now(), None, deletion.CRD_CLEANUP)
        marked = deletion.crd_terminating(marked, deletion.CRD_PENDING, now())
        if dry_run:
            return marked
        name = current["metadata"]["name"]
        stored = self.storage.write(rt.key, marked, "MODIFIED")
        stored = self.storage.write(
            rt.key, deletion.crd_terminating(stored, deletion.CRD_IN_PROGRESS, now()), "MODIFIED"
        )
        key = f"{current['spec']['group']}/{current['spec']['names']['plural']}"
        types = self.registry.by_key(key)
        self._cleaning.add(name)
        try:
            for obj in self.storage.objects(key) if types else []:
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                place = obj["metadata"].get("namespace", "")
                with contextlib.suppress(errors.StatusError):  # gone meanwhile
                    self.delete(types[0], place, obj["metadata"]["name"], {})
        finally:
            self._cleaning.discard(name)
        self._crd_progress(name)
        return self.storage.get(rt.key, "", name) or stored

    def _crd_progress(self, name: str) -> None:
        """Once a Terminating CRD has no custom resources left, its cleanup finalizer is
        cleared (and with the last finalizer, the CRD and its API go)."""
        crd = self.storage.get(_CRDS, "", name)
        if name in self._cleaning or crd is None:
            return
        if deletion.CRD_CLEANUP not in (crd["metadata"].get("finalizers") or []):
            return
        if self.storage.objects(f"{crd['spec']['group']}/{crd['spec']['names']['plural']}"):
            return
        released = deletion.without_finalizer(crd, deletion.CRD_CLEANUP)
        released = deletion.crd_terminating(released, deletion.CRD_COMPLETED, now())
        crd_rt = self._type("apiextensions.k8s.io", "customresourcedefinitions")
        if released["metadata"].get("finalizers"):
            self.storage.write(_CRDS, released, "MODIFIED")
        else:
            self._remove(crd_rt, released)

    # -- namespaces --------------------------------------------------------------------

    def _delete_namespace(self, rt: ResourceType, current: Obj, dry_run: bool) -> Obj:
        """The namespace registry's delete: the namespace turns Terminating, and the
        namespace controller takes it from there."""
        name = current["metadata"]["name"]
        if name in deletion.IMMORTAL:
            raise deletion.immortal(name)
        if current["metadata"].get("deletionTimestamp"):
            return current
        terminating = deletion.marked(current, now(), None)
        terminating.setdefault("status", {})["phase"] = deletion.TERMINATING
        if dry_run:
            return terminating
        stored = self.storage.write(rt.key, terminating, "MODIFIED")
        self._delete_namespace_content(name)
        return self.storage.get(rt.key, "", name) or stored

    def _delete_namespace_content(self, namespace: str) -> None:
        """The namespace controller: every object in the namespace deleted as its own
        DELETE would (so finalizers and grace periods hold it), then the namespace's
        progress reported, and the namespace removed once nothing is left."""
        self._terminating.add(namespace)
        try:
            for key in self.storage.all_keys():
                types = self.registry.by_key(key)
                if not types or not types[0].namespaced:
                    continue
                for obj in self.storage.objects(key, namespace):
                    if obj["metadata"].get("deletionTimestamp"):
                        continue
                    with contextlib.suppress(errors.StatusError):  # gone meanwhile
                        self.delete(types[0], namespace, obj["metadata"]["name"], {})
        finally:
            self._terminating.discard(namespace)
        self._namespace_progress(namespace)

    def _namespace_progress(self, namespace: str) -> None:
        """Conditions saying what remains in a Terminating namespace; once nothing does,
        the ``kubernetes`` finalizer cleared and the namespace removed."""
        if namespace in self._terminating:
            return  # the controller is still at it; it reports when done
        ns_rt = self._type("", "namespaces")
        space = self.storage.get(ns_rt.key, "", namespace)
        if space is None or not space["metadata"].get("deletionTimestamp"):
            return
        remaining: dict[str, int] = {}
        finalizers: dict[str, int] = {}
        for key in self.storage.all_keys():
            types = self.registry.by_key(key)
            if not types or not types[0].namespaced:
                continue
            for obj in self.storage.objects(key, namespace):
                resource = f"{types[0].plural}.{types[0].group}"
                remaining[resource] = remaining.get(resource, 0) + 1
                for finalizer in obj["metadata"].get("finalizers") or []:
                    finalizers[finalizer] = finalizers.get(finalizer, 0) + 1
        updated = copy.deepcopy(space)
        status = updated.setdefault("status", {})
        status["conditions"] = deletion.namespace_conditions(
            status.get("conditions") or [], remaining, finalizers, now()
        )
        if not remaining:
            spec = updated.setdefault("spec", {})
            kept = [f for f in spec.get("finalizers") or [] if f != deletion.KUBERNETES]
            spec["finalizers"] = kept
            if not spec["finalizers"]:
                del spec["finalizers"]
        if updated != space:
            space = self.storage.write(ns_rt.key, updated, "MODIFIED")
        spec_finalizers = (space.get("spec") or {}).get("finalizers")
        if not remaining and not spec_finalizers and not space["metadata"].get("finalizers"):
            self._remove(ns_rt, space)

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

    # -- scale -------------------------------------------------------------------------

    def scale(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """GET of the ``scale`` subresource (see ``scale``)."""
        return scale.of(rt, self.get(rt, namespace, name))

    def update_scale(
        self, rt: ResourceType, namespace: str, name: str, body: Obj, opts: Options
    ) -> WriteResult:
        """PUT of the ``scale`` subresource: the object's spec.replicas is set."""
        current = self.get(rt, namespace, name)
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["replicas"] = scale.replicas(rt, current, body)
        new["metadata"].pop("resourceVersion", None)
        result = self._replace(rt, current, new, None, opts)
        return WriteResult(scale.of(rt, result.obj), result.warnings)

    def patch_scale(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        opts: Options,
    ) -> WriteResult:
        current = self.get(rt, namespace, name)
        body = scale.patched(rt, current, content_type, raw)
        return self.update_scale(rt, namespace, name, body, opts)

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
        if rt.group == "rbac.authorization.k8s.io":
            # RBAC names are path segments ("system:discovery"): ValidateRBACName.
            if problem := _path_segment_problem(name):
                cause = {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{name}": {problem}',
                }
                raise errors.invalid(rt.kind, rt.group, name, [cause])
            return
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

    def _admit(
        self,
        rt: ResourceType,
        body: Obj,
        opts: Options,
        old: Obj | None = None,
        subresource: str | None = None,
    ) -> tuple[Obj, list[str]]:
        meta = body.get("metadata") or {}
        if causes := metadata.problems(meta):
            raise errors.invalid(rt.kind, rt.group, meta.get("name", ""), causes)
        if rt.plural == "secrets" and body.get("stringData"):
            # stringData is write-only: the server merges it into data, base64-encoded.
            data = body.setdefault("data", {})
            for key, value in body.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if rt.schema is None:
            # Built-ins: the upstream schema, defaults and validation (see ``admission``).
            return admission.admit(
                rt,
                body,
                old,
                subresource,
                opts.field_validation,
                lambda: self.storage.objects("/services"),
            )
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


def _path_segment_problem(name: str) -> str:
    """Why ``name`` is no valid path segment (apimachinery's IsValidPathSegmentName)."""
    if name in (".", ".."):
        return f"may not be '{name}'"
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain '{bad}'"
    return ""


#: Built-in kinds whose strategy's AllowUnconditionalUpdate is false (every custom
#: resource's is too: apiextensions' customResourceStrategy); the rest take a PUT
#: without a resourceVersion as "overwrite whatever is there".
_CONDITIONAL_UPDATE_ONLY = frozenset(
    {
        "apiextensions.k8s.io/customresourcedefinitions",
        "coordination.k8s.io/leases",
        "policy/poddisruptionbudgets",
    }
)


def _unconditional_update(rt: ResourceType) -> bool:
    return not rt.custom and rt.key not in _CONDITIONAL_UPDATE_ONLY


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
