"""``durapod dev``: everything on one machine, started and stopped together.

A private PostgreSQL, the stand-in API server and kubelet (in this process, over real
HTTP on loopback), and the operator and the API as their own processes, exactly as they
would run in a cluster: each as its own ServiceAccount, with the permissions durapod
ships. Writes ``HOME/kubeconfig`` (the admin's) and ``HOME/env`` for the user, and logs
every API request to ``HOME/apiserver-requests.jsonl``.

With ``install="helm"`` (``durapod dev --install helm``) the operator and the API are not
processes of the stack: ``helm/durapod`` is installed on the stand-in with the real Helm,
and the kubelet runs the chart's pods (see :mod:`durapod.dev.chartinstall`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web

from durapod import permissions
from durapod.dev import apiserver, chartinstall
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.controllers import ControllerManager
from durapod.dev.kubelet import Kubelet, NodeSettings
from durapod.dev.postgres import PostgresServer, free_port
from durapod.resources import crds
from durapod.store import migrate

log = logging.getLogger("durapod.dev")
STOP_SECONDS = 10.0
#: Where the operator's and the API's ServiceAccounts live, as the chart installs them.
SYSTEM_NAMESPACE = "durapod-system"
#: How long the operator's and the API's tokens last (a year: see _service_accounts).
TOKEN_SECONDS = 365 * 24 * 3600


@dataclass
class Stack:
    home: Path
    workdir: Path
    #: Extra PostgreSQL settings (tests turn fsync off).
    pg_settings: dict[str, str] = field(default_factory=dict)
    #: Operator replicas (plain replicas: no leader).
    operators: int = 1
    #: API replicas; pods and the env file use the first.
    apis: int = 1
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    #: The node pods run on: its capacity, its images, how image pulls back off.
    node: NodeSettings = field(default_factory=NodeSettings)
    #: How the operator and the API run: ``""``, as processes of the stack; ``"helm"``,
    #: as the pods of ``helm/durapod`` installed by the real Helm.
    install: str = ""
    cluster: Cluster = field(init=False)
    #: The API server over plain HTTP (no token: the admin), for tools on this machine.
    kube_url: str = field(init=False, default="")
    #: The API server over HTTPS, as the kubeconfigs name it.
    secure_url: str = field(init=False, default="")
    #: The API server as pods reach it (``KUBERNETES_SERVICE_HOST``/``_PORT``).
    cluster_url: str = field(init=False, default="")
    api_url: str = field(init=False, default="")
    api_urls: list[str] = field(init=False, default_factory=list)
    #: The first operator's Prometheus metrics (``DURAPOD_OPERATOR_METRICS_URL``).
    operator_metrics_url: str = field(init=False, default="")
    database_url: str = field(init=False, default="")
    processes: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)
    #: How often each component was restarted after dying.
    restarts: dict[str, int] = field(init=False, default_factory=dict)
    _commands: dict[str, tuple[list[str], dict[str, str], Path]] = field(
        init=False, default_factory=dict
    )
    _supervisor: asyncio.Task[None] | None = field(init=False, default=None)
    _postgres: PostgresServer | None = field(init=False, default=None)
    _runner: web.AppRunner | None = field(init=False, default=None)
    kubelet: Kubelet | None = field(init=False, default=None)
    controllers: ControllerManager | None = field(init=False, default=None)
    _kubelet_task: asyncio.Task[None] | None = field(init=False, default=None)

    @property
    def kubeconfig(self) -> Path:
        """The user's kubeconfig: the admin, with full rights."""
        return self.home / "kubeconfig"

    @property
    def request_log(self) -> Path:
        """Every request the API server answered, with its user and RBAC decision."""
        return self.home / "apiserver-requests.jsonl"

    @property
    def values_file(self) -> Path:
        """With ``install="helm"``: the values the chart was installed with."""
        return self.home / chartinstall.VALUES_FILE

    async def start(self) -> None:
        if self.install not in ("", "helm"):
            raise ValueError(f"install must be '' or 'helm', not {self.install!r}")
        chart = chartinstall.chart_path(self.workdir) if self.install else None
        self.home.mkdir(parents=True, exist_ok=True)
        self._postgres = PostgresServer(self.home / "postgres", settings=self.pg_settings)
        self.database_url = await asyncio.to_thread(self._postgres.start)
        await asyncio.to_thread(migrate, self.database_url)
        self.cluster = Cluster(
            tokens={
                self.admin_token: {
                    "username": "durapod-dev-admin",
                    "uid": "durapod-dev-admin",
                    "groups": ["system:masters", "system:authenticated"],
                }
            }
        )
        crd_type = self.cluster.registry.find(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions"
        )
        assert crd_type is not None
        for manifest in crds.all_crds() if chart is None else ():  # else the chart's
            self.cluster.create(crd_type, "", manifest, Options())
        log_dir = self.home / "pod-logs"
        serving = await apiserver.serve(
            self.cluster, self.admin_token, log_dir, request_log=self.request_log
        )
        self._runner = serving.runner
        self.kube_url, self.secure_url = serving.url, serving.secure_url
        self.cluster_url = serving.cluster_url
        node = self.node
        if chart is not None:  # the chart's pods listen on the chart's ports, each its own
            image = {chartinstall.chart_image(chart): Path(sys.executable).parent}
            node = dataclasses.replace(
                node, pod_network="isolated", images={**node.images, **image}
            )
        if node.pod_network == "isolated":  # pods reach PostgreSQL as this machine does
            node = dataclasses.replace(node, host_ports=(*node.host_ports, self._postgres.port))
        self.kubelet = Kubelet(
            self.kube_url,
            self.admin_token,
            log_dir,
            self.workdir,
            node,
            cluster_url=self.cluster_url,
        )
        self._kubelet_task = asyncio.create_task(self.kubelet.run())
        # kube-controller-manager's part: Deployments, ReplicaSets, Endpoints.
        self.controllers = ControllerManager(self.kube_url, self.admin_token)
        self.controllers.start()
        self._write_kubeconfig()
        if chart is not None:
            await self._install_chart(chart)
            return
        kubeconfigs = await self._service_accounts()
        api_ports = [free_port() for _ in range(self.apis)]
        if (network := self.kubelet.network) is not None:
            for port in api_ports:
                network.reach("127.0.0.1", port)  # task pods call the API there
        self.api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
        self.api_url = self.api_urls[0]
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfigs["api"]),
            "DATABASE_URL": self.database_url,
            "DURAPOD_API_URL": self.api_url,
            "DURAPOD_API_TOKENS": self.api_token,
        }
        logs = self.home / "logs"
        logs.mkdir(exist_ok=True)
        for replica, port in enumerate(api_ports, 1):
            argv = [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", str(port)]
            self._spawn("api" if self.apis == 1 else f"api-{replica}", argv, env, logs)
        health = {}
        for replica in range(1, self.operators + 1):
            name = "operator" if self.operators == 1 else f"operator-{replica}"
            health[name] = f"http://127.0.0.1:{free_port()}/healthz"
            metrics = f"127.0.0.1:{free_port()}"  # each its own: replicas share the host
            self.operator_metrics_url = self.operator_metrics_url or f"http://{metrics}/metrics"
            self._spawn(
                name,
                [sys.executable, "-m", "durapod.operator"],
                {
                    **env,
                    "KUBECONFIG": str(kubeconfigs["operator"]),
                    "DURAPOD_OPERATOR_HEALTH_URL": health[name],
                    "DURAPOD_OPERATOR_METRICS_ADDR": metrics,
                },
                logs,
            )
        for replica, url in enumerate(self.api_urls, 1):
            await self._wait_healthy(f"{url}/readyz", "api" if self.apis == 1 else f"api-{replica}")
        for name, url in health.items():
            await self._wait_healthy(url, name)
        self._supervisor = asyncio.create_task(self._supervise())
        self._write_env()

    def _write_env(self) -> None:
        (self.home / "env").write_text(
            f"export KUBECONFIG={self.kubeconfig}\n"
            f"export DURAPOD_API_URL={self.api_url}\n"
            f"export DURAPOD_API_URLS={','.join(self.api_urls)}\n"
            f"export DURAPOD_TOKEN={self.api_token}\n"
            f"export DATABASE_URL={self.database_url}\n"
            f"export DURAPOD_API_METRICS_URL={self.api_url}/metrics\n"
            f"export DURAPOD_OPERATOR_METRICS_URL={self.operator_metrics_url}\n"
        )

    async def _install_chart(self, chart: Path) -> None:
        """``helm install`` of ``chart`` with this machine's values (``dev-values.yaml``),
        waiting for its Deployments; then the API's Service is served on this machine's
        loopback (``DURAPOD_API_URL``) and its generated token is ``DURAPOD_TOKEN``; so is
        the operator's metrics port (``DURAPOD_OPERATOR_METRICS_URL``)."""
        assert self._postgres is not None and self.kubelet is not None
        namespaces = self.cluster.registry.find("", "v1", "namespaces")
        secrets_type = self.cluster.registry.find("", "v1", "secrets")
        services = self.cluster.registry.find("", "v1", "services")
        assert namespaces and secrets_type and services
        namespace = chartinstall.NAMESPACE
        self.cluster.create(namespaces, "", {"metadata": {"name": namespace}}, Options())
        # The dev server trusts loopback connections: the password is never checked.
        credentials = {"username": "postgres", "password": "unused-trust-auth"}
        self.cluster.create(
            secrets_type,
            namespace,
            {"metadata": {"name": chartinstall.DATABASE_SECRET}, "stringData": credentials},
            Options(),
        )
        database = self.database_url.rsplit("/", 1)[1]
        values = chartinstall.write_values(
            self.home,
            chartinstall.dev_values(self._postgres.port, database, self.operators, self.apis),
        )
        helm = chartinstall.Helm(self.kubeconfig, self.home)
        try:
            await helm.run(
                "install", chartinstall.RELEASE, str(chart), "-n", namespace, "-f", str(values),
                "--wait", "--timeout", chartinstall.INSTALL_TIMEOUT,
            )  # fmt: skip
        except RuntimeError as exc:
            raise RuntimeError(
                f"{exc}\nthe pods' logs are in {self.home / 'pod-logs'}; "
                f"`kubectl -n {namespace} get pods` while it runs"
            ) from exc
        tokens = self.cluster.storage.get(secrets_type.key, namespace, "durapod-api-tokens")
        assert tokens is not None, "the chart made no API token Secret"
        self.api_token = base64.b64decode(tokens["data"]["tokens"]).decode().split(",")[0]
        network = self.kubelet.network
        assert network is not None
        service = self.cluster.storage.get(services.key, namespace, "durapod-api")
        assert service is not None, "the chart made no API Service"
        port = service["spec"]["ports"][0]["port"]
        local = await network.expose(namespace, "durapod-api", port)
        self.api_urls = [f"http://127.0.0.1:{local}"]
        self.api_url = self.api_urls[0]
        # The operator's metrics Service: with several replicas, one of them answers.
        operator = self.cluster.storage.get(services.key, namespace, "durapod-operator")
        assert operator is not None, "the chart made no operator Service"
        port = next(p["port"] for p in operator["spec"]["ports"] if p["name"] == "metrics")
        local = await network.expose(namespace, "durapod-operator", port)
        self.operator_metrics_url = f"http://127.0.0.1:{local}/metrics"
        self._write_env()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        with (logs / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._commands[name] = (argv, env, logs)

    async def _supervise(self) -> None:
        """Restart a component that dies, as a Deployment's ReplicaSet would."""
        while True:
            await asyncio.sleep(0.2)
            for name, process in list(self.processes.items()):
                if process.poll() is not None:
                    log.warning("the %s exited (%s); restarting it", name, process.returncode)
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    self._spawn(name, *self._commands[name])

    async def _wait_healthy(self, url: str, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(
                        f"the {name} exited during start-up; see "
                        f"{self.home / 'logs' / (name + '.log')}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the {name} did not become healthy within {timeout:.0f}s")

    def _write_kubeconfig(
        self,
        path: Path | None = None,
        user: str = "durapod-dev-admin",
        token: str = "",
        namespace: str = "default",
    ) -> None:
        """A kubeconfig for the stand-in: the user's (the admin's) unless told otherwise.

        It names the API server over HTTPS, trusting the cluster's CA, with a bearer
        token, as a cluster's kubeconfig does. The user's also has a context
        ``durapod-dev-insecure``: the plain HTTP port, where no token is the admin.
        """
        ca = base64.b64encode(self.cluster.authority.cert_pem).decode()
        text = (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: durapod-dev\n  cluster:\n    server: {self.secure_url}\n"
            f"    certificate-authority-data: {ca}\n"
        )
        if path is None:
            text += f"- name: durapod-dev-insecure\n  cluster:\n    server: {self.kube_url}\n"
        text += f"users:\n- name: {user}\n  user:\n    token: {token or self.admin_token}\n"
        if path is None:
            text += "- name: durapod-dev-insecure\n  user: {}\n"
        text += (
            "contexts:\n- name: durapod-dev\n  context:\n    cluster: durapod-dev\n"
            f"    user: {user}\n    namespace: {namespace}\n"
        )
        if path is None:
            text += (
                "- name: durapod-dev-insecure\n  context:\n    cluster: durapod-dev-insecure\n"
                f"    user: durapod-dev-insecure\n    namespace: {namespace}\n"
            )
        (path or self.kubeconfig).write_text(text + "current-context: durapod-dev\n")

    async def _service_accounts(self) -> dict[str, Path]:
        """Run the operator and the API as on a cluster: each as its ServiceAccount in
        ``durapod-system``, granted exactly ``durapod.permissions``; returns the
        kubeconfig of each, holding a token from a TokenRequest.

        On a cluster the token is a projected volume the kubelet rotates (an hour, by
        default); here it is made once, for a year, and the processes never re-read it.
        """
        namespaces = self.cluster.registry.find("", "v1", "namespaces")
        accounts = self.cluster.registry.find("", "v1", "serviceaccounts")
        roles = self.cluster.registry.find("rbac.authorization.k8s.io", "v1", "clusterroles")
        bindings = self.cluster.registry.find(
            "rbac.authorization.k8s.io", "v1", "clusterrolebindings"
        )
        assert namespaces and accounts and roles and bindings
        namespace = SYSTEM_NAMESPACE
        self.cluster.create(namespaces, "", {"metadata": {"name": namespace}}, Options())
        for role in permissions.cluster_roles():
            self.cluster.create(roles, "", role, Options())
        for binding in permissions.cluster_role_bindings(namespace):
            self.cluster.create(bindings, "", binding, Options())
        kubeconfigs = {}
        async with httpx.AsyncClient(
            base_url=self.kube_url, headers={"Authorization": f"Bearer {self.admin_token}"}
        ) as client:
            for component in permissions.COMPONENTS:
                name = permissions.role_name(component)
                self.cluster.create(accounts, namespace, {"metadata": {"name": name}}, Options())
                answer = await client.post(
                    f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                    json={
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenRequest",
                        "spec": {"expirationSeconds": TOKEN_SECONDS},
                    },
                )
                answer.raise_for_status()
                kubeconfigs[component] = self.home / f"kubeconfig-{component}"
                self._write_kubeconfig(
                    kubeconfigs[component], name, answer.json()["status"]["token"], namespace
                )
        return kubeconfigs

    async def stop(self) -> None:
        """Stop everything started, children first; leaves no process behind."""
        if self._supervisor is not None:
            self._supervisor.cancel()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.to_thread(process.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if self.controllers is not None:
            await self.controllers.stop()
        if self._kubelet_task is not None:
            self._kubelet_task.cancel()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.stop)
