"""Shared test helpers: waiting on conditions, the stand-in server in a thread, kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from durapod import auth
from durapod.dev import apiserver
from durapod.dev.apiserver.cluster import Cluster
from durapod.dev.controllers import ControllerManager
from durapod.dev.kubelet import Kubelet, NodeSettings
from durapod.operator.pods import LABEL_RUN, run_label

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "test-admin-token"


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class LocalCluster:
    """The stand-in API server (and optionally the kubelet) on a private event loop thread."""

    def __init__(
        self,
        home: Path,
        kubelet: bool = False,
        request_log: bool = False,
        controllers: bool = False,
        node: NodeSettings | None = None,
    ) -> None:
        self.home = home
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster: Cluster = self.call(self._make_cluster())
        self.log_dir = home / "pod-logs"
        #: Every request answered, with its user and RBAC decision (when asked for).
        self.request_log = home / "apiserver-requests.jsonl" if request_log else None
        serving = self.call(
            apiserver.serve(self.cluster, TOKEN, self.log_dir, request_log=self.request_log)
        )
        self._runner, self.url = serving.runner, serving.url
        #: HTTPS (trusting the cluster's CA), and the address pods are given.
        self.secure_url, self.cluster_url = serving.secure_url, serving.cluster_url
        self.kubelet: Kubelet | None = None
        if kubelet:
            self.kubelet = Kubelet(
                self.url, TOKEN, self.log_dir, REPO, node, cluster_url=self.cluster_url
            )
            self._kubelet_task = self.call(self._spawn(self.kubelet.run()))
        #: Deployment, ReplicaSet and Endpoints controllers (when asked for).
        self.controllers: ControllerManager | None = None
        if controllers:
            self.controllers = ControllerManager(self.url, TOKEN)
            self.call(self._start_controllers(self.controllers))
        self.kubeconfig = home / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: t, cluster: {{server: '{self.url}'}}}}]\n"
            f"users: [{{name: t, user: {{token: {TOKEN}}}}}]\n"
            "contexts: [{name: t, context: {cluster: t, user: t, namespace: default}}]\n"
            "current-context: t\n"
        )

    async def _make_cluster(self) -> Cluster:
        return Cluster(tokens={TOKEN: {"username": "admin", "groups": ["system:masters"]}})

    async def _start_controllers(self, manager: ControllerManager) -> None:
        manager.start()
        await manager.synced()

    async def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.create_task(coro)

    def pod_token(self, namespace: str, pod: str, audience: str = auth.AUDIENCE) -> str:
        """A token bound to pod ``namespace/pod`` (made here if absent), as the kubelet
        asks for a projected ServiceAccount token."""
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            created = api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
            assert created.status_code in (201, 409), created.text
            manifest = {
                "metadata": {"name": pod},
                "spec": {"containers": [{"name": "task", "image": "durapod:dev"}]},
            }
            made = api.post(f"/api/v1/namespaces/{namespace}/pods", json=manifest)
            assert made.status_code in (201, 409), made.text
            uid = api.get(f"/api/v1/namespaces/{namespace}/pods/{pod}").json()["metadata"]["uid"]
            request = {
                "spec": {
                    "audiences": [audience],
                    "expirationSeconds": 600,
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid},
                }
            }
            answer = api.post(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/default/token", json=request
            )
            assert answer.status_code == 201, answer.text
            token: str = answer.json()["status"]["token"]
            return token

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def read(self, fn: Callable[[Cluster], T]) -> T:
        """Run ``fn(cluster)`` on the server's loop (the cluster is not thread-safe)."""

        async def go() -> T:
            return fn(self.cluster)

        return self.call(go())

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, self.home / "kube-cache", *args, input=input, check=check)

    async def _drain(self) -> None:
        """End whatever still runs on the loop (a proxied connection, a probe), so its
        sockets are closed before the loop is."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the closed transports' callbacks run now

    def close(self) -> None:
        if self.controllers is not None:
            self.call(self.controllers.stop())
        if self.kubelet is not None:
            self._kubelet_task.cancel()
            self.call(self.kubelet.stop())
        self.call(self._runner.cleanup())
        self.call(self._drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def kubectl(
    kubeconfig: Path, cache: Path, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real, pinned kubectl binary."""
    result = subprocess.run(
        [str(BIN / "kubectl"), "--cache-dir", str(cache), *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


class DevProcess:
    """``durapod dev`` as a user runs it: a subprocess, stopped with SIGINT."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(BIN / "durapod"), "dev", "--home", str(home), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 90.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and text not in self.output:
                raise AssertionError(f"durapod dev exited early:\n{self.output}")
            return text in self.output

        wait_for(seen, timeout, f"{text!r} from durapod dev")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return kubectl(
            self.home / "kubeconfig", self.home / "kube-cache", *args, input=input, check=check
        )

    @property
    def kube_url(self) -> str:
        """The stand-in's plain HTTP address (the kubeconfig's ``durapod-dev-insecure``
        context), where a request without a token is the admin's."""
        text = (self.home / "kubeconfig").read_text()
        return "http://" + text.split("server: http://", 1)[1].split()[0]

    def get(self, path: str, **params: Any) -> Any:
        """GET from the stand-in API server (faster than kubectl for polling)."""
        response = httpx.get(self.kube_url + path, params=params, timeout=30)
        return response.json() if response.status_code == 200 else None

    def taskrun(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        run: dict[str, Any] | None = self.get(
            f"/apis/durapod.io/v1/namespaces/{namespace}/taskruns/{name}"
        )
        return run

    def pods_of(self, run: str, namespace: str = "default") -> list[dict[str, Any]]:
        listing = self.get(
            f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"{LABEL_RUN}={run_label(run)}"
        )
        return list(listing["items"])

    def wait_phase(self, name: str, *phases: str, timeout: float = 60.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.taskrun(name)
            phase = ((run or {}).get("status") or {}).get("phase")
            return run if phase in phases else None

        return wait_for(reached, timeout, f"run {name} to reach {phases}")

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

    def trigger(
        self, task: str, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> str:
        """Trigger a run of ``task`` in ``default`` over HTTP, with the env file's URL and
        token; the run's name."""
        env = self.env()
        answer = httpx.post(
            f"{env['DURAPOD_API_URL']}/v1/namespaces/default/tasks/{task}/runs",
            json={"payload": payload},
            headers={"Authorization": f"Bearer {env['DURAPOD_TOKEN']}", **(headers or {})},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        name: str = answer.json()["name"]
        return name

    def env(self) -> dict[str, str]:
        pairs = (
            line.removeprefix("export ").split("=", 1)
            for line in (self.home / "env").read_text().splitlines()
        )
        return dict(pairs)

    def durapod(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``durapod`` command (``runs get``, ``trigger``, ...) as a user runs it
        after ``source .durapod/env``."""
        return subprocess.run(
            [str(BIN / "durapod"), *args],
            env={**os.environ, **self.env(), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(60)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def definition(name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskDefinition",
        "metadata": {"name": name},
        "spec": {"image": "durapod:dev", "entrypoint": entrypoint, **spec},
    }


def bare_taskrun(name: str, **meta: Any) -> dict[str, Any]:
    """A TaskRun of ``hello`` with these metadata fields: what the stand-in's API tests
    store, list and watch."""
    return {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "metadata": {"name": name, **meta},
        "spec": {"task": "hello"},
    }


def taskrun(name: str, task: str, payload: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "metadata": {"name": name},
        "spec": {"task": task, "payload": payload, **spec},
    }


@contextlib.contextmanager
def running_dev(
    prefix: str, *args: str, env: dict[str, str] | None = None, start_timeout: float = 90.0
) -> Iterator[DevProcess]:
    """``durapod dev`` in a fresh home, stopped (and checked to stop cleanly) afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)  # the postgres user must reach its data directory
    process = DevProcess(home, *args, env=env)
    try:
        process.wait_for_output("durapod dev is ready", start_timeout)
        yield process
    finally:
        assert process.stop() == 0
        shutil.rmtree(home, ignore_errors=True)


def operator_pid(dev: DevProcess) -> int | None:
    """The pid of the operator process ``durapod dev`` runs (None while it restarts)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            parent = int(Path(cmdline.parent, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == dev.process.pid and b"durapod.operator" in args:
            return int(cmdline.parent.name)
    return None
