"""``durapod dev --install helm``: durapod installed on the stand-in by the real ``helm``
from ``helm/durapod``, its operator and API running as the chart's own pods (Deployments,
ReplicaSets, the kubelet; each pod in a network namespace of its own, with its
ServiceAccount's token for in-cluster config), under the chart's RBAC. Runs succeed from
kubectl and through the API's Service; ``helm upgrade`` with a changed value rolls the pods
and the value reaches their processes; ``helm rollback`` brings revision 1 back; ``helm
uninstall`` removes the release but keeps the CRDs.

One ``durapod dev`` for the module (installing takes a while); the last test uninstalls."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from durapod import permissions
from durapod.dev.apiserver.auth import read_request_log
from tests.chart_helpers import CHART, NAMESPACE, RELEASE, helm
from tests.helpers import BIN, DevProcess, operator_pid, running_dev, taskrun, wait_for

#: Generous: pods start as Python processes on what may be a busy two-core machine.
RUN_SECONDS = 180.0
ROLLOUT_SECONDS = 300.0
APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-helm-", "--install", "helm", start_timeout=420) as process:
        yield process


def _helm(dev: DevProcess, *args: str) -> str:
    return helm(*args, kubeconfig=dev.home / "kubeconfig").stdout


def _pods(dev: DevProcess, component: str) -> list[Obj]:
    listing = dev.get(
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        labelSelector=f"app.kubernetes.io/component={component}",
    )
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def _available(dev: DevProcess, name: str) -> bool:
    deployment = dev.get(f"{APPS}/deployments/{name}")
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return bool(
        conditions.get("Available") == "True"
        and status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == deployment["spec"]["replicas"]
        and status.get("readyReplicas") == deployment["spec"]["replicas"]
        and status.get("replicas") == deployment["spec"]["replicas"]
    )


def _env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def _process_env(pod: Obj) -> dict[str, str]:
    """The environment of the pod's running process (the kubelet's ``subprocess://PID``)."""
    pid = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("subprocess://")
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _run_hello(dev: DevProcess, name: str) -> None:
    dev.apply(taskrun(name, "hello", {"name": name}))
    run = dev.wait_phase(name, "Succeeded", "Failed", timeout=RUN_SECONDS)
    assert run["status"]["phase"] == "Succeeded", run["status"]


def _trigger(dev: DevProcess) -> None:
    """A run triggered through the API's Service, with the env file's URL and token."""
    name = dev.trigger("hello", {"name": "http"})
    run = dev.wait_phase(name, "Succeeded", "Failed", timeout=RUN_SECONDS)
    assert run["status"]["phase"] == "Succeeded", run["status"]


def test_the_chart_is_installed_and_its_deployments_are_the_operator_and_the_api(
    dev: DevProcess,
) -> None:
    values = yaml.safe_load((dev.home / "dev-values.yaml").read_text())
    assert str(dev.home / "dev-values.yaml") in dev.output
    assert values["postgres"]["existingSecret"] and values["postgres"]["sslmode"] == "disable"
    listed = json.loads(_helm(dev, "list", "-n", NAMESPACE, "-o", "json"))
    assert [(r["name"], r["revision"], r["status"]) for r in listed] == [(RELEASE, "1", "deployed")]
    assert "kubectl -n durapod-system logs deploy/durapod-operator" in dev.output
    for component in ("operator", "api"):
        name = f"durapod-{component}"
        assert _available(dev, name)
        [pod] = _pods(dev, component)
        assert pod["spec"]["serviceAccountName"] == name
        assert pod["spec"]["containers"][0]["image"] == "ghcr.io/durapod/durapod:0.1.0"
        assert pod["status"]["podIP"].startswith("10.244.")  # its own network namespace
        # Its in-cluster config: the token the kubelet mounted, no kubeconfig.
        env = _process_env(pod)
        assert "KUBECONFIG" not in env and env["KUBERNETES_SERVICE_HOST"]
        assert env["PGUSER"] == "postgres"  # secretKeyRef, resolved from the Secret
    # The only operator process is the pod's (the stack spawns none of its own).
    [pod] = _pods(dev, "operator")
    container = pod["status"]["containerStatuses"][0]["containerID"]
    assert container == f"subprocess://{operator_pid(dev)}"
    logs = dev.kubectl("-n", NAMESPACE, "logs", "deploy/durapod-operator").stdout
    assert "kube-probe" in logs  # the kubelet probes it where the chart says


def test_a_run_applied_with_kubectl_succeeds(dev: DevProcess) -> None:
    dev.kubectl("apply", "-f", "examples/hello/")
    run = dev.wait_phase("hello-1", "Succeeded", "Failed", timeout=RUN_SECONDS)
    assert run["status"]["phase"] == "Succeeded", run["status"]


def test_a_run_triggered_through_the_apis_service_succeeds(dev: DevProcess) -> None:
    dev.kubectl("apply", "-f", "examples/hello/01-taskdefinition.yaml")
    assert httpx.get(dev.env()["DURAPOD_API_URL"] + "/readyz", timeout=30).status_code == 200
    _trigger(dev)


def test_both_metrics_endpoints_are_served_through_the_charts_services(dev: DevProcess) -> None:
    _trigger(dev)
    env = dev.env()
    operator = httpx.get(env["DURAPOD_OPERATOR_METRICS_URL"], timeout=30)
    api = httpx.get(env["DURAPOD_API_METRICS_URL"], timeout=30)
    assert operator.status_code == api.status_code == 200

    def total(text: str, name: str, **labels: str) -> float:
        families = text_string_to_metric_families(text)
        samples = [s for f in families for s in f.samples if s.name == name]
        return sum(s.value for s in samples if labels.items() <= s.labels.items())

    assert total(operator.text, "durapod_runs_finished_total", task="hello", phase="Succeeded")
    assert total(api.text, "durapod_triggers_total", task="hello", source="http")


def test_the_chart_pods_work_under_its_service_accounts_never_refused(dev: DevProcess) -> None:
    dev.kubectl("apply", "-f", "examples/hello/01-taskdefinition.yaml")
    _run_hello(dev, "rbac-check")
    entries = read_request_log(dev.home / "apiserver-requests.jsonl")
    theirs = [
        e
        for e in entries
        if str(e.get("user", "")).startswith(f"system:serviceaccount:{NAMESPACE}:")
    ]
    assert [e for e in theirs if e["decision"] != "allow"] == []
    made = {(e["user"].rsplit(":", 1)[1], e["verb"], e["resource"]) for e in theirs}
    operator = permissions.role_name("operator")
    assert {(operator, "create", "pods"), (operator, "watch", "taskruns")} <= made
    # The task pod called the API by the Service name the chart gave it; the API checked
    # the pod's token.
    assert (permissions.role_name("api"), "create", "tokenreviews") in made


def test_helm_upgrade_rolls_the_pods_rollback_restores_them_and_uninstall_keeps_the_crds(
    dev: DevProcess,
) -> None:
    dev.kubectl("apply", "-f", "examples/hello/01-taskdefinition.yaml")
    before = {c: _pods(dev, c)[0] for c in ("operator", "api")}
    values = str(dev.home / "dev-values.yaml")
    _helm(
        dev, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", values,
        "--set", "operator.resyncSeconds=30", "--set", "api.databaseTimeoutSeconds=7",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    changed = {
        "operator": ("DURAPOD_RESYNC_SECONDS", "30"),
        "api": ("DURAPOD_DATABASE_TIMEOUT", "7"),
    }

    def rolled(expected: dict[str, tuple[str, str]]) -> bool:
        for component, (key, value) in expected.items():
            if not _available(dev, f"durapod-{component}"):
                return False
            pods = _pods(dev, component)
            if len(pods) != 1 or _env_of(pods[0]["spec"]["containers"][0]).get(key) != value:
                return False
        return True

    wait_for(lambda: rolled(changed), ROLLOUT_SECONDS, "the upgrade to roll out")
    for component, (key, value) in changed.items():
        [pod] = _pods(dev, component)
        hash_now = pod["metadata"]["labels"]["pod-template-hash"]
        assert hash_now != before[component]["metadata"]["labels"]["pod-template-hash"]
        assert _process_env(pod)[key] == value  # the value reached the process
    _run_hello(dev, "after-upgrade")
    _trigger(dev)  # through the Service, to the new API pod

    _helm(dev, "rollback", RELEASE, "1", "-n", NAMESPACE, "--wait", "--timeout", "5m")
    restored = {
        "operator": ("DURAPOD_RESYNC_SECONDS", "45"),
        "api": ("DURAPOD_DATABASE_TIMEOUT", "5"),
    }
    wait_for(lambda: rolled(restored), ROLLOUT_SECONDS, "the rollback to roll out")
    for component in ("operator", "api"):  # revision 1's ReplicaSet is scaled up again
        [pod] = _pods(dev, component)
        first = before[component]["metadata"]["labels"]["pod-template-hash"]
        assert pod["metadata"]["labels"]["pod-template-hash"] == first
    history = json.loads(_helm(dev, "history", RELEASE, "-n", NAMESPACE, "-o", "json"))
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "deployed"),
    ]
    _run_hello(dev, "after-rollback")

    out = _helm(dev, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "3m")
    assert "kept due to the resource policy" in out
    for name in ("durapod-operator", "durapod-api"):
        assert dev.get(f"{APPS}/deployments/{name}") is None
    wait_for(
        lambda: not _pods(dev, "operator") and not _pods(dev, "api"),
        ROLLOUT_SECONDS,
        "the chart's pods to go",
    )
    assert dev.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/taskruns.durapod.io")
    assert dev.taskrun("after-rollback") is not None  # the runs stay with their CRD
    assert _helm(dev, "list", "-n", NAMESPACE, "-q").strip() == ""


def test_install_knows_only_helm(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "durapod"), "dev", "--home", str(tmp_path), "--install", "kustomize"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "the only way to install is `helm`" in result.stdout + result.stderr
    assert not (tmp_path / "postgres").exists()  # refused before anything started
