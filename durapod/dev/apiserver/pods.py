"""What a Pod asks of a node, as the API server and the scheduler count it.

Quantities, the effective requests of a pod (a container that gives only a limit
requests that limit, as the API server defaults it) and the QoS class the API server
records at create. Pure functions: the stand-in API server and its kubelet share them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

Obj = dict[str, Any]
Resources = dict[str, Fraction]

#: The resources that decide a pod's QoS class (qos.supportedQoSComputeResources).
QOS_RESOURCES = ("cpu", "memory")

_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
# apimachinery's resource.Quantity grammar: a signed decimal, then a binary or decimal
# SI suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?[0-9]+))?"
)


def quantity(value: Any) -> Fraction | None:
    """A resource quantity ("500m", "1Gi", "1e3", 2) as an exact number; None if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Fraction(value)
    if not isinstance(value, str):
        return None
    match = _QUANTITY.fullmatch(value)
    if match is None:
        return None
    number, suffix, exponent = match.groups()
    if exponent is not None:
        return Fraction(number) * Fraction(10) ** int(exponent)
    return Fraction(number) * _SUFFIXES[suffix or ""]


def _resource_list(value: Any) -> Resources:
    """A requests/limits map with each well-formed quantity parsed (others left out)."""
    parsed: Resources = {}
    if isinstance(value, Mapping):
        for name, raw in value.items():
            amount = quantity(raw)
            if amount is not None:
                parsed[str(name)] = amount
    return parsed


def _resources(holder: Any) -> tuple[Resources, Resources]:
    """(requests, limits) of a container or pod, requests defaulted from limits.

    The API server defaults a missing request to its limit (SetDefaults_Pod), so a
    container with only limits requests exactly those limits.
    """
    section = holder.get("resources") if isinstance(holder, Mapping) else None
    if not isinstance(section, Mapping):
        return {}, {}
    limits = _resource_list(section.get("limits"))
    requests = {**limits, **_resource_list(section.get("requests"))}
    return requests, limits


def container_requests(container: Obj) -> Resources:
    """What one container requests, after the API server's defaulting."""
    return _resources(container)[0]


def _containers(spec: Any, key: str) -> list[Obj]:
    items = spec.get(key) if isinstance(spec, Mapping) else None
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _add(total: Resources, more: Mapping[str, Fraction]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, Fraction(0)) + amount


def _raise_to(total: Resources, other: Mapping[str, Fraction]) -> None:
    for name, amount in other.items():
        total[name] = max(total.get(name, Fraction(0)), amount)


def pod_requests(pod: Obj) -> Resources:
    """What a pod requests of a node (component-helpers' resource.PodRequests).

    Containers run together, so their requests add up; init containers run one at a
    time, so the pod needs the largest of them, alongside the sidecars (init containers
    with ``restartPolicy: Always``) started before it. Pod-level requests, where given,
    replace the containers' for that resource; the pod's overhead comes on top.
    """
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    total: Resources = {}
    for container in _containers(spec, "containers"):
        _add(total, container_requests(container))
    sidecars: Resources = {}
    init_peak: Resources = {}
    for container in _containers(spec, "initContainers"):
        own = container_requests(container)
        if container.get("restartPolicy") == "Always":
            _add(total, own)
            _add(sidecars, own)
            _raise_to(init_peak, sidecars)
        else:
            needed = dict(sidecars)
            _add(needed, own)
            _raise_to(init_peak, needed)
    _raise_to(total, init_peak)
    pod_level = {k: v for k, v in _resources(spec)[0].items() if k in QOS_RESOURCES}
    total.update(pod_level)
    _add(total, _resource_list((spec or {}).get("overhead")))
    return total


def _positive(resources: Mapping[str, Fraction]) -> Resources:
    return {k: v for k, v in resources.items() if k in QOS_RESOURCES and v > 0}


def qos_class(pod: Obj) -> str:
    """The pod's ``status.qosClass``, as the API server computes it (qos.ComputePodQOS).

    Guaranteed when every container limits cpu and memory and the pod's requests equal
    its limits; BestEffort when nothing requests or limits cpu or memory; else Burstable.
    Requests are counted after defaulting from limits. Pod-level resources, where set,
    decide alone.
    """
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    pod_level = _resources(spec)
    at_pod_level = any(name in QOS_RESOURCES for name in (*pod_level[0], *pod_level[1]))
    holders = (
        [pod_level]
        if at_pod_level
        else [
            _resources(c)
            for c in _containers(spec, "containers") + _containers(spec, "initContainers")
        ]
    )
    requests: Resources = {}
    limits: Resources = {}
    guaranteed = True
    for own_requests, own_limits in holders:
        _add(requests, _positive(own_requests))
        _add(limits, _positive(own_limits))
        # Each container must limit both; pod-level limits only when some are given.
        checked = own_limits or not at_pod_level
        if checked and set(_positive(own_limits)) != set(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"
