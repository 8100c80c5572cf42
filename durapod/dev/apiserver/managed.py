"""``metadata.managedFields`` and server-side apply, as kube-apiserver's field manager does them.

Every write records which manager set which fields: a create, update or patch adds what
it changed to its manager's ``Update`` entry (and takes those fields from everyone else);
an apply (``application/apply-patch+yaml``) makes the applied configuration its manager's
``Apply`` entry, merges it into the live object by the schema's list and map semantics,
removes the fields that manager applied before and no longer sends (unless another
manager owns them too), and refuses to change a field another manager owns unless forced.

The behaviour and wording follow apimachinery's ``pkg/util/managedfields/internal``
(fieldmanager, structuredmerge, managedfieldsupdater, stripmeta, skipnonapplied,
capmanagers, lastappliedmanager, conflict) and structured-merge-diff's ``merge/update.go``;
the walks over objects are in ``structured``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from durapod.dev.apiserver import builtins, errors, structured
from durapod.dev.apiserver.registry import ResourceType
from durapod.dev.apiserver.structured import Path, StructureError, Types

Obj = dict[str, Any]
APPLY = "Apply"
UPDATE = "Update"
#: apimachinery's FieldManagerMaxLength.
FIELD_MANAGER_MAX_BYTES = 128
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: capmanagers.go: more Update managers than this are folded into "ancient-changes".
_MAX_UPDATE_MANAGERS = 10
#: stripmeta.go: fields the server sets, which nobody owns.
_STRIPPED: frozenset[Path] = frozenset(
    {
        ("f:apiVersion",),
        ("f:kind",),
        ("f:metadata",),
        *(
            ("f:metadata", f"f:{name}")
            for name in (
                "name",
                "namespace",
                "creationTimestamp",
                "selfLink",
                "uid",
                "clusterName",
                "generation",
                "managedFields",
                "resourceVersion",
            )
        ),
    }
)


@dataclass(frozen=True)
class Manager:
    """Who owns fields: a name and operation, and for updates the apiVersion used."""

    name: str
    operation: str
    #: Part of an Update manager's identity only; "" for Apply managers.
    api_version: str
    subresource: str = ""

    def identifier(self) -> str:
        """apimachinery's BuildManagerIdentifier (JSON of the entry's identifying fields)."""
        entry = {"manager": self.name, "operation": self.operation}
        if self.api_version:
            entry["apiVersion"] = self.api_version
        if self.subresource:
            entry["subresource"] = self.subresource
        return json.dumps({k: v for k, v in entry.items() if v}, separators=(",", ":"))

    def printed(self) -> str:
        """conflict.go's printManager: ``"kubectl"`` or ``"kopf" using v1``."""
        shown = json.dumps(self.name, ensure_ascii=False)
        if self.subresource:
            shown += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            shown += f" using {self.api_version}"
        return shown


@dataclass(frozen=True)
class Owned:
    """One managedFields entry: the fields, in which apiVersion, last changed when."""

    fields: frozenset[Path]
    api_version: str
    time: str | None = None


Managed = dict[Manager, Owned]


@dataclass(frozen=True)
class Write:
    """What a write needs besides the objects: the kind's schema and where it writes."""

    types: Types
    api_version: str
    kind: str
    #: "" for the main resource, "status" for the status subresource.
    subresource: str
    #: The fields this endpoint may change (the rest are reset by the registry strategy).
    keep: Callable[[Path], bool]
    now: str


@dataclass(frozen=True)
class Conflict:
    manager: Manager
    path: Path


class Conflicts(Exception):
    """An apply would change fields other managers own."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        super().__init__(f"{len(conflicts)} conflicts")
        self.conflicts = conflicts

    def status(self) -> errors.StatusError:
        """The 409 kube-apiserver answers (conflict.go's NewConflictError)."""
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f"conflict with {c.manager.printed()}",
                "field": structured.display(c.path),
            }
            for c in self.conflicts
        ]
        if len(self.conflicts) == 1:
            only = self.conflicts[0]
            message = (
                f"Apply failed with 1 conflict: conflict with {only.manager.printed()}: "
                f"{structured.display(only.path)}"
            )
        else:
            lines = []
            for manager in sorted({c.manager for c in self.conflicts}, key=Manager.identifier):
                lines.append(f"conflicts with {manager.printed()}:")
                lines += [
                    f"- {structured.display(c.path)}"
                    for c in self.conflicts
                    if c.manager == manager
                ]
            message = f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)
        return errors.StatusError(409, "Conflict", message, {"causes": causes})


# -- the request's options -------------------------------------------------------------


def manager_name(field_manager: str, user_agent: str) -> str:
    """The manager of a non-apply write: ``fieldManager``, else the User-Agent's first part.

    As kube-apiserver's managerOrUserAgent: the characters before the first ``/``, the
    unprintable ones dropped, cut at 128 bytes; "unknown" when nothing is left.
    """
    if field_manager:
        return field_manager
    prefix = ""
    for char in user_agent.split("/")[0]:
        if not char.isprintable():
            continue
        if len((prefix + char).encode()) > FIELD_MANAGER_MAX_BYTES:
            break
        prefix += char
    return prefix or "unknown"


def check_options(kind: str, field_manager: str, apply: bool, force: bool | None) -> None:
    """422 for what ValidatePatchOptions/ValidateFieldManager refuse; ``kind`` is
    CreateOptions, UpdateOptions or PatchOptions."""
    causes = []
    if apply and not field_manager:
        causes.append(
            {
                "reason": "FieldValueRequired",
                "field": "fieldManager",
                "message": "Required value: is required for apply patch",
            }
        )
    if kind == "PatchOptions" and not apply and force is not None:
        causes.append(
            {
                "reason": "FieldValueForbidden",
                "field": "force",
                "message": "Forbidden: may not be specified for non-apply patch",
            }
        )
    if len(field_manager.encode()) > FIELD_MANAGER_MAX_BYTES:
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "field": "fieldManager",
                "message": f"Too long: may not be more than {FIELD_MANAGER_MAX_BYTES} bytes",
            }
        )
    offset = 0
    for char in field_manager:
        if not char.isprintable():
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "fieldManager",
                    "message": f"Invalid value: {json.dumps(field_manager)}: invalid character "
                    f"U+{ord(char):04X} (at position {offset})",
                }
            )
        offset += len(char.encode())
    if causes:
        raise errors.invalid(kind, "meta.k8s.io", "", causes)


def keeper(status_subresource: bool, subresource: str) -> Callable[[Path], bool]:
    """The fields a write to this endpoint may own (the registry's reset fields): the
    status subresource owns only ``status``; the main resource of a kind with one, all but."""
    if subresource == "status":
        return lambda path: path[:1] == ("f:status",)
    if status_subresource:
        return lambda path: path[:1] != ("f:status",)
    return lambda path: True


#: Every kind's metadata is ObjectMeta, whatever a CRD's schema says of it.
_OBJECT_META = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def writing(rt: ResourceType, subresource: str | None, now: str) -> Write:
    """The context of a write to ``rt``: a CRD's own schema, or the upstream definition of
    a built-in kind (none known: every map granular, every list atomic)."""
    root = rt.schema if rt.custom else builtins.definition(rt.group, rt.version, rt.kind)
    return Write(
        Types(root, builtins.resolve, _OBJECT_META),
        rt.api_version,
        rt.kind,
        subresource or "",
        keeper("status" in rt.subresources, subresource or ""),
        now,
    )


class _Loader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads it into JSON: timestamps stay strings."""


def _timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
_GO_TYPES = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}


def configuration(raw: bytes) -> Obj:
    """The body of an apply patch: YAML (or JSON) of one object; 400 otherwise."""
    try:
        data = yaml.load(raw, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise errors.bad_request(f"error decoding patch: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.bad_request(
            f"error decoding patch: json: cannot unmarshal {_GO_TYPES.get(type(data), 'value')} "
            "into Go value of type map[string]interface {}"
        )
    result: Obj = _json_keys(data)
    return result


def _json_keys(value: Any) -> Any:
    """YAML may key a map by a number; JSON, and so the object, keys by strings."""
    if isinstance(value, dict):
        return {str(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(v) for v in value]
    return value


# -- managedFields entries -------------------------------------------------------------


def decode(entries: Any) -> Managed:
    """managedFields as owners and their fields; ValueError if they are malformed."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    managed: Managed = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"managed fields entry {index} is not an object")
        operation = entry.get("operation")
        if operation not in (APPLY, UPDATE):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = entry.get("apiVersion")
        if not api_version or not isinstance(api_version, str):
            raise ValueError("apiVersion must not be empty")
        if entry.get("fieldsType") != "FieldsV1":
            raise ValueError(f"invalid fieldsType in managed fields entry {index}")
        manager = Manager(
            str(entry.get("manager") or ""),
            operation,
            "" if operation == APPLY else api_version,
            str(entry.get("subresource") or ""),
        )
        fields = frozenset(structured.decode(entry.get("fieldsV1") or {}))
        managed[manager] = Owned(fields, api_version, entry.get("time"))
    return managed


def encode(managed: Managed) -> list[dict[str, Any]]:
    """Owners as managedFields entries, ordered as managedfields.go sorts them."""
    entries = []
    for manager, owned in managed.items():
        entry: dict[str, Any] = {
            "manager": manager.name,
            "operation": manager.operation,
            "apiVersion": owned.api_version,
        }
        if owned.time:
            entry["time"] = owned.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = structured.encode(owned.fields)
        if manager.subresource:
            entry["subresource"] = manager.subresource
        entries.append(entry)
    entries.sort(
        key=lambda e: (
            e["operation"],
            e.get("time", ""),
            e["manager"],
            e["apiVersion"],
            e.get("subresource", ""),
        )
    )
    return entries


def _decoded_or_empty(entries: Any) -> Managed:
    try:
        return decode(entries)
    except ValueError:
        return {}


def _is_reset(sent: Any) -> bool:
    """``managedFields: []`` (or one empty entry) asks to drop all managedFields."""
    return bool(sent == [] or sent == [{}])


def _without_managed(obj: Obj) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta} if "metadata" in obj else dict(obj)


def _visible(obj: Obj, write: Write) -> Obj:
    """``obj`` without managedFields and the top-level fields this endpoint cannot own
    (a status write compares only ``status``): the same changes, found with less work."""
    return {k: v for k, v in _without_managed(obj).items() if write.keep((f"f:{k}",))}


# -- create, update and patch --------------------------------------------------------------


def updated(live: Obj | None, new: Obj, manager: str, write: Write) -> list[dict[str, Any]] | None:
    """The managedFields ``new`` is stored with after ``manager`` wrote it over ``live``
    (None: a create), or None for none.

    As FieldManager.Update: the request's managedFields are the starting point unless they
    are absent, malformed or a status write (then the live ones); ``[]`` resets them, and an
    existing object without managedFields is not tracked until its first apply.
    """
    live_entries = (live or {}).get("metadata", {}).get("managedFields")
    sent = new.get("metadata", {}).get("managedFields")
    if write.subresource:
        managed = _decoded_or_empty(live_entries)
    elif _is_reset(sent):
        managed = {}
    else:
        managed = _decoded_or_empty(sent)
        if not managed:
            managed = _decoded_or_empty(live_entries)
    if not managed and live is not None:
        return None
    changes = write.types.compare(_visible(live or {}, write), _visible(new, write))
    changes = changes.kept(write.keep)
    _take(managed, changes, None, force=True)
    mine = (changes.added | changes.modified) - _STRIPPED
    if mine:
        key = Manager(manager, UPDATE, write.api_version, write.subresource)
        before = managed.get(key)
        owned = mine | before.fields if before else mine
        managed[key] = Owned(frozenset(owned), write.api_version, write.now)
    _cap(managed)
    return encode(managed) or None


def _take(
    managed: Managed, changes: structured.Comparison, writer: Manager | None, force: bool
) -> None:
    """Others lose what this write changed and everyone what it removed (SMD's update);
    without ``force``, changing another's field is a conflict."""
    touched = changes.added | changes.modified
    if not force:
        conflicts = [
            Conflict(manager, path)
            for manager in sorted(managed, key=Manager.identifier)
            if manager != writer
            for path in structured.ordered(managed[manager].fields & touched)
        ]
        if conflicts:
            raise Conflicts(conflicts)
    for manager, owned in list(managed.items()):
        if manager == writer:
            continue
        left = owned.fields - touched - changes.removed
        if not left:
            del managed[manager]
        elif left != owned.fields:
            managed[manager] = Owned(left, owned.api_version, owned.time)


def _cap(managed: Managed) -> None:
    """Fold the oldest Update managers into "ancient-changes" beyond ten (capmanagers.go)."""
    updaters = [m for m in managed if m.operation == UPDATE]
    if len(updaters) <= _MAX_UPDATE_MANAGERS:
        return
    updaters.sort(key=lambda m: (managed[m].time or "", m.identifier()))
    first: dict[str, Manager] = {}
    count = len(updaters)
    for manager in updaters:
        if count <= _MAX_UPDATE_MANAGERS:
            break
        owned = managed[manager]
        version = owned.api_version
        bucket = Manager("ancient-changes", UPDATE, version)
        if manager == bucket or version not in first:
            first.setdefault(version, manager)
            continue
        if bucket not in managed:
            managed[bucket] = managed.pop(first[version])
        fields = owned.fields | managed[bucket].fields
        managed[bucket] = Owned(fields, version, owned.time)
        del managed[manager]
        count -= 1


# -- apply ---------------------------------------------------------------------------------


def applied(
    live: Obj | None, config: Obj, manager: str, force: bool, write: Write
) -> tuple[Obj, list[dict[str, Any]] | None]:
    """The object and managedFields after ``manager`` applies ``config`` to ``live``.

    Raises Conflicts (see ``Conflicts.status``) or a StatusError for a configuration the
    server refuses. ``manager`` "kubectl" gets kubectl's migration from client-side apply:
    conflicts on fields still as its last-applied annotation says are forced, and that
    annotation, when present, follows the applied configuration.
    """
    _check_config(config, write)
    try:
        write.types.field_set(config, strict=True)
    except StructureError as exc:
        raise _internal(f"failed to create typed patch object ({_about(config)}): {exc}") from None
    try:
        merged, managed = _apply(live, config, manager, force, write)
    except Conflicts as exc:
        allowed = _last_applied_fields(live, write) if manager == "kubectl" else None
        if allowed is None:
            raise
        remaining = [c for c in exc.conflicts if c.path not in allowed]
        if remaining:
            raise Conflicts(remaining) from None
        merged, managed = _apply(live, config, manager, True, write)
    if manager == "kubectl" and (merged.get("metadata") or {}).get("annotations", {}).get(
        LAST_APPLIED
    ):
        merged = _with_last_applied(merged, config)
    return merged, encode(managed) or None


def _check_config(config: Obj, write: Write) -> None:
    api_version, kind = config.get("apiVersion"), config.get("kind")
    if api_version != write.api_version or kind != write.kind:
        group, _, version = str(api_version or "").rpartition("/")
        raise errors.bad_request(f"invalid object type: {group}/{version}, Kind={kind or ''}")
    if (config.get("metadata") or {}).get("managedFields") is not None:
        raise errors.bad_request("metadata.managedFields must be nil")


def _about(config: Obj) -> str:
    """objectGVKNN: ``default/name; /v1, Kind=ConfigMap``."""
    meta = config.get("metadata") or {}
    group, _, version = str(config.get("apiVersion", "")).rpartition("/")
    return (
        f"{meta.get('namespace', '')}/{meta.get('name', '')}; "
        f"{group}/{version}, Kind={config.get('kind', '')}"
    )


def _internal(message: str) -> errors.StatusError:
    # A plain Go error from the field manager: 500 with no reason (ErrorToAPIStatus).
    return errors.StatusError(500, "", message)


def _apply(
    live: Obj | None, config: Obj, name: str, force: bool, write: Write
) -> tuple[Obj, Managed]:
    types = write.types
    base = _without_managed(live or {})
    managed = _decoded_or_empty((live or {}).get("metadata", {}).get("managedFields"))
    if not managed and live is not None:
        # skipnonapplied.go: what was there before the first apply belongs to someone.
        before = (types.compare({}, _visible(base, write)).kept(write.keep).added) - _STRIPPED
        if before:
            key = Manager("before-first-apply", UPDATE, write.api_version, write.subresource)
            managed[key] = Owned(frozenset(before), write.api_version, write.now)
    applier = Manager(name, APPLY, "", write.subresource)
    last = managed.get(applier)
    sent = frozenset(p for p in types.field_set(config) if write.keep(p))
    managed[applier] = Owned(sent, write.api_version, last.time if last else None)
    merged = _prune(types, types.merge(base, config), managed, last)
    changes = types.compare(_visible(base, write), _visible(merged, write))
    _take(managed, changes.kept(write.keep), applier, force)
    owned = managed[applier].fields - _STRIPPED
    if owned:
        time = write.now if merged != base else managed[applier].time
        managed[applier] = Owned(owned, write.api_version, time)
    else:
        del managed[applier]
    return merged, managed


def _prune(types: Types, merged: Obj, managed: Managed, last: Owned | None) -> Obj:
    """Remove what the applier applied last time and not now, unless someone else owns it
    (SMD's prune, addBackOwnedItems and addBackDanglingItems)."""
    if last is None or not last.fields:
        return merged
    named = types.with_named_fields
    last_fields = named(last.fields)
    pruned = types.remove(merged, last_fields)
    owned: set[Path] = set().union(*(o.fields for o in managed.values()))
    merged_fields = named(types.field_set(merged))
    pruned = types.remove(merged, merged_fields - (named(types.field_set(pruned)) | named(owned)))
    pruned_fields = named(types.field_set(pruned))
    result: Obj = types.remove(merged, (merged_fields - pruned_fields) & last_fields)
    return result


# -- kubectl's last-applied annotation -----------------------------------------------------


def _last_applied_fields(live: Obj | None, write: Write) -> set[Path] | None:
    """The fields the last-applied annotation sets to what they still are
    (lastappliedmanager.go), or None without a usable annotation."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    try:
        last = json.loads(annotations.get(LAST_APPLIED) or "")
    except ValueError:
        return None
    if not isinstance(last, dict) or last.get("apiVersion") != write.api_version:
        return None
    try:
        fields = write.types.field_set(last, strict=True)
    except StructureError:
        return None
    changed = write.types.compare(last, _without_managed(live or {}))
    return fields - changed.modified - changed.added - changed.removed


def _with_last_applied(merged: Obj, config: Obj) -> Obj:
    """The annotation set to the applied configuration (lastappliedupdater.go)."""
    shown = copy.deepcopy(config)
    meta = shown.get("metadata") or {}
    if isinstance(meta.get("annotations"), dict):
        meta["annotations"].pop(LAST_APPLIED, None)
    elif "annotations" in meta:
        del meta["annotations"]
    value = structured.go_json(shown) + "\n"
    annotations = {**merged["metadata"]["annotations"], LAST_APPLIED: value}
    return {**merged, "metadata": {**merged["metadata"], "annotations": annotations}}
