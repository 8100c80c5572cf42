"""``helm/durapod`` on the stand-in cluster, with the real Helm and kubectl: its manifests
pass the API server's validation (upstream 1.35 schemas, strict field validation, our CRDs);
``helm install``, ``upgrade`` and ``uninstall`` work and keep what they should; and the
operator and the API, run with the chart's own commands, environment and ServiceAccounts
and confined by ``watchNamespaces`` to Roles, take a run to Succeeded without one request
refused."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from durapod import permissions
from durapod.dev.apiserver.auth import read_request_log
from durapod.dev.postgres import PostgresServer, free_port
from durapod.operator.settings import watch_namespaces
from tests.chart_helpers import (
    CHART,
    EXTERNAL,
    NAMESPACE,
    RELEASE,
    helm,
    merge,
    template_text,
    values_file,
)
from tests.helpers import TOKEN, LocalCluster, definition, taskrun, wait_for

Obj = dict[str, Any]
#: Stand-ins for the prometheus-operator CRDs: only so the ServiceMonitor and PrometheusRule
#: the chart renders have a kind to be checked against (their content is not validated).
MONITORING_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    )
]


def _create(client: httpx.Client, path: str, body: Obj) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code in (201, 409), answer.text


def _namespaces(client: httpx.Client, *names: str) -> None:
    for name in names:
        _create(client, "/api/v1/namespaces", {"metadata": {"name": name}})


def _get(client: httpx.Client, path: str) -> Obj | None:
    answer = client.get(path)
    found: Obj | None = answer.json() if answer.status_code == 200 else None
    return found


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"postgres": {"host": "", "existingSecret": "", "bundled": {"enabled": True}}},
            id="bundled-postgres",
        ),
        pytest.param(
            {
                "watchNamespaces": ["team-a", "team-b"],
                "resourceQuota": {"enabled": True},
                "networkPolicy": {
                    "api": {
                        "allowedNamespaces": ["callers"],
                        "extraFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                    },
                    "egress": {
                        "enabled": True,
                        "kubeAPIServerCIDRs": ["10.96.0.1/32"],
                        "postgresCIDRs": ["10.0.5.0/24"],
                    },
                },
            },
            id="namespaced-locked-down",
        ),
        pytest.param(
            {
                "metrics": {
                    "serviceMonitor": {"enabled": True},
                    "prometheusRule": {"enabled": True},
                },
                "operator": {
                    "replicas": 3,
                    "podDisruptionBudget": {"minAvailable": "50%"},
                    "tolerations": [{"key": "system", "operator": "Exists"}],
                    "extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": "durapod-operator"}],
                },
                "api": {"service": {"type": "NodePort"}, "tokens": {"generate": False}},
                "securityContext": {"runAsUser": None},
                "image": {"digest": "sha256:" + "c" * 64},
            },
            id="monitoring-and-overrides",
        ),
    ],
)
def test_rendered_manifests_pass_the_api_servers_validation(
    local_cluster: LocalCluster, kube_api: httpx.Client, values: Obj
) -> None:
    """``kubectl apply --dry-run=server`` (strict field validation) of everything the chart
    renders: built-ins against the upstream 1.35 schemas, CRDs as CRDs."""
    _namespaces(kube_api, NAMESPACE, "team-a", "team-b", "callers")
    for crd in MONITORING_CRDS:
        _create(kube_api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    manifests = template_text(EXTERNAL, values).stdout
    result = local_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifests, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = {line.split("/", 1)[0] for line in result.stdout.splitlines()}
    assert {"deployment.apps", "serviceaccount", "clusterrole.rbac.authorization.k8s.io"} <= kinds


def test_the_api_server_refuses_a_manifest_the_chart_must_not_render(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """The validation above can fail: a pod template field that does not exist is refused."""
    _namespaces(kube_api, NAMESPACE)
    manifests = template_text(EXTERNAL).stdout.replace(
        "enableServiceLinks: false", "enableServiceLinkz: false", 1
    )
    result = local_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifests, check=False
    )
    assert result.returncode != 0 and "enableServiceLinkz" in result.stderr


def _secret(client: httpx.Client, name: str, key: str) -> str:
    found = _get(client, f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
    assert found is not None, f"no Secret {name}"
    return base64.b64decode(found["data"][key]).decode()


def test_helm_install_upgrade_and_uninstall_on_the_stand_in(local_cluster: LocalCluster) -> None:
    """Install creates the CRDs, Deployments, ServiceAccounts and RBAC; an upgrade with a
    changed value reaches the Deployment and keeps the generated token and password; a
    mistyped key is refused before anything is sent; uninstall removes the release but the
    CRDs (``crds.keep``) and the bundled database's Secret."""
    kubeconfig = local_cluster.kubeconfig
    with httpx.Client(
        base_url=local_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as api:
        _namespaces(api, NAMESPACE)
        helm(
            "install", RELEASE, str(CHART), "-n", NAMESPACE,
            "--set", "postgres.bundled.enabled=true", kubeconfig=kubeconfig,
        )  # fmt: skip
        for crd in ("taskruns", "taskdefinitions", "taskschedules"):
            made = _get(
                api, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}.durapod.io"
            )
            assert (
                made is not None
                and made["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            )
        apps = f"/apis/apps/v1/namespaces/{NAMESPACE}"
        for name in ("durapod-operator", "durapod-api"):
            deployment = _get(api, f"{apps}/deployments/{name}")
            assert deployment is not None and deployment["spec"]["replicas"] == 2
            assert _get(api, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{name}") is not None
            role = _get(api, f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
            component = name.removeprefix("durapod-")
            assert role is not None
            assert role["rules"] == [r.manifest() for r in permissions.COMPONENTS[component]]
            assert _get(api, f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
        assert _get(api, f"{apps}/statefulsets/durapod-postgres") is not None
        token = _secret(api, "durapod-api-tokens", "tokens")
        password = _secret(api, "durapod-postgres", "password")
        assert len(token) == 48 and len(password) == 32

        wrong = helm(
            "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
            "--set", "api.replica=3", kubeconfig=kubeconfig, check=False,
        )  # fmt: skip
        assert wrong.returncode != 0 and "additional properties 'replica' not allowed" in (
            wrong.stderr
        )
        helm(
            "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
            "--set", "api.replicas=3", kubeconfig=kubeconfig,
        )  # fmt: skip
        upgraded = _get(api, f"{apps}/deployments/durapod-api")
        assert upgraded is not None and upgraded["spec"]["replicas"] == 3
        assert _secret(api, "durapod-api-tokens", "tokens") == token
        assert _secret(api, "durapod-postgres", "password") == password
        listed = json.loads(
            helm("list", "-n", NAMESPACE, "-o", "json", kubeconfig=kubeconfig).stdout
        )
        assert [(r["name"], r["revision"], r["status"]) for r in listed] == [
            (RELEASE, "2", "deployed")
        ]

        out = helm("uninstall", RELEASE, "-n", NAMESPACE, kubeconfig=kubeconfig).stdout
        assert "kept due to the resource policy" in out
        assert _get(api, f"{apps}/deployments/durapod-api") is None
        assert _get(api, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/durapod-api") is None
        assert _get(api, "/apis/rbac.authorization.k8s.io/v1/clusterroles/durapod-operator") is None
        assert _get(
            api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/taskruns.durapod.io"
        )
        assert _secret(api, "durapod-postgres", "password") == password


def test_helm_install_refuses_a_mistyped_key_with_the_schemas_message(
    local_cluster: LocalCluster,
) -> None:
    result = helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
        "--set", "postgres.bundled.enabled=true", "--set", "networkPolicy.enable=false",
        kubeconfig=local_cluster.kubeconfig, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "additional properties 'enable' not allowed" in result.stderr
    assert helm("list", "-A", "-q", kubeconfig=local_cluster.kubeconfig).stdout.strip() == ""


# -- the chart's pods, run as processes ---------------------------------------------------


class ChartProcess:
    """One container of a Deployment the chart installed, run here as a process: its
    command (``python`` being this interpreter), its env with ``secretKeyRef`` resolved
    from the stand-in, and a kubeconfig holding a token of its pod's ServiceAccount."""

    def __init__(self, api: httpx.Client, url: str, deployment: Obj, home: Path) -> None:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]["template"]["spec"]
        self.container: Obj = spec["containers"][0]
        self.log = home / f"{name}.log"
        account = spec["serviceAccountName"]
        answer = api.post(
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        assert answer.status_code == 201, answer.text
        kubeconfig = home / f"kubeconfig-{name}"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": url}}],
                    "users": [{"name": "u", "user": {"token": answer.json()["status"]["token"]}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        environment = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "KUBECONFIG": str(kubeconfig),
        }
        for item in self.container["env"]:
            if "value" in item:
                environment[item["name"]] = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                environment[item["name"]] = _secret(api, ref["name"], ref["key"])
        command = self.container["command"]
        assert command[0] == "python"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *command[1:]],
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def probe_url(self, probe: str) -> str:
        """Where the kubelet would send the container's ``probe``."""
        get = self.container[probe]["httpGet"]
        port = next(p["containerPort"] for p in self.container["ports"] if p["name"] == get["port"])
        return f"http://127.0.0.1:{port}{get['path']}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                return all(
                    httpx.get(self.probe_url(p), timeout=5).status_code == 200
                    for p in ("livenessProbe", "readinessProbe")
                )
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, f"{self.log.stem} to pass its probes")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def served_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, kubelet=True, request_log=True)
    yield cluster
    cluster.close()


def test_the_charts_operator_and_api_serve_watch_namespaces_under_its_roles(
    served_cluster: LocalCluster, postgres: PostgresServer
) -> None:
    """With ``watchNamespaces: [team-a]`` the chart grants Roles in team-a and ClusterRoles
    only for what is cluster-scoped. The operator and the API, run with the chart's
    commands, environment (``DATABASE_URL=postgresql://`` plus libpq's ``PG*`` from the
    Secret) and ServiceAccounts, pass their probes, run a TaskRun in team-a to Succeeded, a
    trigger through the API too, leave team-b alone, and are never refused a request."""
    cluster = served_cluster
    dsn = urlsplit(postgres.create_database("chart_watch"))
    home = Path(tempfile.mkdtemp(prefix="durapod-chart-"))
    api_port, health_port = free_port(), free_port()
    processes: list[ChartProcess] = []
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        try:
            _namespaces(admin, NAMESPACE, "team-a", "team-b")
            secret = {"username": dsn.username or "postgres", "password": "unused-trust-auth"}
            _create(
                admin,
                f"/api/v1/namespaces/{NAMESPACE}/secrets",
                {"metadata": {"name": "durapod-db"}, "stringData": secret},
            )
            values = values_file(
                merge(
                    EXTERNAL,
                    {
                        "watchNamespaces": ["team-a"],
                        "postgres": {
                            "host": dsn.hostname,
                            "port": dsn.port,
                            "database": dsn.path.lstrip("/"),
                            "sslmode": "disable",
                        },
                        # No replicas: the processes below are the pods (a Deployment
                        # controller, were there one, starts none beside them).
                        "api": {"replicas": 0, "port": api_port, "tokens": {"generate": True}},
                        "operator": {
                            "replicas": 0,
                            "healthPort": health_port,
                            "apiURL": f"http://127.0.0.1:{api_port}",
                        },
                    },
                )
            )
            helm(
                "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(values),
                kubeconfig=cluster.kubeconfig,
            )  # fmt: skip
            values.unlink()
            for name in ("durapod-api", "durapod-operator"):
                deployment = _get(admin, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
                assert deployment is not None
                processes.append(ChartProcess(admin, cluster.url, deployment, home))
            for process in processes:
                process.wait_ready()

            cluster.kubectl(
                "apply", "-n", "team-b", "-f", "-",
                input=json.dumps(definition("hello", "examples.hello.tasks:hello")),
            )  # fmt: skip
            cluster.kubectl(
                "apply", "-n", "team-b", "-f", "-",
                input=json.dumps(taskrun("elsewhere", "hello", {"name": "b"})),
            )  # fmt: skip
            cluster.kubectl(
                "apply", "-n", "team-a", "-f", "-",
                input=json.dumps(definition("hello", "examples.hello.tasks:hello")),
            )  # fmt: skip
            cluster.kubectl(
                "apply", "-n", "team-a", "-f", "-",
                input=json.dumps(taskrun("first", "hello", {"name": "a"})),
            )  # fmt: skip

            def phase(namespace: str, name: str) -> str | None:
                run = _get(admin, f"/apis/durapod.io/v1/namespaces/{namespace}/taskruns/{name}")
                return ((run or {}).get("status") or {}).get("phase")

            wait_for(lambda: phase("team-a", "first") == "Succeeded", 90, "team-a's run")
            token = _secret(admin, "durapod-api-tokens", "tokens")
            started = httpx.post(
                f"http://127.0.0.1:{api_port}/v1/namespaces/team-a/tasks/hello/runs",
                json={"payload": {"name": "http"}},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert started.status_code == 202, started.text
            name = started.json()["name"]
            wait_for(lambda: phase("team-a", name) == "Succeeded", 90, "the API's run")
            assert phase("team-b", "elsewhere") is None
        finally:
            for process in processes:
                process.stop()
            shutil.rmtree(home, ignore_errors=True)
    assert cluster.request_log is not None
    theirs = [
        e
        for e in read_request_log(cluster.request_log)
        if str(e.get("user", "")).startswith(f"system:serviceaccount:{NAMESPACE}:")
    ]
    refused = [e for e in theirs if e["decision"] != "allow"]
    assert refused == []
    made = {
        (e["user"].rsplit(":", 1)[1], e["verb"], e["resource"], e.get("namespace")) for e in theirs
    }
    assert ("durapod-operator", "create", "pods", "team-a") in made
    assert ("durapod-api", "create", "taskruns", "team-a") in made
    assert not [m for m in made if m[3] == "team-b"]


def test_watch_namespaces_are_names_not_kopf_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart makes a Role per name; a glob would match namespaces no Role covers."""
    monkeypatch.setenv("DURAPOD_WATCH_NAMESPACES", " team-a,team-b,team-a ,")
    assert watch_namespaces() == ("team-a", "team-b")
    monkeypatch.setenv("DURAPOD_WATCH_NAMESPACES", "team-*")
    with pytest.raises(SystemExit, match="names, not patterns: team-\\*"):
        watch_namespaces()
    monkeypatch.delenv("DURAPOD_WATCH_NAMESPACES")
    assert watch_namespaces() == ()
