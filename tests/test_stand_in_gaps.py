"""Small fidelity gaps of the stand-in cluster, closed (issue 10): Events expire after
``--event-ttl``, deleting a CRD deletes its custom resources, ``kubectl get svc`` and
``kubectl get nodes`` show kubectl's columns; and the API says when it listens. Each test
says what a real cluster (or Deployment) does and shows that ours does too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from durapod.dev.postgres import free_port
from tests.helpers import LocalCluster, bare_taskrun, wait_for

EVENTS = "/api/v1/namespaces/default/events"
NEW_EVENTS = "/apis/events.k8s.io/v1/namespaces/default/events"
CM = "/api/v1/namespaces/default/configmaps"
TR = "/apis/durapod.io/v1/namespaces/default/taskruns"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/taskruns.durapod.io"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _first_change(client: httpx.Client, path: str, resource_version: str) -> dict[str, Any]:
    """The first watch event after ``resource_version`` (the read timeout is the deadline)."""
    params = {"watch": "true", "resourceVersion": resource_version}
    with client.stream("GET", path, params=params, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            event: dict[str, Any] = json.loads(line)
            return event
    raise AssertionError(f"the watch of {path} ended without an event")


# -- Events expire ---------------------------------------------------------------------


def test_events_expire_after_the_event_ttl(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """A real cluster stores Events with an etcd lease of ``--event-ttl`` (kube-apiserver's
    default 1h; pkg/registry/core/event/storage), so they vanish on their own with a
    DELETED watch event, core and events.k8s.io alike, while other objects stay; so does
    ours (with the TTL shortened to a second, and no write needed to notice it)."""
    local_cluster.read(lambda c: setattr(c.storage, "event_ttl", 1.0))
    kept = kube_api.post(CM, json={"metadata": {"name": "kept"}, "data": {"k": "v"}})
    assert kept.status_code == 201, kept.text
    core = {
        "metadata": {"name": "old.1"},
        "involvedObject": {"kind": "ConfigMap", "namespace": "default", "name": "kept"},
        "reason": "Tested",
        "message": "an event",
        "type": "Normal",
    }
    created = kube_api.post(EVENTS, json=core)
    assert created.status_code == 201, created.text
    new = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "old.2"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "durapod.io/tests",
        "reportingInstance": "tests-1",
        "action": "Testing",
        "reason": "Tested",
        "type": "Normal",
        "regarding": {"kind": "ConfigMap", "namespace": "default", "name": "kept"},
    }
    created_new = kube_api.post(NEW_EVENTS, json=new)
    assert created_new.status_code == 201, created_new.text
    for path, made in ((EVENTS, created), (NEW_EVENTS, created_new)):
        change = _first_change(kube_api, path, made.json()["metadata"]["resourceVersion"])
        assert (change["type"], change["object"]["metadata"]["name"]) == (
            "DELETED",
            made.json()["metadata"]["name"],
        )
        assert kube_api.get(f"{path}/{made.json()['metadata']['name']}").status_code == 404
    assert kube_api.get(f"{CM}/kept").status_code == 200


def test_an_event_written_again_lives_a_ttl_from_its_last_write(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """On a real cluster each write of an Event (kubectl's recorder bumps ``count``)
    takes a new lease, so an Event lives ``--event-ttl`` past its last write; so does
    ours: the lease of the first write ends without removing the rewritten Event."""
    local_cluster.read(lambda c: setattr(c.storage, "event_ttl", 2.0))
    body = {
        "metadata": {"name": "busy.1"},
        "involvedObject": {"kind": "ConfigMap", "namespace": "default", "name": "x"},
        "reason": "Tested",
        "count": 1,
    }
    first_write = time.monotonic()
    assert kube_api.post(EVENTS, json=body).status_code == 201
    wait_for(lambda: time.monotonic() > first_write + 1.0, 10, "half the TTL to pass")
    second_write = time.monotonic()
    again = kube_api.patch(f"{EVENTS}/busy.1", json={"count": 2}, headers=MERGE)
    assert again.status_code == 200, again.text
    change = _first_change(kube_api, EVENTS, again.json()["metadata"]["resourceVersion"])
    assert (change["type"], change["object"]["count"]) == ("DELETED", 2)
    # Not at the end of the first write's lease, but of the second's.
    assert time.monotonic() >= second_write + 2.0


# -- deleting a CRD --------------------------------------------------------------------


def test_deleting_a_crd_deletes_its_custom_resources_honouring_their_finalizers(
    kube_api: httpx.Client,
) -> None:
    """On a real cluster a deleted CRD gets the ``customresourcecleanup.apiextensions.k8s.io``
    finalizer and a Terminating condition (apiextensions-apiserver's CRD registry); its
    finalizer controller deletes every custom resource, refuses new ones meanwhile, and
    lets the CRD go only once the last one (held by its own finalizer) is gone; so does
    ours."""
    assert kube_api.post(TR, json=bare_taskrun("free")).status_code == 201
    held = kube_api.post(TR, json=bare_taskrun("held", finalizers=["example.com/hold"]))
    assert held.status_code == 201, held.text
    deleted = kube_api.delete(CRD)
    assert deleted.status_code == 200, deleted.text
    crd = kube_api.get(CRD).json()
    assert crd["metadata"]["deletionTimestamp"]
    assert crd["metadata"]["finalizers"] == ["customresourcecleanup.apiextensions.k8s.io"]
    terminating = {c["type"]: c for c in crd["status"]["conditions"]}["Terminating"]
    assert (terminating["status"], terminating["reason"]) == ("True", "InstanceDeletionInProgress")
    assert kube_api.get(f"{TR}/free").status_code == 404
    assert kube_api.get(f"{TR}/held").json()["metadata"]["deletionTimestamp"]
    refused = kube_api.post(TR, json=bare_taskrun("late"))
    assert refused.status_code == 405
    assert refused.json()["message"] == (
        "create not allowed while custom resource definition is terminating"
    )
    released = kube_api.patch(f"{TR}/held", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert released.status_code == 200, released.text
    assert kube_api.get(CRD).status_code == 404
    assert kube_api.get(TR).status_code == 404


def test_kubectl_delete_crd_leaves_no_custom_resources_behind(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """``kubectl delete crd`` on a real cluster returns once the CRD is gone, its objects
    with it: a CRD created again under the same name starts empty; so does ours."""
    assert kube_api.post(TR, json=bare_taskrun("r1")).status_code == 201
    manifest = kube_api.get(CRD).json()
    local_cluster.kubectl("delete", "crd", "taskruns.durapod.io", "--timeout=60s")
    assert local_cluster.read(lambda c: c.storage.objects("durapod.io/taskruns")) == []
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        manifest["metadata"].pop(key, None)
    manifest.pop("status")
    again = kube_api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=manifest)
    assert again.status_code == 201, again.text
    assert kube_api.get(TR).json()["items"] == []


# -- kubectl get svc / nodes -----------------------------------------------------------


def _rows(local_cluster: LocalCluster, *args: str) -> dict[str, list[str]]:
    out = local_cluster.kubectl("get", *args).stdout.splitlines()
    return {line.split()[0]: line.split() for line in out}


def test_kubectl_get_services_shows_type_ips_and_ports(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """``kubectl get svc`` on a real cluster shows NAME TYPE CLUSTER-IP EXTERNAL-IP
    PORT(S) AGE (printService in pkg/printers/internalversion: ``80/TCP``, a node port as
    ``80:30080/TCP``, ``<none>`` and ``<pending>``); so does ours."""
    services = "/api/v1/namespaces/default/services"
    for name, spec in (
        (
            "web",
            {
                "ports": [
                    {"name": "http", "port": 80},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ]
            },
        ),
        ("nodes", {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        ("lb", {"type": "LoadBalancer", "ports": [{"port": 443}]}),
        ("ext", {"type": "ExternalName", "externalName": "example.com"}),
    ):
        made = kube_api.post(services, json={"metadata": {"name": name}, "spec": spec})
        assert made.status_code == 201, made.text
    rows = _rows(local_cluster, "svc")
    assert rows["NAME"] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    web_ip = kube_api.get(f"{services}/web").json()["spec"]["clusterIP"]
    assert rows["web"][:5] == ["web", "ClusterIP", web_ip, "<none>", "80/TCP,53/UDP"]
    assert rows["nodes"][1:5:3] == ["NodePort", "80:30080/TCP"]
    assert rows["nodes"][3] == "<none>"
    assert rows["lb"][1] == "LoadBalancer" and rows["lb"][3] == "<pending>"
    assert rows["ext"][1:5] == ["ExternalName", "<none>", "example.com", "<none>"]
    assert re.fullmatch(r"\d+s", rows["web"][5])


def test_kubectl_get_nodes_shows_status_roles_and_version(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """``kubectl get nodes`` on a real cluster shows NAME STATUS ROLES AGE VERSION
    (printNode: the Ready condition, SchedulingDisabled when cordoned, roles from
    ``node-role.kubernetes.io/*`` labels, the kubelet's version); so does ours."""
    labels = {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}
    made = kube_api.post("/api/v1/nodes", json={"metadata": {"name": "n1", "labels": labels}})
    assert made.status_code == 201, made.text
    info = dict.fromkeys(
        (
            "machineID",
            "systemUUID",
            "bootID",
            "kernelVersion",
            "osImage",
            "containerRuntimeVersion",
            "kubeProxyVersion",
            "operatingSystem",
            "architecture",
        ),
        "x",
    )
    status = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {**info, "kubeletVersion": "v1.35.0"},
        }
    }
    patched = kube_api.patch("/api/v1/nodes/n1/status", json=status, headers=MERGE)
    assert patched.status_code == 200, patched.text
    cordoned = {"metadata": {"name": "n2"}, "spec": {"unschedulable": True}}
    assert kube_api.post("/api/v1/nodes", json=cordoned).status_code == 201
    rows = _rows(local_cluster, "nodes")
    assert rows["NAME"] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows["n1"][:3] == ["n1", "Ready", "control-plane,edge"]
    assert rows["n1"][4] == "v1.35.0"
    assert rows["n2"][:3] == ["n2", "Unknown,SchedulingDisabled", "<none>"]


# -- the API says when it listens ------------------------------------------------------


def test_the_api_logs_where_it_listens(local_cluster: LocalCluster) -> None:
    """A Deployment's ``kubectl logs`` shows what the container wrote; a server that
    says nothing leaves it empty. The API writes one line to stderr once its socket is
    bound (with the port it was given), and answers there; the database may be down."""
    process = subprocess.Popen(
        [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", "0"],
        env={
            **os.environ,
            "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
            "KUBECONFIG": str(local_cluster.kubeconfig),
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        lines.extend(process.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        pattern = re.compile(r"durapod api listening on (http://127\.0\.0\.1:\d+)$")

        def announced() -> str | None:
            assert process.poll() is None, "".join(lines)
            found = [m for line in list(lines) if (m := pattern.match(line.strip()))]
            return found[0].group(1) if found else None

        url = wait_for(announced, 60, "the API's listening line")
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(20)
        reader.join(10)
        assert process.stderr is not None
        process.stderr.close()
