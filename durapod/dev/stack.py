"""``durapod dev``: everything on one machine, started and stopped together.

A private PostgreSQL, the stand-in API server and kubelet (in this process, over real
HTTP on loopback), and the operator and the API as their own processes, exactly as they
would run in a cluster. Writes ``HOME/kubeconfig`` and ``HOME/env`` for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from durapod.dev import apiserver
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.kubelet import Kubelet
from durapod.dev.postgres import PostgresServer, free_port
from durapod.resources import crds
from durapod.store import migrate

log = logging.getLogger("durapod.dev")
STOP_SECONDS = 10.0


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
    run_token_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    cluster: Cluster = field(init=False)
    kube_url: str = field(init=False, default="")
    api_url: str = field(init=False, default="")
    api_urls: list[str] = field(init=False, default_factory=list)
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
    _kubelet_task: asyncio.Task[None] | None = field(init=False, default=None)

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    async def start(self) -> None:
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
        for manifest in crds.all_crds():
            self.cluster.create(crd_type, "", manifest, Options())
        log_dir = self.home / "pod-logs"
        self._runner, self.kube_url = await apiserver.start(self.cluster, self.admin_token, log_dir)
        self.kubelet = Kubelet(self.kube_url, self.admin_token, log_dir, self.workdir)
        self._kubelet_task = asyncio.create_task(self.kubelet.run())
        self._write_kubeconfig()
        api_ports = [free_port() for _ in range(self.apis)]
        self.api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
        self.api_url = self.api_urls[0]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "DATABASE_URL": self.database_url,
            "DURAPOD_API_URL": self.api_url,
            "DURAPOD_RUN_TOKEN_SECRET": self.run_token_secret,
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
            self._spawn(
                name,
                [sys.executable, "-m", "durapod.operator"],
                {**env, "DURAPOD_OPERATOR_HEALTH_URL": health[name]},
                logs,
            )
        for replica, url in enumerate(self.api_urls, 1):
            await self._wait_healthy(f"{url}/readyz", "api" if self.apis == 1 else f"api-{replica}")
        for name, url in health.items():
            await self._wait_healthy(url, name)
        self._supervisor = asyncio.create_task(self._supervise())
        (self.home / "env").write_text(
            f"export KUBECONFIG={self.kubeconfig}\n"
            f"export DURAPOD_API_URL={self.api_url}\n"
            f"export DURAPOD_API_URLS={','.join(self.api_urls)}\n"
            f"export DURAPOD_TOKEN={self.api_token}\n"
            f"export DATABASE_URL={self.database_url}\n"
        )

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

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: durapod-dev\n  cluster:\n    server: {self.kube_url}\n"
            f"users:\n- name: durapod-dev-admin\n  user:\n    token: {self.admin_token}\n"
            "contexts:\n- name: durapod-dev\n  context:\n    cluster: durapod-dev\n"
            "    user: durapod-dev-admin\n    namespace: default\n"
            "current-context: durapod-dev\n"
        )

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
        if self._kubelet_task is not None:
            self._kubelet_task.cancel()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.stop)
