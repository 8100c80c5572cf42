"""The pod status the subprocess kubelet writes: conditions, container states, addresses.

Builds the objects only (the kubelet writes them); their words follow the kubelet's
(``ContainersNotReady``, ``TerminationByKubelet``, ``Completed``/``Error``/``OOMKilled``).
"""

from __future__ import annotations

from typing import Any

from durapod.dev.containers import Container
from durapod.dev.nodeapi import now

Obj = dict[str, Any]
#: The pod's and its host's addresses: every pod shares the machine's loopback.
ADDRESSES = {
    "hostIP": "127.0.0.1",
    "hostIPs": [{"ip": "127.0.0.1"}],
    "podIP": "127.0.0.1",
    "podIPs": [{"ip": "127.0.0.1"}],
}


class Transitions:
    """Each pod's conditions as last written, so that a condition whose status stays
    keeps the time it last changed (readiness over time is what minReadySeconds counts)."""

    def __init__(self) -> None:
        #: uid → condition type → (status, lastTransitionTime).
        self._seen: dict[str, dict[str, tuple[str, str]]] = {}

    def keep(self, uid: str, status: Obj) -> None:
        """Give ``status``'s conditions the transition times they keep (in place)."""
        seen = self._seen.setdefault(uid, {})
        for condition in status.get("conditions") or []:
            before = seen.get(condition["type"])
            if before is not None and before[0] == condition["status"]:
                condition["lastTransitionTime"] = before[1]
            else:
                seen[condition["type"]] = (condition["status"], condition["lastTransitionTime"])

    def forget(self, uid: str) -> None:
        self._seen.pop(uid, None)


def addresses(ip: str) -> Obj:
    """The status addresses of a pod whose IP is ``ip``."""
    return {**ADDRESSES, "podIP": ip, "podIPs": [{"ip": ip}]}


def conditions(ready: bool, evicted: bool = False, unready: list[str] | None = None) -> list[Obj]:
    """The pod's conditions; ``unready`` names containers not yet running, as the
    kubelet says why a pod waiting for them is not Ready."""
    moment = now()
    flag = "True" if ready else "False"
    found: list[Obj] = [
        {"type": t, "status": s, "lastTransitionTime": moment, "lastProbeTime": None}
        for t, s in (
            ("PodScheduled", "True"),
            ("Initialized", "True"),
            ("ContainersReady", flag),
            ("Ready", flag),
        )
    ]
    if unready:
        for condition in found[2:]:
            condition["reason"] = "ContainersNotReady"
            condition["message"] = f"containers with unready status: [{' '.join(unready)}]"
    if evicted:
        found.append(disruption_target(moment))
    return found


def disruption_target(moment: str) -> Obj:
    """The DisruptionTarget condition of a pod the node evicts."""
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "TerminationByKubelet",
        "message": "The node was low on resource: memory.",
        "lastTransitionTime": moment,
        "lastProbeTime": None,
    }


def waiting(container: Obj, started: str, reason: str, message: str) -> Obj:
    """The status of a pod whose container has not started (``reason`` says why)."""
    return {
        "phase": "Pending",
        "startTime": started,
        **ADDRESSES,
        "conditions": conditions(ready=False, unready=[container["name"]]),
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


def container_status(
    container: Obj, c: Container, state: Obj, ready: bool, started: bool | None = None
) -> Obj:
    status = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "containerID": f"subprocess://{c.process.pid}",
        "ready": ready,
        "started": ready if started is None else started,
        "restartCount": c.restart_count,
        "state": state,
    }
    if c.last_state:
        status["lastState"] = c.last_state
    return status


def terminated(c: Container, code: int, start_error: str | None) -> Obj:
    """The container's ``state.terminated`` after its process exited with ``code``;
    ``start_error`` says why it could not start (it never ran)."""
    reason = {"OOMKilled": "OOMKilled"}.get(
        c.killed_for or "", "Completed" if code == 0 else "Error"
    )
    state: Obj = {
        "exitCode": 128 - code if code < 0 else code,
        "reason": reason,
        "startedAt": c.started_at,
        "finishedAt": now(),
        "containerID": f"subprocess://{c.process.pid}",
    }
    if code < 0:
        state["signal"] = -code
    if start_error is not None:
        state.update(reason="StartError", message=start_error)
    return state
