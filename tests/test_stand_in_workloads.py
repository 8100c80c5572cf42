"""Workloads on the stand-in, driven by the real kubectl and helm: Deployments roll out as
ReplicaSets and pods (readiness-gated, RollingUpdate and Recreate, scaled with ``kubectl
scale`` through the scale subresource, rolled on a template change and back, a deleted
pod replaced), containers that exit are restarted with CrashLoopBackOff, liveness probes
restart them and wait for startup probes, preStop hooks run before SIGTERM, Services
reach ready pods by name, and ``helm install --wait``, ``upgrade`` and ``uninstall`` of
the stock ``helm create`` chart finish.

Pods get network namespaces of their own here (``pod_network="isolated"``, root only):
two replicas listen on the same port, as on a cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod.dev import images, restarts
from durapod.dev.kubelet import NodeSettings
from tests.helpers import BIN, TOKEN, LocalCluster, wait_for

#: The stock chart's image (``helm create``: nginx at the chart's appVersion).
NGINX = "nginx:1.16.0"


def _fake_nginx(root: Path) -> Path:
    """An "nginx" image for the stand-in: this Python environment, whose default command
    serves HTTP on port 80 (what the stock chart's probes and Service expect of nginx)."""
    image = root / "nginx-image"
    image.mkdir()
    (image / "python").symlink_to(sys.executable)
    config = {"Entrypoint": ["python", "-m", "http.server", "80"], "Cmd": []}
    (image / images.CONFIG_FILE).write_text(json.dumps(config))
    return image


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    node = NodeSettings(
        pod_network="isolated",
        crash_back_off=timedelta(milliseconds=200),
        crash_back_off_max=timedelta(seconds=2),
        images={NGINX: _fake_nginx(tmp_path)},
    )
    local = LocalCluster(tmp_path, kubelet=True, controllers=True, node=node)
    yield local
    local.close()


def _get(cluster: LocalCluster, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", *what, "-o", "json").stdout)


def _apply(cluster: LocalCluster, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def _web(replicas: int = 2, **container: Any) -> dict[str, Any]:
    """A Deployment of ``python -m http.server 8080``, ready when it answers on its port."""
    spec = {
        "name": "web",
        "image": "durapod:dev",
        "command": ["python", "-m", "http.server", "8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        **container,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [spec], "terminationGracePeriodSeconds": 2},
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}


def _rolled_out(cluster: LocalCluster, name: str = "web") -> None:
    done = cluster.kubectl("rollout", "status", f"deploy/{name}", "--timeout=120s", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "successfully rolled out" in done.stdout


def _pods(cluster: LocalCluster, selector: str = "app=web") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _get(cluster, "pods", "-l", selector)["items"]
    return items


def _live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ran(cluster: LocalCluster, name: str, code: str) -> str:
    """Run a one-off pod with ``code`` to its end; its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "c", "image": "durapod:dev", "command": ["python", "-c", code]}
            ],
        },
    }
    _apply(cluster, pod)

    def ended() -> str | None:
        phase: str | None = _get(cluster, "pod", name)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(ended, 60, f"pod {name} to end")
    log = cluster.kubectl("logs", name).stdout
    assert phase == "Succeeded", log
    return log


def test_a_deployment_becomes_available_and_its_service_reaches_its_pods(
    cluster: LocalCluster,
) -> None:
    """Two replicas on the same port, each Ready once its readiness probe passes; the
    Service's Endpoints list both, and a pod reaches them by the Service's name."""
    _apply(cluster, _web(), SERVICE)
    _rolled_out(cluster)
    deployment = _get(cluster, "deploy", "web")
    status = deployment["status"]
    assert (status["readyReplicas"], status["availableReplicas"], status["updatedReplicas"]) == (
        2,
        2,
        2,
    )
    conditions = {c["type"]: c["reason"] for c in status["conditions"]}
    assert conditions == {
        "Available": "MinimumReplicasAvailable",
        "Progressing": "NewReplicaSetAvailable",
    }
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    (rs,) = _get(cluster, "rs", "-l", "app=web")["items"]
    hashed = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{hashed}"
    assert rs["metadata"]["ownerReferences"][0]["controller"] is True
    pods = _pods(cluster)
    assert len(pods) == 2
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {hashed}
    assert all(p["metadata"]["name"].startswith(f"web-{hashed}-") for p in pods)
    assert len({p["status"]["podIP"] for p in pods}) == 2
    assert all(p["status"]["containerStatuses"][0]["ready"] for p in pods)

    def addresses() -> set[str]:
        endpoints = _get(cluster, "endpoints", "web")
        return {a["ip"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []}

    wait_for(lambda: addresses() == {p["status"]["podIP"] for p in pods}, 30, "the endpoints")
    assert cluster.kubectl("get", "deploy", "web").stdout.split("\n")[1].split()[1] == "2/2"
    code = (
        "import urllib.request\n"
        "for url in ('http://web/', 'http://web.default.svc.cluster.local:80/'):\n"
        "    print(urllib.request.urlopen(url, timeout=10).status)\n"
    )
    assert _ran(cluster, "client", code).split() == ["200", "200"]


def test_kubectl_scale_adds_and_removes_pods(cluster: LocalCluster) -> None:
    _apply(cluster, _web())
    _rolled_out(cluster)
    cluster.kubectl("scale", "deploy/web", "--replicas=3")
    _rolled_out(cluster)
    assert len(_live(_pods(cluster))) == 3
    scale = _get(cluster, "deploy", "web", "--subresource=scale")
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]["replicas"]) == (
        "Scale",
        3,
        3,
    )
    assert scale["status"]["selector"] == "app=web"
    cluster.kubectl("scale", "deploy/web", "--replicas=1")
    _rolled_out(cluster)
    wait_for(lambda: len(_pods(cluster)) == 1, 60, "the extra pods to go")
    assert _get(cluster, "deploy", "web")["status"]["replicas"] == 1
    refused = cluster.kubectl("scale", "deploy/web", "--replicas=-1", check=False)
    assert refused.returncode != 0


def test_a_changed_template_rolls_a_new_replicaset_and_the_old_pods_go(
    cluster: LocalCluster,
) -> None:
    _apply(cluster, _web())
    _rolled_out(cluster)
    (first,) = _get(cluster, "rs", "-l", "app=web")["items"]
    old_hash = first["metadata"]["labels"]["pod-template-hash"]
    cluster.kubectl("set", "env", "deploy/web", "COLOR=blue")
    _rolled_out(cluster)

    def only_new_pods() -> bool:
        pods = _pods(cluster)
        hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in pods}
        return len(pods) == 2 and old_hash not in hashes

    wait_for(only_new_pods, 60, "the old pods to go")
    sets = {rs["metadata"]["name"]: rs for rs in _get(cluster, "rs", "-l", "app=web")["items"]}
    assert len(sets) == 2
    old = sets.pop(first["metadata"]["name"])
    (new,) = sets.values()
    assert old["spec"]["replicas"] == 0 and new["spec"]["replicas"] == 2
    revision = "deployment.kubernetes.io/revision"
    assert (old["metadata"]["annotations"][revision], new["metadata"]["annotations"][revision]) == (
        "1",
        "2",
    )
    env = new["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "COLOR", "value": "blue"}]
    events = cluster.kubectl("events", "--for", "deploy/web").stdout
    assert f"Scaled down replica set {first['metadata']['name']}" in events
    # Back to the first template: its ReplicaSet comes back as revision 3.
    cluster.kubectl("rollout", "undo", "deploy/web")
    _rolled_out(cluster)
    again = _get(cluster, "rs", first["metadata"]["name"])
    assert again["spec"]["replicas"] == 2
    assert again["metadata"]["annotations"][revision] == "3"


def test_a_deleted_pod_is_replaced(cluster: LocalCluster) -> None:
    _apply(cluster, _web())
    _rolled_out(cluster)
    victim = _pods(cluster)[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "--wait=false")

    def replaced() -> bool:
        pods = _live(_pods(cluster))
        names = {p["metadata"]["name"] for p in pods}
        ready = [p for p in pods if (p["status"].get("containerStatuses") or [{}])[0].get("ready")]
        return victim not in names and len(ready) == 2

    wait_for(replaced, 60, "a ready replacement")
    events = cluster.kubectl(
        "events", "--for", "rs/" + _pods(cluster)[0]["metadata"]["name"].rsplit("-", 1)[0]
    ).stdout
    assert events.count("SuccessfulCreate") >= 1


def test_a_crashing_container_is_restarted_with_crash_loop_back_off(
    cluster: LocalCluster,
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crasher"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "durapod:dev",
                    "command": ["python", "-c", "print('going down'); raise SystemExit(3)"],
                }
            ]
        },
    }
    _apply(cluster, pod)

    def looping() -> dict[str, Any]:
        status: dict[str, Any] = _get(cluster, "pod", "crasher")["status"]
        container = (status.get("containerStatuses") or [{}])[0]
        waiting = (container.get("state") or {}).get("waiting") or {}
        if container.get("restartCount", 0) >= 3 and waiting.get("reason") == "CrashLoopBackOff":
            return status
        return {}

    status = wait_for(looping, 60, "CrashLoopBackOff after three restarts")
    container = status["containerStatuses"][0]
    assert status["phase"] == "Running"
    assert container["ready"] is False
    assert container["lastState"]["terminated"]["exitCode"] == 3
    assert "back-off" in container["state"]["waiting"]["message"]
    assert "CrashLoopBackOff" in cluster.kubectl("get", "pod", "crasher").stdout
    first = container["restartCount"]
    wait_for(
        lambda: (
            _get(cluster, "pod", "crasher")["status"]["containerStatuses"][0]["restartCount"]
            > first
        ),
        30,
        "another restart",
    )
    events = cluster.kubectl("events", "--for", "pod/crasher").stdout
    assert "Back-off restarting failed container c" in events
    assert cluster.kubectl("logs", "crasher").stdout.count("going down") >= 3
    cluster.kubectl("delete", "pod", "crasher", "--timeout=60s")


def test_a_failing_liveness_probe_restarts_the_container(cluster: LocalCluster) -> None:
    _apply(
        cluster,
        _web(
            replicas=1,
            livenessProbe={
                "httpGet": {"path": "/healthz", "port": 8080},
                "periodSeconds": 1,
                "failureThreshold": 2,
            },
        ),
    )

    def restarted() -> dict[str, Any]:
        pods = _pods(cluster)
        statuses = (pods[0]["status"].get("containerStatuses") or [{}]) if pods else [{}]
        found: dict[str, Any] = statuses[0]
        return found if found.get("restartCount", 0) >= 1 else {}

    container = wait_for(restarted, 60, "a restart after the liveness probe failed")
    assert container["lastState"]["terminated"]["reason"] == "Error"
    name = _pods(cluster)[0]["metadata"]["name"]
    events = cluster.kubectl("events", "--for", f"pod/{name}").stdout
    assert "Liveness probe failed: HTTP probe failed with statuscode: 404" in events
    assert "Container web failed liveness probe, will be restarted" in events


def test_helm_install_wait_of_the_stock_chart_finishes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """``helm create``'s chart (nginx, a Service, probes on ``/``) installs with
    ``--wait``; the test's "nginx" image is this Python environment serving HTTP on
    port 80 (see _fake_nginx)."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(tmp_path), "PATH": str(BIN)}
    helm = [str(BIN / "helm")]
    subprocess.run([*helm, "create", "demo"], cwd=tmp_path, env=env, check=True)
    chart = tmp_path / "demo"
    assert f'appVersion: "{NGINX.split(":")[1]}"' in (chart / "Chart.yaml").read_text()
    done = subprocess.run(
        [*helm, "install", "demo", str(chart), "--wait", "--timeout", "120s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    deployment = _get(cluster, "deploy", "demo")
    assert deployment["status"]["availableReplicas"] == 1
    (pod,) = _pods(cluster, "app.kubernetes.io/instance=demo")
    assert pod["spec"]["containers"][0]["image"] == NGINX
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    code = "import urllib.request; print(urllib.request.urlopen('http://demo/').status)"
    assert _ran(cluster, "curl", code).split() == ["200"]
    upgraded = subprocess.run(
        [*helm, "upgrade", "demo", str(chart), "--set", "replicaCount=2", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert _get(cluster, "deploy", "demo")["status"]["readyReplicas"] == 2
    uninstall = [*helm, "uninstall", "demo", "--wait", "--timeout", "120s"]
    subprocess.run(uninstall, env=env, check=True, timeout=180)
    # The Deployment's ReplicaSet and pods are collected with it.
    wait_for(lambda: not _pods(cluster, "app.kubernetes.io/instance=demo"), 60, "the pods to go")
    assert not _get(cluster, "rs", "-l", "app.kubernetes.io/instance=demo")["items"]


def test_a_recreate_rollout_stops_the_old_pods_before_starting_new_ones(
    cluster: LocalCluster,
) -> None:
    deployment = _web()
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    _apply(cluster, deployment)
    _rolled_out(cluster)
    (first,) = _get(cluster, "rs", "-l", "app=web")["items"]
    cluster.kubectl("set", "env", "deploy/web", "COLOR=green")
    _rolled_out(cluster)
    events = [
        e["message"]
        for e in _get(cluster, "events", "--field-selector", "involvedObject.name=web")["items"]
        if e["reason"] == "ScalingReplicaSet"
    ]
    down = f"Scaled down replica set {first['metadata']['name']} from 2 to 0"
    (up,) = [m for m in events if m.startswith("Scaled up") and first["metadata"]["name"] not in m]
    assert events.index(down) < events.index(up)
    assert up.endswith("from 0 to 2")


def test_the_scale_subresource_reads_and_writes_replicas(
    local_cluster: LocalCluster, request: pytest.FixtureRequest
) -> None:
    """GET, PUT (with the Scale's resourceVersion as precondition) and PATCH of
    ``deployments/scale``, ``replicasets/scale`` and ``statefulsets/scale``."""
    api = httpx.Client(base_url=local_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"})
    request.addfinalizer(api.close)
    made = api.post("/apis/apps/v1/namespaces/default/deployments", json=_web(replicas=2))
    assert made.status_code == 201, made.text
    url = "/apis/apps/v1/namespaces/default/deployments/web/scale"
    scale = api.get(url).json()
    assert (scale["apiVersion"], scale["kind"], scale["spec"], scale["status"]) == (
        "autoscaling/v1",
        "Scale",
        {"replicas": 2},
        {"replicas": 0, "selector": "app=web"},
    )
    scale["spec"]["replicas"] = 4
    put = api.put(url, json=scale)
    assert put.status_code == 200, put.text
    assert put.json()["spec"]["replicas"] == 4
    stale = api.put(url, json=scale)
    assert (stale.status_code, stale.json()["reason"]) == (409, "Conflict")
    negative = api.patch(
        url,
        json={"spec": {"replicas": -1}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert negative.status_code == 422
    assert (
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        in (negative.json()["message"])
    )
    deployment = api.get("/apis/apps/v1/namespaces/default/deployments/web").json()
    assert (deployment["spec"]["replicas"], deployment["metadata"]["generation"]) == (4, 2)
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": _web()["spec"]["template"] | {"metadata": {"labels": {"app": "db"}}},
        },
    }
    assert api.post("/apis/apps/v1/namespaces/default/statefulsets", json=sts).status_code == 201
    local_cluster.kubectl("scale", "statefulset/db", "--replicas=3")
    got = api.get("/apis/apps/v1/namespaces/default/statefulsets/db/scale").json()
    assert got["spec"]["replicas"] == 3
    missing = api.get("/apis/apps/v1/namespaces/default/deployments/nope/scale")
    assert (missing.status_code, missing.json()["reason"]) == (404, "NotFound")


def test_the_crash_back_off_doubles_to_its_cap_and_starts_over_after_a_long_run() -> None:
    back_off = restarts.CrashBackOff(base=10, cap=300)
    waits = []
    moment = 0.0
    for _ in range(8):
        wait = back_off.wait("pod_c", moment)
        waits.append(wait)
        back_off.restarted("pod_c", moment, moment + wait)
        moment += wait + 1  # each run lasts a second
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
    # A run longer than twice the cap since the last restart: the first wait again.
    assert back_off.wait("pod_c", moment + 601) == 0
    back_off.forget("pod_")
    assert back_off.wait("pod_c", moment) == 0
    assert [restarts.go_duration(s) for s in (0.2, 10, 80, 300)] == [
        "200ms",
        "10s",
        "1m20s",
        "5m0s",
    ]
    assert restarts.should_restart("Always", 0, None)
    assert restarts.should_restart("OnFailure", 1, "Unhealthy")
    assert not restarts.should_restart("OnFailure", 0, None)
    assert not restarts.should_restart("Never", 1, None)
    assert not restarts.should_restart("Always", 137, "Evicted")


def test_a_startup_probe_holds_back_liveness_until_the_container_has_started(
    cluster: LocalCluster,
) -> None:
    """The server listens only after two seconds; a liveness probe that gives up after
    one failure would kill it, but it waits for the startup probe to pass."""
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    _apply(
        cluster,
        _web(
            replicas=1,
            command=["sh", "-c", "sleep 2; exec python -m http.server 8080"],
            startupProbe={**probe, "failureThreshold": 30},
            livenessProbe={**probe, "failureThreshold": 1},
        ),
    )
    _rolled_out(cluster)
    (pod,) = _pods(cluster)
    container = pod["status"]["containerStatuses"][0]
    assert (container["started"], container["ready"], container["restartCount"]) == (True, True, 0)
    name = pod["metadata"]["name"]
    events = cluster.kubectl("events", "--for", f"pod/{name}").stdout
    assert "Startup probe failed" in events
    assert "Liveness probe failed" not in events


def test_a_pre_stop_hook_runs_before_the_container_is_stopped(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Deleting the pod runs its preStop hook first, then SIGTERM: the server (which
    writes its goodbye on SIGTERM) sees the hook's mark."""
    mark, goodbye = tmp_path / "pre-stop", tmp_path / "goodbye"
    server = (
        "import http.server, os, signal, sys\n"
        "def bye(*_):\n"
        f"    open({str(goodbye)!r}, 'w').write(str(os.path.exists({str(mark)!r})))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "http.server.test(http.server.SimpleHTTPRequestHandler, port=8080)\n"
    )
    hook = {"exec": {"command": ["python", "-c", f"open({str(mark)!r}, 'w').write('x')"]}}
    _apply(
        cluster,
        _web(replicas=1, command=["python", "-c", server], lifecycle={"preStop": hook}),
    )
    _rolled_out(cluster)
    (pod,) = _pods(cluster)
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "--timeout=60s")
    assert goodbye.read_text() == "True"
