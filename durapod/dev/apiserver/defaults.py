"""Defaults of built-in objects, as kube-apiserver fills them in before validation.

Clients read these back and depend on them: ``helm`` and ``kubectl rollout`` read a
Deployment's strategy and revisionHistoryLimit, Services get a cluster IP and a
targetPort, containers an imagePullPolicy. The values are upstream's defaulting functions
(``pkg/apis/core/v1/defaults.go``, ``pkg/apis/apps/v1/defaults.go``, ...), the allocations
of the Service registry, and the admission plugins a stock cluster runs on pods (Priority,
DefaultTolerationSeconds, ServiceAccount's name only). Each function mutates the object it
is given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]

#: The Service cluster-IP range of a kubeadm or kind cluster.
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
NODE_PORTS = range(30000, 32768)
#: What DefaultTolerationSeconds adds to every pod (node not ready or unreachable: 300 s).
_DEFAULT_TOLERATIONS = tuple(
    {
        "key": f"node.kubernetes.io/{reason}",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    for reason in ("not-ready", "unreachable")
)


def _image_tag(image: str) -> str:
    """The tag of an image reference; an untagged one without a digest means ``latest``."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "" if digest else "latest"


def _probe(probe: Obj | None) -> None:
    if not probe:
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(key, value)
    _handler(probe)


def _handler(handler: Obj | None) -> None:
    http = (handler or {}).get("httpGet")
    if http is not None:
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def container(c: Obj) -> None:
    """SetDefaults_Container, and the empty structs Go always serialises."""
    if not c.get("imagePullPolicy"):
        latest = _image_tag(str(c.get("image", ""))) == "latest"
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            field_ref.setdefault("apiVersion", "v1")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(kind))
    lifecycle = c.get("lifecycle") or {}
    for hook in ("postStart", "preStop"):
        _handler(lifecycle.get(hook))


def _volume(volume: Obj) -> None:
    sources = set(volume) - {"name"}
    if not sources:
        volume["emptyDir"] = {}
    for kind in ("secret", "configMap", "projected", "downwardAPI"):
        if isinstance(volume.get(kind), dict):
            volume[kind].setdefault("defaultMode", 0o644)
    for source in (volume.get("projected") or {}).get("sources") or []:
        token = source.get("serviceAccountToken")
        if token is not None:
            token.setdefault("expirationSeconds", 3600)


def pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and its containers and volumes."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for kind in ("initContainers", "containers"):
        for c in spec.get(kind) or []:
            container(c)
    for volume in spec.get("volumes") or []:
        _volume(volume)


def pod(obj: Obj) -> None:
    """SetDefaults_Pod: requests default to limits, service links on."""
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    for kind in ("initContainers", "containers"):
        for c in spec.get(kind) or []:
            resources = c.setdefault("resources", {})
            limits = resources.get("limits") or {}
            if limits:
                requests = resources.setdefault("requests", {})
                for name, value in limits.items():
                    requests.setdefault(name, value)
    spec.setdefault("enableServiceLinks", True)
    # The deprecated field mirrors the name (conversion from the internal type).
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        spec.setdefault("serviceAccountName", spec.get("serviceAccount"))
        spec["serviceAccount"] = spec["serviceAccountName"]


def pod_admission(obj: Obj, old: Obj | None = None) -> None:
    """What the admission plugins a stock cluster runs add to a pod: on create,
    ServiceAccount (the account's name; no token volume here) and Priority; on create and
    update, DefaultTolerationSeconds; on update, Priority keeps what it set."""
    spec = obj.setdefault("spec", {})
    if old is None:
        spec.setdefault("serviceAccountName", "default")
        spec["serviceAccount"] = spec["serviceAccountName"]
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    else:
        for key in ("priority", "preemptionPolicy"):
            if key not in spec and key in (old.get("spec") or {}):
                spec[key] = old["spec"][key]
    tolerations = spec.setdefault("tolerations", [])
    for default in _DEFAULT_TOLERATIONS:
        if not any(
            t.get("key") == default["key"] and t.get("effect") in (None, "", "NoExecute")
            for t in tolerations
        ):
            tolerations.append(dict(default))


def pod_template(template: Obj) -> None:
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    pod_spec(template.setdefault("spec", {}))


def deployment(obj: Obj) -> None:
    """SetDefaults_Deployment of apps/v1."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    pod_template(spec.setdefault("template", {}))
    obj.setdefault("status", {})


def replica_set(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    pod_template(spec.setdefault("template", {}))
    obj.setdefault("status", {"replicas": 0})


def stateful_set(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )
    pod_template(spec.setdefault("template", {}))
    obj.setdefault("status", {"replicas": 0, "availableReplicas": 0})


def job(obj: Obj) -> None:
    """SetDefaults_Job of batch/v1, and the selector the Job registry generates."""
    spec = obj.setdefault("spec", {})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    pod_template(template)
    uid, name = obj.get("metadata", {}).get("uid"), obj.get("metadata", {}).get("name")
    if uid and not spec.get("manualSelector") and "selector" not in spec:
        # The Job registry generates the selector and the pod labels it matches.
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = template["metadata"].setdefault("labels", {})
        for prefix in ("batch.kubernetes.io/", ""):
            labels.setdefault(f"{prefix}controller-uid", uid)
            labels.setdefault(f"{prefix}job-name", name)
    obj.setdefault("status", {})


def secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")


def namespace(obj: Obj) -> None:
    """SetDefaults_Namespace: the name label every namespace carries."""
    name = obj.get("metadata", {}).get("name")
    if name:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def network_policy(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    for rule in [*(spec.get("ingress") or []), *(spec.get("egress") or [])]:
        for port in rule.get("ports") or []:
            port.setdefault("protocol", "TCP")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def role_binding(obj: Obj) -> None:
    """SetDefaults_Subject: users and groups belong to the RBAC API group."""
    for subject in obj.get("subjects") or []:
        if not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = "rbac.authorization.k8s.io"


def pod_disruption_budget(obj: Obj) -> None:
    obj.setdefault(
        "status",
        {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0},
    )


def service(obj: Obj, used_ips: Iterable[str], used_node_ports: Iterable[int]) -> None:
    """SetDefaults_Service, then the registry's allocations: a cluster IP from
    10.96.0.0/12 (not for headless or ExternalName services) and node ports."""
    spec = obj.setdefault("spec", {})
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("sessionAffinity") == "ClientIP":
        config = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        config.setdefault("timeoutSeconds", 10800)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, "") and "port" in port:
            port["targetPort"] = port["port"]
    obj.setdefault("status", {"loadBalancer": {}})
    if kind == "ExternalName":
        return
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        taken = set(used_node_ports)
        free = (p for p in NODE_PORTS if p not in taken)
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                port["nodePort"] = next(free)
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    cluster_ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
    if not cluster_ip:
        cluster_ip = allocate_ip(set(used_ips))
    spec["clusterIP"] = cluster_ip
    spec.setdefault("clusterIPs", [cluster_ip])
    spec.setdefault("ipFamilies", [] if cluster_ip == "None" else ["IPv4"])
    if cluster_ip == "None" and not spec["ipFamilies"]:
        spec["ipFamilies"] = ["IPv4"]
    spec.setdefault("ipFamilyPolicy", "SingleStack")


def allocate_ip(used: set[str]) -> str:
    """A free address of the service range; the first (.1) is the API server's own."""
    reserved = SERVICE_CIDR.network_address + 1
    for host in SERVICE_CIDR.hosts():
        if host != reserved and str(host) not in used:
            return str(host)
    raise RuntimeError("the service IP range is full")


def keep_allocations(new: Obj, old: Obj) -> None:
    """On update, a Service keeps the cluster IP and node ports it was given unless the
    request names others (the registry's patchAllocatedValues)."""
    new_spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
    if old_spec.get("type") == "ExternalName" or new_spec.get("type") == "ExternalName":
        return
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        if not new_spec.get(key) and old_spec.get(key):
            new_spec[key] = old_spec[key]
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
    for port in new_spec.get("ports") or []:
        before = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
        if before and before.get("nodePort") and not port.get("nodePort"):
            port["nodePort"] = before["nodePort"]


#: Defaulting per (group, kind); kinds not listed have none the stand-in needs.
BY_KIND: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("", "Pod"): pod,
    ("", "Secret"): secret,
    ("", "Namespace"): namespace,
    ("apps", "Deployment"): deployment,
    ("apps", "ReplicaSet"): replica_set,
    ("apps", "StatefulSet"): stateful_set,
    ("batch", "Job"): job,
    ("networking.k8s.io", "NetworkPolicy"): network_policy,
    ("rbac.authorization.k8s.io", "RoleBinding"): role_binding,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): role_binding,
    ("policy", "PodDisruptionBudget"): pod_disruption_budget,
}
