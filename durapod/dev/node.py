"""The Node object the stand-in kubelet registers, shaped as a real kubelet's.

Capacity by default is this machine's (its CPUs and memory, as cAdvisor reports them
to a kubelet, and 110 pods); allocatable is capacity less what the node keeps back
(by default the 100Mi memory hard-eviction threshold). Conditions, addresses, labels and
``nodeInfo`` read as ``kubectl describe node`` expects them.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from durapod.dev.scheduling import DEFAULT_MAX_PODS, Amounts

Obj = dict[str, Any]
KUBELET_VERSION = "v1.35.0"
RUNTIME_VERSION = "subprocess://0.1.0"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_CONDITIONS = (
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def machine_capacity() -> dict[str, str]:
    """What a kubelet reports for this machine: its CPUs, its memory, 110 pods."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{line.split()[1]}Ki"
    return {"cpu": str(cpus or 1), "memory": memory, "pods": str(DEFAULT_MAX_PODS)}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def architecture() -> str:
    return _ARCH.get(platform.machine(), platform.machine())


def node_object(
    name: str,
    capacity: Amounts,
    allocatable: Amounts,
    images: list[dict[str, object]],
    since: str,
    heartbeat: str,
) -> Obj:
    """The Node, with conditions that have held since ``since``, last posted at ``heartbeat``."""
    machine_id = _read("/etc/machine-id") or name
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": architecture(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": architecture(),
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "capacity": capacity.resource_list(),
            "allocatable": allocatable.resource_list(),
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": heartbeat,
                    "lastTransitionTime": since,
                }
                for kind, status, reason, message in _CONDITIONS
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": machine_id,
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": architecture(),
            },
            "images": images,
        },
    }
