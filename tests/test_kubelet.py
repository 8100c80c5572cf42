"""The subprocess kubelet reports pods as a node does: phases, exit codes, logs,
OOM kills, evictions and graceful deletion."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import TOKEN, LocalCluster, wait_for

PODS = "/api/v1/namespaces/default/pods"


def _pod(name: str, code: str, memory: str | None = None, grace: int = 30) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "durapod:dev",
        "command": ["python", "-c", code],
        "env": [
            {"name": "GREETING", "value": "hi"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    }
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        # As durapod's task pods: a pod that ends stays ended (Always would restart it).
        "spec": {
            "containers": [container],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
        },
    }


@pytest.fixture
def api(node_cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=node_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


def _until_phase(api: httpx.Client, name: str, *phases: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod: dict[str, Any] = api.get(f"{PODS}/{name}").json()
        return pod if pod.get("status", {}).get("phase") in phases else None

    return wait_for(check, 30, f"pod {name} to reach {phases}")


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def test_a_pod_runs_to_success_with_its_env_and_log(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    api.post(PODS, json=_pod("ok", "import os; print(os.environ['GREETING'], os.environ['POD'])"))
    pod = _until_phase(api, "ok", "Succeeded")
    assert _terminated(pod)["exitCode"] == 0 and _terminated(pod)["reason"] == "Completed"
    assert pod["spec"]["nodeName"] == "durapod-dev"
    assert node_cluster.kubectl("logs", "ok").stdout == "hi ok\n"


def test_a_failing_command_reports_its_exit_code(api: httpx.Client) -> None:
    api.post(PODS, json=_pod("bad", "import sys; sys.exit(3)"))
    pod = _until_phase(api, "bad", "Failed")
    assert _terminated(pod)["exitCode"] == 3 and _terminated(pod)["reason"] == "Error"


def test_a_pod_over_its_memory_limit_is_oom_killed(api: httpx.Client) -> None:
    code = "import time; data = b'x' * (300 << 20); time.sleep(60)"
    api.post(PODS, json=_pod("hog", code, memory="100Mi"))
    pod = _until_phase(api, "hog", "Failed")
    assert _terminated(pod)["reason"] == "OOMKilled" and _terminated(pod)["exitCode"] == 137


_TRAPS_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
    "print('up', flush=True)\n"
    "time.sleep(60)\n"
)


def _wait_running(api: httpx.Client, node_cluster: LocalCluster, name: str) -> None:
    _until_phase(api, name, "Running")
    wait_for(lambda: "up" in node_cluster.kubectl("logs", name).stdout, 30, "the process")


def test_node_pressure_eviction(api: httpx.Client, node_cluster: LocalCluster) -> None:
    api.post(PODS, json=_pod("evictee", _TRAPS_SIGTERM))
    _wait_running(api, node_cluster, "evictee")
    assert node_cluster.kubelet is not None
    node_cluster.call(node_cluster.kubelet.evict("default", "evictee", grace=10))
    pod = _until_phase(api, "evictee", "Failed")
    assert pod["status"]["reason"] == "Evicted"
    assert _terminated(pod)["exitCode"] == 143  # it got SIGTERM and exited in time
    target = [c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert target and target[0]["reason"] == "TerminationByKubelet"


def test_graceful_delete_sends_sigterm_then_removes_the_pod(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    api.post(
        PODS,
        json=_pod(
            "stubborn",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True)\ntime.sleep(60)\n",
            grace=1,
        ),
    )
    _wait_running(api, node_cluster, "stubborn")
    pid = int(
        api.get(f"{PODS}/stubborn")
        .json()["status"]["containerStatuses"][0]["containerID"]
        .split("//")[1]
    )
    deleting = api.delete(f"{PODS}/stubborn").json()
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 1
    wait_for(lambda: api.get(f"{PODS}/stubborn").status_code == 404, 30, "the pod to go")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_eviction_api_marks_and_deletes_the_pod(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    api.post(PODS, json=_pod("drained", _TRAPS_SIGTERM))
    _wait_running(api, node_cluster, "drained")
    events = []
    with api.stream(
        "GET",
        PODS,
        params={
            "watch": "true",
            "fieldSelector": "metadata.name=drained",
            "resourceVersion": api.get(PODS).json()["metadata"]["resourceVersion"],
            "timeoutSeconds": 30,
        },
    ) as stream:
        response = api.post(
            f"{PODS}/drained/eviction",
            json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "drained"}},
        )
        assert response.status_code == 201
        for line in stream.iter_lines():
            events.append(json.loads(line))
            if events[-1]["type"] == "DELETED":
                break
    conditions = events[0]["object"]["status"]["conditions"]
    assert any(
        c["type"] == "DisruptionTarget" and c["reason"] == "EvictionByEvictionAPI"
        for c in conditions
    )
    assert events[-1]["type"] == "DELETED"
