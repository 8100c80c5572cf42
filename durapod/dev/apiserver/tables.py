"""``kind: Table`` responses for ``kubectl get``: a Name column, then the CRD's
additionalPrinterColumns (or the built-in columns kubectl shows for pods, events,
namespaces, services, nodes and the workloads: kubernetes/pkg/printers/internalversion)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from durapod.dev.apiserver import errors
from durapod.dev.apiserver.registry import ResourceType

Obj = dict[str, Any]
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def human_duration(since: str | None) -> str | None:
    """kube's duration.HumanDuration of the time since an RFC 3339 timestamp."""
    if not since:
        return None
    try:
        then = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = int((datetime.now(UTC) - then).total_seconds())
    if seconds < 0:
        return "<invalid>"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 365 * 2 else f"{days // 365}y"


def json_path(obj: Any, path: str) -> Any:
    """The value at a simple JSONPath (``.status.phase``, ``.spec.containers[0].image``)."""
    node = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.strip("{}")):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _cell(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    checks: dict[str, Callable[[Any], bool]] = {
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if type_name == "date":
        return human_duration(value) if isinstance(value, str) else None
    if type_name in checks:
        return value if checks[type_name](value) else None
    return value if isinstance(value, str) else str(value)


def _pod_row(pod: Obj) -> list[Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    containers = pod.get("spec", {}).get("containers") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    reason = pod.get("status", {}).get("reason") or pod.get("status", {}).get("phase")
    for status in statuses:
        state = status.get("state", {})
        detail = state.get("waiting") or state.get("terminated") or {}
        reason = detail.get("reason") or reason
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    return [
        f"{ready}/{len(containers)}",
        reason,
        restarts,
        human_duration(pod["metadata"].get("creationTimestamp")),
    ]


def _event_row(event: Obj) -> list[Any]:
    involved = event.get("involvedObject", {})
    return [
        human_duration(event.get("lastTimestamp") or event.get("eventTime")),
        event.get("type"),
        event.get("reason"),
        f"{involved.get('kind', '').lower()}/{involved.get('name', '')}",
        event.get("message"),
    ]


def _age(obj: Obj) -> str | None:
    return human_duration(obj["metadata"].get("creationTimestamp"))


def _deployment_row(d: Obj) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    return [
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(d),
    ]


def _replica_set_row(rs: Obj) -> list[Any]:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    cells = [spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0)]
    return [*cells, _age(rs)]


def _endpoints_row(ep: Obj) -> list[Any]:
    """formatEndpoints: the first three ip:port pairs, then how many more."""
    pairs = []
    for subset in ep.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or []] or [None]
        for address in subset.get("addresses") or []:
            pairs += [f"{address['ip']}:{p}" if p else address["ip"] for p in ports]
    shown = ",".join(pairs[:3]) or "<none>"
    if len(pairs) > 3:
        shown += f" + {len(pairs) - 3} more..."
    return [shown, _age(ep)]


def _service_external_ip(spec: Obj, status: Obj) -> str:
    """getServiceExternalIP (not wide): the external IPs, or what the type implies."""
    kind = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        balancers = ",".join(
            sorted({i.get("ip") or i.get("hostname") or "" for i in ingress} - {""})
        )
        if len(balancers) > 16:  # loadBalancerStatusStringer cuts it to loadBalancerWidth
            balancers = balancers[:13] + "..."
        return ",".join([*filter(None, balancers.split(",")), *external]) or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_row(svc: Obj) -> list[Any]:
    """printService: TYPE, CLUSTER-IP, EXTERNAL-IP, PORT(S) (``80/TCP``,
    ``80:30080/TCP`` with a node port), AGE."""
    spec, status = svc.get("spec") or {}, svc.get("status") or {}
    cluster_ips = spec.get("clusterIPs") or []
    ports = [
        f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort")
        else f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    ]
    return [
        spec.get("type", ""),
        cluster_ips[0] if cluster_ips else "<none>",
        _service_external_ip(spec, status),
        ",".join(ports) or "<none>",
        _age(svc),
    ]


def _node_row(node: Obj) -> list[Any]:
    """printNode: STATUS (Ready, NotReady or Unknown, and SchedulingDisabled when
    cordoned), ROLES (from ``node-role.kubernetes.io/*`` and ``kubernetes.io/role``
    labels), AGE, VERSION."""
    status = node.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    shown = (
        ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    )
    if (node.get("spec") or {}).get("unschedulable"):
        shown.append("SchedulingDisabled")
    roles = set()
    for label, value in (node["metadata"].get("labels") or {}).items():
        if label.startswith("node-role.kubernetes.io/") and label.split("/", 1)[1]:
            roles.add(label.split("/", 1)[1])
        elif label == "kubernetes.io/role" and value:
            roles.add(value)
    return [
        ",".join(shown),
        ",".join(sorted(roles)) or "<none>",
        _age(node),
        (status.get("nodeInfo") or {}).get("kubeletVersion", ""),
    ]


_BUILTIN: dict[str, tuple[list[tuple[str, str]], Callable[[Obj], list[Any]]]] = {
    "apps/deployments": (
        [
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
        ],
        _deployment_row,
    ),
    "apps/replicasets": (
        [("Desired", "integer"), ("Current", "integer"), ("Ready", "integer"), ("Age", "string")],
        _replica_set_row,
    ),
    "/services": (
        [
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
            ("Age", "string"),
        ],
        _service_row,
    ),
    "/nodes": (
        [("Status", "string"), ("Roles", "string"), ("Age", "string"), ("Version", "string")],
        _node_row,
    ),
    "/endpoints": ([("Endpoints", "string"), ("Age", "string")], _endpoints_row),
    "/pods": (
        [("Ready", "string"), ("Status", "string"), ("Restarts", "integer"), ("Age", "string")],
        _pod_row,
    ),
    "/events": (
        [
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        _event_row,
    ),
    "/namespaces": (
        [("Status", "string"), ("Age", "string")],
        lambda ns: [
            ns.get("status", {}).get("phase"),
            human_duration(ns["metadata"].get("creationTimestamp")),
        ],
    ),
}


def include_object(value: str | None) -> str:
    """The includeObject parameter, checked as ValidateTableOptions checks it."""
    if value in (None, "", "Metadata", "Object", "None"):
        return value or "Metadata"
    raise errors.bad_request(
        f'Unable to convert to Table as requested: includeObject: Invalid value: "{value}": '
        "must be 'Metadata', 'Object', 'None', or empty"
    )


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    rt: ResourceType, objs: list[Obj], resource_version: str, include: str, headers: bool = True
) -> Obj:
    """A meta.k8s.io/v1 Table of ``objs``; ``include`` is the includeObject parameter.

    Without ``headers`` the column definitions are left out (null), as the server sends
    every watch event after the first: kubectl keeps the columns it has already seen.
    """
    name_col = {
        "name": "Name",
        "type": "string",
        "format": "name",
        "priority": 0,
        "description": "Name must be unique within a namespace.",
    }
    if rt.key in _BUILTIN:
        columns, render = _BUILTIN[rt.key]
        definitions = [name_col] + [
            {"name": n, "type": t, "format": "", "priority": 0, "description": n}
            for n, t in columns
        ]
        rows_cells = [[o["metadata"]["name"], *render(o)] for o in objs]
    else:
        printer = list(rt.printer_columns) or [_AGE]
        definitions = [name_col] + [
            {
                "name": c["name"],
                "type": "string" if c["type"] == "date" else c["type"],
                "format": c.get("format", ""),
                "priority": c.get("priority", 0),
                "description": c.get("description", c["name"]),
            }
            for c in printer
        ]
        rows_cells = [
            [o["metadata"]["name"]]
            + [_cell(json_path(o, c["jsonPath"]), c["type"]) for c in printer]
            for o in objs
        ]
    rows = []
    for obj, cells in zip(objs, rows_cells, strict=True):
        row: Obj = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions if headers else None,
        "rows": rows,
    }
