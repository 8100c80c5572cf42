"""Pure scheduling decisions of the stand-in node, worded as kube-scheduler words them.

kube-scheduler's NodeResourcesFit filter: a pod fits a node when the node can take one
more pod and, for cpu and memory it requests, the requests of the pods already bound
there (and not finished) plus its own stay within the node's allocatable. A pod that
fits nowhere gets the FitError message (``0/1 nodes are available: 1 Insufficient
memory. preemption: ...``). The kubelet's own admission makes the same check for pods
that name the node themselves, and rejects with ``OutOfmemory`` and the like.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from durapod.dev.apiserver import pods

Obj = dict[str, Any]
#: Pods a kubelet accepts by default (--max-pods).
DEFAULT_MAX_PODS = 110
#: The kubelet's default hard eviction threshold (memory.available<100Mi), which
#: allocatable memory leaves free.
EVICTION_RESERVE = {"memory": "100Mi"}
FINISHED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Amounts:
    """Schedulable amounts in the scheduler's units: millicores, bytes, pods."""

    milli_cpu: int = 0
    memory: int = 0
    pods: int = 0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(
            self.milli_cpu + other.milli_cpu, self.memory + other.memory, self.pods + other.pods
        )

    def __sub__(self, other: Amounts) -> Amounts:
        return Amounts(
            self.milli_cpu - other.milli_cpu, self.memory - other.memory, self.pods - other.pods
        )

    @classmethod
    def of(cls, resources: Mapping[str, Any]) -> Amounts:
        """From a resource list (``{"cpu": "2", "memory": "8Gi", "pods": "110"}``);
        rounded up as Quantity.MilliValue/Value round."""
        parsed = {k: pods.quantity(v) for k, v in resources.items()}
        if bad := [k for k, v in parsed.items() if v is None]:
            raise ValueError(f"not a quantity: {', '.join(f'{k}={resources[k]!r}' for k in bad)}")
        cpu, memory, count = (parsed.get(k) or 0 for k in ("cpu", "memory", "pods"))
        return cls(math.ceil(cpu * 1000), math.ceil(memory), math.ceil(count))

    def resource_list(self) -> dict[str, str]:
        """As a Node's ``status.capacity``/``allocatable`` shows them."""
        cpu = f"{self.milli_cpu // 1000}" if self.milli_cpu % 1000 == 0 else f"{self.milli_cpu}m"
        memory = f"{self.memory // 1024}Ki" if self.memory % 1024 == 0 else str(self.memory)
        return {"cpu": cpu, "memory": memory, "pods": str(self.pods)}


def requested(pod: Obj) -> Amounts:
    """What one pod takes of a node: its cpu and memory requests, and one pod slot."""
    reqs = pods.pod_requests(pod)
    return Amounts(math.ceil(reqs.get("cpu", 0) * 1000), math.ceil(reqs.get("memory", 0)), pods=1)


def occupies(pod: Obj, node: str) -> bool:
    """Whether a pod counts against ``node``: bound there and not finished.

    The scheduler's pod informer leaves out Succeeded and Failed pods, so a pod that
    ended frees its room even before it is deleted; one being deleted still holds it.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return bool(spec.get("nodeName") == node and status.get("phase") not in FINISHED)


def used(bound: Iterable[Obj]) -> Amounts:
    total = Amounts()
    for pod in bound:
        total += requested(pod)
    return total


@dataclass(frozen=True)
class Shortage:
    """One resource a pod does not fit for (fit.go's InsufficientResource)."""

    resource: str
    reason: str
    requested: int
    used: int
    capacity: int


def shortages(want: Amounts, in_use: Amounts, node: Amounts) -> list[Shortage]:
    """Why ``want`` does not fit beside ``in_use`` on a node of ``node`` (none: it fits).

    As fitsRequest: the pod count always; cpu and memory only when the pod requests them.
    """
    found = []
    if in_use.pods + 1 > node.pods:
        found.append(Shortage("pods", "Too many pods", 1, in_use.pods, node.pods))
    if want.milli_cpu > 0 and want.milli_cpu > node.milli_cpu - in_use.milli_cpu:
        found.append(
            Shortage("cpu", "Insufficient cpu", want.milli_cpu, in_use.milli_cpu, node.milli_cpu)
        )
    if want.memory > 0 and want.memory > node.memory - in_use.memory:
        found.append(
            Shortage("memory", "Insufficient memory", want.memory, in_use.memory, node.memory)
        )
    return found


def _histogram(reasons: Iterable[str]) -> str:
    return ", ".join(sorted(f"{count} {reason}" for reason, count in Counter(reasons).items()))


def unschedulable_message(pod: Obj, found: list[Shortage], nodes: int = 1) -> str:
    """The PodScheduled=False message: the filter's FitError, then what preemption found.

    This stand-in never preempts: like a cluster where no pod of lower priority runs,
    preemption finds no victims (or the pod may not preempt at all).
    """
    head = f"0/{nodes} nodes are available: {_histogram(s.reason for s in found)}."
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
        return f"{head} preemption: not eligible due to preemptionPolicy=Never."
    victims = _histogram(["No preemption victims found for incoming pod"] * nodes)
    return f"{head} preemption: 0/{nodes} nodes are available: {victims}."


def rejection(found: list[Shortage]) -> tuple[str, str]:
    """(reason, message) of a pod the kubelet's admission turns away (lifecycle.predicate);
    the pod's status message prefixes it with ``Pod was rejected: ``."""
    first = found[0]
    return (
        f"OutOf{first.resource}",
        f"Node didn't have enough resource: {first.resource}, "
        f"requested: {first.requested}, used: {first.used}, capacity: {first.capacity}",
    )


def queue_order(pod: Obj) -> tuple[int, str]:
    """The scheduling queue's order (PrioritySort): higher priority first, then older."""
    return (
        -int((pod.get("spec") or {}).get("priority") or 0),
        pod["metadata"].get("creationTimestamp", ""),
    )
