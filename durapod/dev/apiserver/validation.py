"""Semantic validation of built-in kinds, as kube-apiserver's Go validation does it
(``pkg/apis/*/validation``): after decoding and defaulting, before storing.

Each kind has a check on create and, where upstream has one, on update (immutable fields,
what may change); both return apimachinery-worded field errors, which the caller turns
into a 422 ``Invalid`` naming each field. Pods live in ``pod_validation`` and
``pod_updates``, RBAC objects in ``rbac_validation``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from durapod.dev.apiserver import pod_updates, pod_validation, rbac_validation
from durapod.dev.apiserver.fielderrors import (
    FieldError,
    config_key,
    dns1035_label,
    dns_label,
    dns_subdomain,
    duplicate,
    forbidden,
    int_or_percent,
    int_or_percent_value,
    invalid,
    label_selector,
    labels,
    names,
    non_negative,
    not_supported,
    port_name,
    port_number,
    port_or_name,
    required,
    selector_matches,
    too_long,
    valid_ip,
)

Obj = dict[str, Any]
Check = Callable[[Obj], list[FieldError]]
UpdateCheck = Callable[[Obj, Obj], list[FieldError]]
#: core.MaxSecretSize: the data of a ConfigMap or Secret, 1 MiB.
MAX_DATA_BYTES = 1024 * 1024
RBAC_GROUP = rbac_validation.RBAC_GROUP
_IMMUTABLE_SET = "field is immutable when `immutable` is set"


def _name(check: Callable[[str], list[str]]) -> Check:
    def run(obj: Obj) -> list[FieldError]:
        name = (obj.get("metadata") or {}).get("name", "")
        return names("metadata.name", name, check) if name else []

    return run


# -- ConfigMap and Secret ----------------------------------------------------------------


def config_map(obj: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    size = 0
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for key in sorted(data):
        errs += names(f"data[{key}]", key, config_key)
        if key in binary:
            errs.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        size += len(str(data[key]).encode())
    for key in sorted(binary):
        errs += names(f"binaryData[{key}]", key, config_key)
        size += len(_bytes(binary[key]))
    if size > MAX_DATA_BYTES:
        errs.append(too_long("", MAX_DATA_BYTES))
    return errs


def _immutable_data(new: Obj, old: Obj, fields: tuple[str, ...]) -> list[FieldError]:
    if old.get("immutable") is not True:
        return []
    errs = []
    if new.get("immutable") is not True:
        errs.append(forbidden("immutable", _IMMUTABLE_SET))
    for key in fields:
        if (new.get(key) or {}) != (old.get(key) or {}):
            errs.append(forbidden(key, _IMMUTABLE_SET))
    return errs


def config_map_update(new: Obj, old: Obj) -> list[FieldError]:
    return _immutable_data(new, old, ("data", "binaryData")) + config_map(new)


def _bytes(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return b""


def secret(obj: Obj) -> list[FieldError]:
    """ValidateSecret: keys, total size, and what each well-known type requires."""
    errs: list[FieldError] = []
    data = obj.get("data") or {}
    size = 0
    for key in sorted(data):
        errs += names(f"data[{key}]", key, config_key)
        size += len(_bytes(data[key]))
    if size > MAX_DATA_BYTES:
        errs.append(too_long("data", MAX_DATA_BYTES))
    kind = obj.get("type", "")
    required_keys = {
        "kubernetes.io/dockercfg": (".dockercfg",),
        "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
        "kubernetes.io/ssh-auth": ("ssh-privatekey",),
        "kubernetes.io/tls": ("tls.crt", "tls.key"),
    }
    if kind == "kubernetes.io/service-account-token":
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif kind == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            errs += [required("data[username]"), required("data[password]")]
    elif kind in required_keys:
        missing = [
            k
            for k in required_keys[kind]
            if k not in data or (kind.endswith("ssh-auth") and not data[k])
        ]
        errs += [required(f"data[{k}]") for k in missing]
        if not missing and kind in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
            key = required_keys[kind][0]
            try:
                json.loads(_bytes(data[key]) or b"")
            except ValueError as exc:
                errs.append(invalid(f"data[{key}]", "<secret contents redacted>", str(exc)))
    return errs


def secret_update(new: Obj, old: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    if new.get("type", "") != old.get("type", ""):
        errs.append(invalid("type", new.get("type", ""), "field is immutable"))
    return errs + _immutable_data(new, old, ("data",)) + secret(new)


# -- Service -----------------------------------------------------------------------------


def _service_port_key(port: Obj) -> Obj:
    # Duplicate ports are reported with the internal ServicePort struct (no JSON tags).
    return {
        "Name": "",
        "Protocol": port.get("protocol", ""),
        "AppProtocol": None,
        "Port": port.get("port", 0),
        "TargetPort": 0,
        "NodePort": 0,
    }


def service(obj: Obj) -> list[FieldError]:
    """ValidateService."""
    spec = obj.get("spec") or {}
    kind = spec.get("type", "")
    headless = spec.get("clusterIP") == "None"
    ports = spec.get("ports") or []
    errs = _name(dns1035_label)(obj)
    if not ports and not headless and kind != "ExternalName":
        errs.append(required("spec.ports"))
    if kind == "ExternalName":
        if spec.get("clusterIPs"):
            errs.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        cname = str(spec.get("externalName", "")).rstrip(".")
        errs += (
            names("spec.externalName", cname, dns_subdomain)
            if cname
            else [required("spec.externalName")]
        )
    elif headless and kind in ("LoadBalancer", "NodePort"):
        errs.append(
            invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {kind} services")
        )
    seen: set[str] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            errs.append(required(f"{where}.name"))
        elif name:
            errs += names(f"{where}.name", name, dns_label)
            if name in seen:
                errs.append(duplicate(f"{where}.name", name))
            seen.add(name)
        errs += [
            invalid(f"{where}.port", port.get("port", 0), m)
            for m in port_number(port.get("port", 0))
        ]
        protocol = port.get("protocol", "")
        if not protocol:
            errs.append(required(f"{where}.protocol"))
        elif protocol not in ("SCTP", "TCP", "UDP"):
            errs.append(not_supported(f"{where}.protocol", protocol, ["SCTP", "TCP", "UDP"]))
        errs += port_or_name(f"{where}.targetPort", port.get("targetPort", 0))
    errs += labels("spec.selector", spec.get("selector"))
    affinity = spec.get("sessionAffinity", "")
    if not affinity:
        errs.append(required("spec.sessionAffinity"))
    elif affinity not in ("ClientIP", "None"):
        errs.append(not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"]))
    if affinity == "None" and spec.get("sessionAffinityConfig") is not None:
        errs.append(
            forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None")
        )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        errs += valid_ip("spec.clusterIPs[0]", cluster_ip)
    for i, ip in enumerate(spec.get("externalIPs") or []):
        errs += valid_ip(f"spec.externalIPs[{i}]", ip)
    types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    if not kind:
        errs.append(required("spec.type"))
    elif kind not in types:
        errs.append(not_supported("spec.type", kind, types))
    if kind == "ClusterIP":
        for i, port in enumerate(ports):
            if port.get("nodePort"):
                errs.append(
                    forbidden(
                        f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"
                    )
                )
    taken: set[tuple[str, int]] = set()
    for i, port in enumerate(ports):
        key = (port.get("protocol", ""), port.get("port", 0))
        if key in taken:
            errs.append(duplicate(f"spec.ports[{i}]", _service_port_key(port)))
        taken.add(key)
    policy = spec.get("internalTrafficPolicy")
    if policy is not None and policy not in ("Cluster", "Local"):
        errs.append(not_supported("spec.internalTrafficPolicy", policy, ["Cluster", "Local"]))
    return errs


def service_update(new: Obj, old: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    if "ExternalName" not in (spec.get("type"), old_spec.get("type")):
        before, after = old_spec.get("clusterIPs") or [], spec.get("clusterIPs") or []
        if before and before != ["None"] and after and after[0] != before[0]:
            errs.append(invalid("spec.clusterIPs[0]", after, "may not change once set"))
        elif before and not after:
            errs.append(invalid("spec.clusterIPs[0]", after, "primary clusterIP can not be unset"))
    return errs + service(new)


# -- Namespace ---------------------------------------------------------------------------


def namespace(obj: Obj) -> list[FieldError]:
    errs = _name(dns_label)(obj)
    for finalizer in (obj.get("spec") or {}).get("finalizers") or []:
        if "/" not in finalizer and finalizer != "kubernetes":
            errs.append(
                invalid(
                    "spec.finalizers",
                    finalizer,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
    return errs


# -- apps --------------------------------------------------------------------------------


def _workload(obj: Obj, kind: str) -> list[FieldError]:
    """ValidateDeploymentSpec / ValidateReplicaSetSpec: replicas, selector, template."""
    spec = obj.get("spec") or {}
    errs = non_negative("spec.replicas", spec.get("replicas", 0))
    selector = spec.get("selector")
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += label_selector("spec.selector", selector)
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errs.append(invalid("spec.selector", selector, f"empty selector is invalid for {kind}"))
    tpl = spec.get("template") or {}
    tpl_labels = (tpl.get("metadata") or {}).get("labels") or {}
    selects = selector and (selector.get("matchLabels") or selector.get("matchExpressions"))
    if selects and not selector_matches(selector or {}, tpl_labels):
        errs.append(
            invalid(
                "spec.template.metadata.labels",
                tpl_labels,
                "`selector` does not match template `labels`",
            )
        )
    errs += pod_validation.template("spec.template", tpl)
    restart = (tpl.get("spec") or {}).get("restartPolicy", "")
    if restart != "Always":
        errs.append(not_supported("spec.template.spec.restartPolicy", restart, ["Always"]))
    if (tpl.get("spec") or {}).get("activeDeadlineSeconds") is not None:
        errs.append(
            forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            )
        )
    errs += non_negative("spec.minReadySeconds", spec.get("minReadySeconds", 0))
    return errs


def deployment(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = _workload(obj, "deployment")
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type", "")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.append(
                forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )
            )
    elif kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if rolling is None:
            errs.append(
                required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")
            )
        else:
            where = "spec.strategy.rollingUpdate"
            unavailable, surge = rolling.get("maxUnavailable", 0), rolling.get("maxSurge", 0)
            errs += int_or_percent(f"{where}.maxUnavailable", unavailable)
            errs += int_or_percent(f"{where}.maxSurge", surge, at_most_100=False)
            if int_or_percent_value(unavailable) == 0 and int_or_percent_value(surge) == 0:
                errs.append(
                    invalid(
                        f"{where}.maxUnavailable", unavailable, "may not be 0 when `maxSurge` is 0"
                    )
                )
    else:
        errs.append(not_supported("spec.strategy", strategy, ["Recreate", "RollingUpdate"]))
    if spec.get("revisionHistoryLimit") is not None:
        errs += non_negative("spec.revisionHistoryLimit", spec["revisionHistoryLimit"])
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None:
        errs += non_negative("spec.progressDeadlineSeconds", deadline)
        if deadline <= spec.get("minReadySeconds", 0):
            errs.append(
                invalid(
                    "spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"
                )
            )
    return errs


def _selector_immutable(new: Obj, old: Obj) -> list[FieldError]:
    selector = (new.get("spec") or {}).get("selector")
    if selector != (old.get("spec") or {}).get("selector"):
        return [invalid("spec.selector", selector, "field is immutable")]
    return []


def job(obj: Obj) -> list[FieldError]:
    """ValidateJobSpec: counts, selector matching the template, restart policy."""
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit"):
        if spec.get(key) is not None:
            errs += non_negative(f"spec.{key}", spec[key])
    tpl = spec.get("template") or {}
    errs += pod_validation.template("spec.template", tpl)
    restart = (tpl.get("spec") or {}).get("restartPolicy", "")
    if restart not in ("OnFailure", "Never"):
        errs.append(
            not_supported("spec.template.spec.restartPolicy", restart, ["OnFailure", "Never"])
        )
    selector = spec.get("selector")
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += label_selector("spec.selector", selector)
        tpl_labels = (tpl.get("metadata") or {}).get("labels") or {}
        if not selector_matches(selector, tpl_labels):
            errs.append(
                invalid(
                    "spec.template.metadata.labels",
                    tpl_labels,
                    "`selector` does not match template `labels`",
                )
            )
    return errs


def job_update(new: Obj, old: Obj) -> list[FieldError]:
    errs = job(new)
    spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    for key in ("completions", "selector"):
        if spec.get(key) != old_spec.get(key):
            errs.append(invalid(f"spec.{key}", spec.get(key), "field is immutable"))
    return errs


# -- policy, networking, coordination ------------------------------------------------------


def pod_disruption_budget(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        shown = {
            "MinAvailable": spec.get("minAvailable"),
            "Selector": spec.get("selector"),
            "MaxUnavailable": spec.get("maxUnavailable"),
            "UnhealthyPodEvictionPolicy": spec.get("unhealthyPodEvictionPolicy"),
        }
        errs.append(invalid("spec", shown, "minAvailable and maxUnavailable cannot be both set"))
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            errs += int_or_percent(f"spec.{key}", spec[key])
    errs += label_selector("spec.selector", spec.get("selector"))
    policy = spec.get("unhealthyPodEvictionPolicy")
    supported = ["AlwaysAllow", "IfHealthyBudget"]
    if policy is not None and policy not in supported:
        errs.append(not_supported("spec.unhealthyPodEvictionPolicy", policy, supported))
    return errs


def _peers(path: str, peers: list[Obj]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, peer in enumerate(peers):
        where = f"{path}[{i}]"
        kinds = [
            k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None
        ]
        if not kinds:
            errs.append(required(where, "must specify a peer"))
        elif "ipBlock" in kinds and len(kinds) > 1:
            errs.append(forbidden(where, "may not specify both ipBlock and another peer"))
        for key in ("podSelector", "namespaceSelector"):
            errs += label_selector(f"{where}.{key}", peer.get(key))
    return errs


def _np_ports(path: str, ports: list[Obj]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, port in enumerate(ports):
        where = f"{path}[{i}]"
        protocol = port.get("protocol")
        if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
            errs.append(not_supported(f"{where}.protocol", protocol, ["TCP", "UDP", "SCTP"]))
        number, end = port.get("port"), port.get("endPort")
        if isinstance(number, int):
            errs += [invalid(f"{where}.port", number, m) for m in port_number(number)]
            if end is not None and end < number:
                errs.append(
                    invalid(f"{where}.endPort", number, "must be greater than or equal to `port`")
                )
        elif isinstance(number, str):
            if end is not None:
                errs.append(
                    invalid(
                        f"{where}.endPort", end, "may not be specified when `port` is non-numeric"
                    )
                )
            errs += [invalid(f"{where}.port", number, m) for m in port_name(number)]
        elif end is not None:
            errs.append(
                invalid(
                    f"{where}.endPort", end, "may not be specified when `port` is not specified"
                )
            )
    return errs


def network_policy(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = label_selector("spec.podSelector", spec.get("podSelector"))
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            errs += _np_ports(f"spec.{direction}[{i}].ports", rule.get("ports") or [])
            errs += _peers(f"spec.{direction}[{i}].{peers}", rule.get(peers) or [])
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        errs.append(invalid("spec.policyTypes", types, "may not specify more than two policyTypes"))
    else:
        for i, kind in enumerate(types):
            if kind not in ("Ingress", "Egress"):
                errs.append(not_supported(f"spec.policyTypes[{i}]", kind, ["Ingress", "Egress"]))
    return errs


def lease(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errs.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    if spec.get("leaseTransitions") is not None:
        errs += non_negative("spec.leaseTransitions", spec["leaseTransitions"])
    return errs


# -- dispatch ----------------------------------------------------------------------------

CREATE: dict[tuple[str, str], Check] = {
    ("", "Pod"): pod_validation.pod_create,
    ("", "ConfigMap"): config_map,
    ("", "Secret"): secret,
    ("", "Service"): service,
    ("", "Namespace"): namespace,
    ("apps", "Deployment"): deployment,
    ("apps", "ReplicaSet"): lambda obj: _workload(obj, "deployment"),
    ("batch", "Job"): job,
    (RBAC_GROUP, "Role"): lambda obj: rbac_validation.rules(obj, True),
    (RBAC_GROUP, "ClusterRole"): lambda obj: rbac_validation.rules(obj, False),
    (RBAC_GROUP, "RoleBinding"): lambda obj: rbac_validation.binding(obj, True),
    (RBAC_GROUP, "ClusterRoleBinding"): lambda obj: rbac_validation.binding(obj, False),
    ("policy", "PodDisruptionBudget"): pod_disruption_budget,
    ("networking.k8s.io", "NetworkPolicy"): network_policy,
    ("coordination.k8s.io", "Lease"): lease,
}

UPDATE: dict[tuple[str, str], UpdateCheck] = {
    ("batch", "Job"): job_update,
    ("", "Pod"): pod_updates.pod_update,
    ("", "ConfigMap"): config_map_update,
    ("", "Secret"): secret_update,
    ("", "Service"): service_update,
    ("apps", "Deployment"): lambda new, old: _selector_immutable(new, old) + deployment(new),
    ("apps", "ReplicaSet"): lambda new, old: (
        _selector_immutable(new, old) + _workload(new, "deployment")
    ),
    (RBAC_GROUP, "RoleBinding"): lambda new, old: rbac_validation.binding_update(new, old, True),
    (RBAC_GROUP, "ClusterRoleBinding"): lambda new, old: rbac_validation.binding_update(
        new, old, False
    ),
}

STATUS: dict[tuple[str, str], UpdateCheck] = {
    ("", "Pod"): pod_updates.pod_status_update,
}


def problems(
    group: str, kind: str, obj: Obj, old: Obj | None, subresource: str | None
) -> list[FieldError]:
    """Every field error of a create (``old`` None), an update or a status update."""
    key = (group, kind)
    if old is None:
        check = CREATE.get(key)
        return check(obj) if check else []
    if subresource == "status":
        status_check = STATUS.get(key)
        return status_check(obj, old) if status_check else []
    update = UPDATE.get(key)
    if update is not None:
        return update(obj, old)
    check = CREATE.get(key)
    return check(obj) if check else []
