"""Protobuf request bodies of built-in kinds, decoded to the JSON the stand-in works on.

client-go's typed clients send built-in objects as ``application/vnd.kubernetes.protobuf``
(``kubectl create configmap|secret|namespace|token``, ``kubectl auth can-i|whoami``, Helm's
release Secrets, DeleteOptions) and, unlike with CBOR, do not retry as JSON after a 415.
The body is the ``k8s\\x00`` magic and a ``runtime.Unknown`` envelope whose ``raw`` is the
object's message (apimachinery pkg/runtime/serializer/protobuf/protobuf.go).

The few messages those clients send are described by the table below; the protobuf
library builds their descriptors at import and parses them, and ``json_format`` turns them
into dicts. Field numbers are facts read from upstream ``generated.proto`` files
(k8s.io/api, k8s.io/apimachinery); field names are the JSON names, so the output already
speaks the stand-in's dialect. Which zero values survive follows Go: gogo-protobuf writes
every non-pointer field, zero or not, while Go's JSON omits ``omitempty`` zeros, so a zero
is kept only where the Go field is a pointer or has no ``omitempty`` (marked ``?``).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# protobuf ships no type hints (and types-protobuf is not a dependency).
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]

from durapod.dev.apiserver import errors

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_PACKAGE = "durapod.k8s"

# One message per entry: space-separated fields ``jsonName=number[:type][?]``. The type is
# ``string`` when left out, else a scalar (bool, bytes, int32, int64) or a message of this
# table; ``[T]`` is repeated, ``{T}`` a map from string. ``?`` keeps a zero value the client
# sent (a Go pointer, or a JSON field without omitempty).
_TABLE: dict[str, str] = {
    # k8s.io/apimachinery pkg/runtime
    "Unknown": "typeMeta=1:TypeMeta raw=2:bytes contentEncoding=3 contentType=4",
    "TypeMeta": "apiVersion=1 kind=2",
    # k8s.io/apimachinery pkg/apis/meta/v1, pkg/api/resource, pkg/util/intstr; converted
    # to their JSON forms by _special below.
    "Time": "seconds=1:int64 nanos=2:int32",
    "MicroTime": "seconds=1:int64 nanos=2:int32",
    "Quantity": "string=1",
    "IntOrString": "type=1:int64 intVal=2:int32 strVal=3",
    "FieldsV1": "raw=1:bytes",
    "StringList": "items=1:[string]",  # ExtraValue, AttestationValue: a list in JSON
    "ObjectMeta": "name=1 generateName=2 namespace=3 selfLink=4 uid=5 resourceVersion=6"
    " generation=7:int64 creationTimestamp=8:Time deletionTimestamp=9:Time"
    " deletionGracePeriodSeconds=10:int64? labels=11:{string} annotations=12:{string}"
    " ownerReferences=13:[OwnerReference] finalizers=14:[string]"
    " managedFields=17:[ManagedFieldsEntry]",
    "OwnerReference": "apiVersion=5? kind=1? name=3? uid=4? controller=6:bool?"
    " blockOwnerDeletion=7:bool?",
    "ManagedFieldsEntry": "manager=1 operation=2 apiVersion=3 time=4:Time fieldsType=6"
    " fieldsV1=7:FieldsV1 subresource=8",
    "DeleteOptions": "gracePeriodSeconds=1:int64? preconditions=2:Preconditions"
    " orphanDependents=3:bool? propagationPolicy=4? dryRun=5:[string]"
    " ignoreStoreReadErrorWithClusterBreakingPotential=6:bool?",
    "Preconditions": "uid=1? resourceVersion=2?",
    "LabelSelector": "matchLabels=1:{string} matchExpressions=2:[SelectorRequirement]",
    "SelectorRequirement": "key=1? operator=2? values=3:[string]",
    "Condition": "type=1? status=2? observedGeneration=3:int64 lastTransitionTime=4:Time"
    " reason=5? message=6?",
    # k8s.io/api core/v1
    "ConfigMap": "metadata=1:ObjectMeta immutable=4:bool? data=2:{string} binaryData=3:{bytes}",
    "Secret": "metadata=1:ObjectMeta immutable=5:bool? data=2:{bytes} stringData=4:{string} type=3",
    "Namespace": "metadata=1:ObjectMeta spec=2:NamespaceSpec status=3:NamespaceStatus",
    "NamespaceSpec": "finalizers=1:[string]",
    "NamespaceStatus": "phase=1 conditions=2:[NamespaceCondition]",
    "NamespaceCondition": "type=1? status=2? lastTransitionTime=4:Time reason=5 message=6",
    "ServiceAccount": "metadata=1:ObjectMeta secrets=2:[ObjectReference]"
    " imagePullSecrets=3:[LocalObjectReference] automountServiceAccountToken=4:bool?",
    "ObjectReference": "kind=1 namespace=2 name=3 uid=4 apiVersion=5 resourceVersion=6 fieldPath=7",
    "LocalObjectReference": "name=1",
    "Event": "metadata=1:ObjectMeta involvedObject=2:ObjectReference reason=3 message=4"
    " source=5:EventSource firstTimestamp=6:Time lastTimestamp=7:Time count=8:int32 type=9"
    " eventTime=10:MicroTime series=11:EventSeries action=12 related=13:ObjectReference"
    " reportingComponent=14? reportingInstance=15?",
    "EventSource": "component=1 host=2",
    "EventSeries": "count=1:int32 lastObservedTime=2:MicroTime",
    "Binding": "metadata=1:ObjectMeta target=2:ObjectReference",
    "ResourceQuota": "metadata=1:ObjectMeta spec=2:ResourceQuotaSpec status=3:ResourceQuotaStatus",
    "ResourceQuotaSpec": "hard=1:{Quantity} scopes=2:[string] scopeSelector=3:ScopeSelector",
    "ResourceQuotaStatus": "hard=1:{Quantity} used=2:{Quantity}",
    "ScopeSelector": "matchExpressions=1:[ScopedResourceSelectorRequirement]",
    "ScopedResourceSelectorRequirement": "scopeName=1? operator=2? values=3:[string]",
    "Service": "metadata=1:ObjectMeta spec=2:ServiceSpec status=3:ServiceStatus",
    "ServiceSpec": "ports=1:[ServicePort] selector=2:{string} clusterIP=3 clusterIPs=18:[string]"
    " type=4 externalIPs=5:[string] sessionAffinity=7 loadBalancerIP=8"
    " loadBalancerSourceRanges=9:[string] externalName=10 externalTrafficPolicy=11"
    " healthCheckNodePort=12:int32 publishNotReadyAddresses=13:bool"
    " sessionAffinityConfig=14:SessionAffinityConfig ipFamilies=19:[string]"
    " ipFamilyPolicy=17? allocateLoadBalancerNodePorts=20:bool? loadBalancerClass=21?"
    " internalTrafficPolicy=22? trafficDistribution=23?",
    "ServicePort": "name=1 protocol=2 appProtocol=6? port=3:int32? targetPort=4:IntOrString"
    " nodePort=5:int32",
    "SessionAffinityConfig": "clientIP=1:ClientIPConfig",
    "ClientIPConfig": "timeoutSeconds=1:int32?",
    "ServiceStatus": "loadBalancer=1:LoadBalancerStatus conditions=2:[Condition]",
    "LoadBalancerStatus": "ingress=1:[LoadBalancerIngress]",
    "LoadBalancerIngress": "ip=1 hostname=2 ipMode=3? ports=4:[PortStatus]",
    "PortStatus": "port=1:int32? protocol=2? error=3?",
    # k8s.io/api events/v1
    "EventsV1Event": "metadata=1:ObjectMeta eventTime=2:MicroTime series=3:EventsV1EventSeries"
    " reportingController=4 reportingInstance=5 action=6 reason=7 regarding=8:ObjectReference"
    " related=9:ObjectReference note=10 type=11 deprecatedSource=12:EventSource"
    " deprecatedFirstTimestamp=13:Time deprecatedLastTimestamp=14:Time"
    " deprecatedCount=15:int32",
    "EventsV1EventSeries": "count=1:int32? lastObservedTime=2:MicroTime",
    # k8s.io/api authentication/v1
    "TokenRequest": "metadata=1:ObjectMeta spec=2:TokenRequestSpec status=3:TokenRequestStatus",
    "TokenRequestSpec": "audiences=1:[string] expirationSeconds=4:int64?"
    " boundObjectRef=3:BoundObjectReference attestations=5:{StringList}",
    "TokenRequestStatus": "token=1? expirationTimestamp=2:Time",
    "BoundObjectReference": "kind=1 apiVersion=2 name=3 uid=4",
    "TokenReview": "metadata=1:ObjectMeta spec=2:TokenReviewSpec status=3:TokenReviewStatus",
    "TokenReviewSpec": "token=1 audiences=2:[string]",
    "TokenReviewStatus": "authenticated=1:bool user=2:UserInfo audiences=4:[string] error=3",
    "UserInfo": "username=1 uid=2 groups=3:[string] extra=4:{StringList}",
    "SelfSubjectReview": "metadata=1:ObjectMeta status=2:SelfSubjectReviewStatus",
    "SelfSubjectReviewStatus": "userInfo=1:UserInfo",
    # k8s.io/api authorization/v1 (SelfSubjectRulesReview's status is left out: the
    # server computes it and ignores what a client sends).
    "SelfSubjectAccessReview": "metadata=1:ObjectMeta spec=2:SelfSubjectAccessReviewSpec"
    " status=3:SubjectAccessReviewStatus",
    "SelfSubjectAccessReviewSpec": "resourceAttributes=1:ResourceAttributes"
    " nonResourceAttributes=2:NonResourceAttributes",
    "SubjectAccessReview": "metadata=1:ObjectMeta spec=2:SubjectAccessReviewSpec"
    " status=3:SubjectAccessReviewStatus",
    "SubjectAccessReviewSpec": "resourceAttributes=1:ResourceAttributes"
    " nonResourceAttributes=2:NonResourceAttributes user=3 groups=4:[string]"
    " extra=5:{StringList} uid=6",
    "SubjectAccessReviewStatus": "allowed=1:bool? denied=4:bool reason=2 evaluationError=3",
    "ResourceAttributes": "namespace=1 verb=2 group=3 version=4 resource=5 subresource=6 name=7"
    " fieldSelector=8:SelectorAttributes labelSelector=9:SelectorAttributes",
    "SelectorAttributes": "rawSelector=1 requirements=2:[SelectorRequirement]",
    "NonResourceAttributes": "path=1 verb=2",
    "SelfSubjectRulesReview": "metadata=1:ObjectMeta spec=2:SelfSubjectRulesReviewSpec",
    "SelfSubjectRulesReviewSpec": "namespace=1",
    # k8s.io/api coordination/v1
    "Lease": "metadata=1:ObjectMeta spec=2:LeaseSpec",
    "LeaseSpec": "holderIdentity=1? leaseDurationSeconds=2:int32? acquireTime=3:MicroTime"
    " renewTime=4:MicroTime leaseTransitions=5:int32? strategy=6? preferredHolder=7?",
    # k8s.io/api rbac/v1
    "Role": "metadata=1:ObjectMeta rules=2:[PolicyRule]",
    "ClusterRole": "metadata=1:ObjectMeta rules=2:[PolicyRule] aggregationRule=3:AggregationRule",
    "PolicyRule": "verbs=1:[string] apiGroups=2:[string] resources=3:[string]"
    " resourceNames=4:[string] nonResourceURLs=5:[string]",
    "AggregationRule": "clusterRoleSelectors=1:[LabelSelector]",
    "RoleBinding": "metadata=1:ObjectMeta subjects=2:[Subject] roleRef=3:RoleRef",
    "Subject": "kind=1? apiGroup=2 name=3? namespace=4",
    "RoleRef": "apiGroup=1? kind=2? name=3?",
    # k8s.io/api policy/v1
    "Eviction": "metadata=1:ObjectMeta deleteOptions=2:DeleteOptions",
    "PodDisruptionBudget": "metadata=1:ObjectMeta spec=2:PodDisruptionBudgetSpec"
    " status=3:PodDisruptionBudgetStatus",
    "PodDisruptionBudgetSpec": "minAvailable=1:IntOrString? selector=2:LabelSelector"
    " maxUnavailable=3:IntOrString? unhealthyPodEvictionPolicy=4?",
    "PodDisruptionBudgetStatus": "observedGeneration=1:int64 disruptedPods=2:{Time}"
    " disruptionsAllowed=3:int32? currentHealthy=4:int32? desiredHealthy=5:int32?"
    " expectedPods=6:int32? conditions=7:[Condition]",
}

# (apiVersion, kind) -> message; DeleteOptions is taken in any group version, as
# kube-apiserver does for old clients (apiserver pkg/endpoints/handlers/delete.go).
KINDS: dict[tuple[str, str], str] = {
    **{
        ("v1", kind): kind
        for kind in (
            "ConfigMap",
            "Secret",
            "Namespace",
            "ServiceAccount",
            "Event",
            "Binding",
            "ResourceQuota",
            "Service",
        )
    },
    ("events.k8s.io/v1", "Event"): "EventsV1Event",
    **{
        ("authentication.k8s.io/v1", kind): kind
        for kind in ("TokenRequest", "TokenReview", "SelfSubjectReview")
    },
    **{
        ("authorization.k8s.io/v1", kind): kind
        for kind in ("SelfSubjectAccessReview", "SubjectAccessReview", "SelfSubjectRulesReview")
    },
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): "SubjectAccessReview",
    ("coordination.k8s.io/v1", "Lease"): "Lease",
    **{
        ("rbac.authorization.k8s.io/v1", kind): kind
        for kind in ("Role", "ClusterRole", "RoleBinding")
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding",
    ("policy/v1", "Eviction"): "Eviction",
    ("policy/v1", "PodDisruptionBudget"): "PodDisruptionBudget",
}

_SCALARS = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
}
_SPEC = re.compile(r"(\w+)=(\d+)(?::(\[|\{)?(\w+)[\]}]?)?(\?)?")


@dataclass(frozen=True)
class _Field:
    """One field of a table message."""

    name: str
    number: int
    type: str
    repeated: bool
    map: bool
    keep_zero: bool


def _parse_table(table: dict[str, str]) -> dict[str, dict[str, _Field]]:
    fields: dict[str, dict[str, _Field]] = {}
    for message, spec in table.items():
        fields[message] = {}
        for item in spec.split():
            match = _SPEC.fullmatch(item)
            assert match, f"{message}: bad field {item!r}"
            name, number, shape, type_, keep = match.groups()
            fields[message][name] = _Field(
                name, int(number), type_ or "string", shape == "[", shape == "{", keep == "?"
            )
    return fields


_FIELDS = _parse_table(_TABLE)


def _file(fields: dict[str, dict[str, _Field]]) -> descriptor_pb2.FileDescriptorProto:
    """The table as one proto2 file (proto2: a field sent with a zero value is seen)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="durapod/k8s.proto", package=_PACKAGE, syntax="proto2"
    )
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

    def typed(field: descriptor_pb2.FieldDescriptorProto, type_: str) -> None:
        if type_ in _SCALARS:
            field.type = _SCALARS[type_]
        else:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = f".{_PACKAGE}.{type_}"

    for name, message_fields in fields.items():
        message = proto.message_type.add(name=name)
        for f in message_fields.values():
            field = message.field.add(
                name=f.name, number=f.number, label=repeated if f.repeated or f.map else optional
            )
            if not f.map:
                typed(field, f.type)
                continue
            # A map is a repeated entry message, named as protoc names it.
            entry = message.nested_type.add(name=f.name[0].upper() + f.name[1:] + "Entry")
            entry.options.map_entry = True
            entry.field.add(
                name="key",
                number=1,
                label=optional,
                type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            )
            typed(entry.field.add(name="value", number=2, label=optional), f.type)
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = f".{_PACKAGE}.{name}.{entry.name}"
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file(_FIELDS))


def message_class(name: str) -> type[Message]:
    """The protobuf class of a message of the table (tests build bodies with it)."""
    cls: type[Message] = message_factory.GetMessageClass(
        _POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}")
    )
    return cls


_CLASSES = {name: message_class(name) for name in _FIELDS}


def envelope(api_version: str, kind: str, message: Message) -> bytes:
    """``message`` as client-go sends it: the magic, then a ``runtime.Unknown``."""
    unknown = _CLASSES["Unknown"](raw=message.SerializeToString())
    unknown.typeMeta.apiVersion = api_version
    unknown.typeMeta.kind = kind
    return MAGIC + bytes(unknown.SerializeToString())


def unsupported() -> errors.StatusError:
    """kube-apiserver's 415 for a body in a format a resource does not take (the wording
    of apimachinery's NewUnsupportedMediaTypeError, with a custom resource's types)."""
    return errors.StatusError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types "
        "include: application/json, application/yaml",
    )


def decode(body: bytes, kind: str = "", api_version: str = "") -> dict[str, Any]:
    """A protobuf request body as the JSON object a JSON client would have sent.

    ``kind`` and ``api_version`` are what the handler decodes into; like the real
    serializer they stand in for a type the envelope leaves out. A kind this table cannot
    decode is a 415; a malformed body a 400 worded as kube-apiserver words it
    (apiserver pkg/endpoints/handlers/rest.go ``transformDecodeError``).
    """
    unknown = _CLASSES["Unknown"]()
    try:
        if not body:
            raise ValueError("empty data")
        if not body.startswith(MAGIC):
            raise ValueError(
                "provided data does not appear to be a protobuf message, expected prefix "
                f"[{' '.join(str(b) for b in MAGIC)}]"
            )
        if len(body) == len(MAGIC):
            raise ValueError("empty body")
        unknown.ParseFromString(body[len(MAGIC) :])
        type_meta = unknown.typeMeta
        sent_version, sent_kind = str(type_meta.apiVersion), str(type_meta.kind)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        if kind == "DeleteOptions":  # the delete handler quotes the error alone
            raise errors.bad_request(_reason(exc)) from exc
        raise errors.bad_request(
            f"the object provided is unrecognized (must be of type {kind or 'Object'}): "
            f"{_reason(exc)} ({_summary(body)})"
        ) from exc
    sent_kind = sent_kind or kind
    sent_version = sent_version or api_version
    message = (
        "DeleteOptions" if sent_kind == "DeleteOptions" else KINDS.get((sent_version, sent_kind))
    )
    if message is None:
        raise unsupported()
    obj = _CLASSES[message]()
    try:
        obj.ParseFromString(unknown.raw)
        data = json_format.MessageToDict(obj, preserving_proto_field_name=True)
        converted = _object(message, data)
    except (DecodeError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise errors.bad_request(
            f'{sent_kind} in version "{sent_version.rpartition("/")[2]}" cannot be handled '
            f"as a {kind or sent_kind}: {_reason(exc)}"
        ) from exc
    return {"apiVersion": sent_version, "kind": sent_kind, **converted}


def _reason(exc: Exception) -> str:
    # upb's "Error parsing message with type '<ours>': <why>" names our own descriptors.
    return str(exc).rpartition("': ")[2] or type(exc).__name__


def _summary(body: bytes, limit: int = 30) -> str:
    """The head of a body as the real server quotes it (handlers/rest.go summarizeData)."""
    if not body:
        return "<empty>"
    head = body[:limit].decode(errors="replace") if body[:1] == b"{" else body[:limit].hex()
    return head + (" ..." if len(body) > limit else "")


# -- from json_format's dicts to Kubernetes JSON ---------------------------------------


def _object(message: str, data: dict[str, Any]) -> dict[str, Any]:
    fields = _FIELDS[message]
    out: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        if f.map:
            out[name] = {k: _value(f.type, v) for k, v in value.items()}
        elif f.repeated:
            out[name] = [_value(f.type, v) for v in value]
        else:
            converted = _value(f.type, value)
            # Go's JSON omits what it cannot tell from unset: zero Times always, other
            # zeros unless the field is a pointer or has no omitempty.
            if converted is None or (converted in ("", 0, False) and not f.keep_zero):
                continue
            out[name] = converted
    return out


def _value(type_: str, value: Any) -> Any:
    if type_ == "int64":
        return int(value)  # json_format writes 64-bit integers as strings
    if type_ in _SCALARS:
        return value  # bytes are already base64, as Kubernetes JSON has them
    if type_ in ("Time", "MicroTime"):
        return _time(type_, value)
    if type_ == "Quantity":
        return value.get("string", "0")
    if type_ == "IntOrString":
        if int(value.get("type", 0)) == 1:
            return value.get("strVal", "")
        return value.get("intVal", 0)
    if type_ == "FieldsV1":
        return json.loads(base64.b64decode(value.get("raw", "")) or b"{}")
    if type_ == "StringList":
        return list(value.get("items", []))
    return _object(type_, value)


def _time(type_: str, value: dict[str, Any]) -> str | None:
    """A Time (second precision) or MicroTime as RFC 3339; a zero one is JSON's null."""
    if not value:
        return None  # Go writes a zero time as an empty message (apimachinery time_proto.go)
    seconds, nanos = int(value.get("seconds", 0)), int(value.get("nanos", 0))
    if type_ == "Time":
        # metav1.Time drops the nanoseconds on decode, as its JSON has none.
        return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
    moment = _utc(seconds).replace(microsecond=nanos // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


__all__ = ["KINDS", "MEDIA_TYPE", "decode", "envelope", "message_class", "unsupported"]
