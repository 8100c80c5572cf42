"""The API through PostgreSQL outages, over real HTTP: ``python -m durapod.api`` against
the stand-in cluster and a private PostgreSQL server this module stops and starts (the
session's shared server is left alone, so no other test sees the outage).

While the database is down: /healthz stays 200, /readyz and every route that needs the
database answer 503 with Retry-After (never a 500), and a trigger creates no TaskRun.
Once it is back: /readyz is 200 and a trigger retried with its key makes exactly one run.
No operator runs here: runs stay Pending, which is all these tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from durapod import store
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.postgres import PostgresServer, free_port
from durapod.resources import crds
from durapod.runner.api import RunApi
from durapod.store import runs
from tests.conftest import open_dir
from tests.helpers import TOKEN, LocalCluster, definition, wait_for

API_TOKEN = "outage-api-token"
HOOK_SECRET = "outage-hook-secret"
NS = "/v1/namespaces/default"


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own: stopping it disturbs no other test."""
    base = open_dir("durapod-outage-pg-")
    server = PostgresServer(base / "data", settings={"fsync": "off", "full_page_writes": "off"})
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def outage(pg: PostgresServer, mode: str = "fast") -> Iterator[None]:
    """PostgreSQL stopped for the block; started again however the block ends."""
    pg.stop(mode)
    try:
        yield
    finally:
        pg.start()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("outage-cluster"))

    def install(c: Cluster) -> None:
        crd_type = c.registry.find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crd_type is not None
        for manifest in crds.all_crds():
            c.create(crd_type, "", manifest, Options())

    local.read(install)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hooks"},
        "stringData": {"secret": HOOK_SECRET},
    }
    hooked = definition(
        "hooked", "tests.tasks:echo", webhook={"provider": "generic", "secretName": "hooks"}
    )
    docs = [secret, definition("double", "tests.tasks:double"), hooked]
    local.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    yield local
    local.close()


class Api:
    """``python -m durapod.api`` as a Deployment runs it."""

    def __init__(self, dsn: str, cluster: LocalCluster) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", port],
            env={
                **os.environ,
                "DATABASE_URL": dsn,
                "DURAPOD_API_TOKENS": API_TOKEN,
                "DURAPOD_DATABASE_TIMEOUT": "1",
                "KUBECONFIG": str(cluster.kubeconfig),
            },
        )
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
        )

    def status(self, path: str) -> int | None:
        if self.process.poll() is not None:
            raise AssertionError(f"the API exited with {self.process.returncode}")
        try:
            return self.client.get(path).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: self.status("/readyz") == 200, timeout, "/readyz to answer 200")

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(15)


@pytest.fixture(scope="module")
def api(pg: PostgresServer, cluster: LocalCluster) -> Iterator[Api]:
    server = Api(pg.create_database("outage_api"), cluster)
    server.wait_ready()
    yield server
    server.close()


def _taskruns(cluster: LocalCluster) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{cluster.url}/apis/durapod.io/v1/namespaces/default/taskruns",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    response.raise_for_status()
    return list(response.json()["items"])


def _assert_unavailable(response: httpx.Response) -> None:
    """A 503 a client knows to retry: Retry-After and a problem saying why."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 5
    detail = response.json()["detail"]
    assert detail.startswith("the database is unavailable: ") and detail.endswith("; retry later")


def _signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Durapod-Signature": f"sha256={digest}", "X-Durapod-Delivery": "delivery-1"}


def test_with_postgres_down_requests_get_503_and_a_retried_key_makes_one_run(
    api: Api, pg: PostgresServer, cluster: LocalCluster
) -> None:
    before = api.client.post(f"{NS}/tasks/double/runs", json={"payload": {"n": 1}})
    assert before.status_code == 202
    existing = before.json()["name"]
    # Any pod's token: with the database down, which run it speaks for cannot be looked up.
    token = cluster.pod_token("default", f"{existing}-1")
    taskruns = {r["metadata"]["name"] for r in _taskruns(cluster)}
    keyed = {"payload": {"n": 2}, "idempotencyKey": "order-1"}
    with outage(pg):
        assert api.status("/healthz") == 200
        _assert_unavailable(api.client.get("/readyz"))
        _assert_unavailable(api.client.post(f"{NS}/tasks/double/runs", json=keyed))
        _assert_unavailable(api.client.post(f"{NS}/tasks/double/runs", json={"payload": {}}))
        batch = {"runs": [{"task": "double"}, {"task": "double", "idempotencyKey": "b"}]}
        _assert_unavailable(api.client.post(f"{NS}/runs/batch", json=batch))
        _assert_unavailable(
            api.client.post(f"{NS}/runs/batch", json={"runs": [{"task": "double"}]})
        )
        _assert_unavailable(api.client.get(f"{NS}/runs"))
        _assert_unavailable(api.client.get(f"{NS}/runs/{existing}"))
        _assert_unavailable(api.client.get(f"{NS}/runs/{existing}", params={"wait": 1}))
        _assert_unavailable(api.client.post(f"{NS}/runs/{existing}/replay"))
        _assert_unavailable(api.client.post(f"{NS}/runs/{existing}/cancel"))
        _assert_unavailable(api.client.get(f"{NS}/queues"))
        hook = b'{"event": "push"}'
        _assert_unavailable(
            api.client.post("/webhooks/default/hooked", content=hook, headers=_signed(hook))
        )
        # A bad signature needs no database: still a 401.
        assert api.client.post("/webhooks/default/hooked", content=hook).status_code == 401
        internal = f"/internal/v1/runs/{before.json()['id']}"
        auth = {"Authorization": f"Bearer {token}"}
        _assert_unavailable(api.client.get(f"{internal}/context", headers=auth))
        checkpoint = {"step": "s", "seq": 0, "output": 1}
        _assert_unavailable(
            api.client.post(f"{internal}/checkpoints", json=checkpoint, headers=auth)
        )
        child = {"task": "double", "name": "child-of-outage", "payload": {}}
        _assert_unavailable(api.client.post(f"{internal}/children", json=child, headers=auth))
        # Nothing refused made a TaskRun.
        assert {r["metadata"]["name"] for r in _taskruns(cluster)} == taskruns
    api.wait_ready()
    first = api.client.post(f"{NS}/tasks/double/runs", json=keyed)
    assert first.status_code == 202 and first.json()["duplicate"] is False
    again = api.client.post(f"{NS}/tasks/double/runs", json=keyed)
    assert again.status_code == 200 and again.json()["name"] == first.json()["name"]
    owners = [r for r in _taskruns(cluster) if r["spec"].get("idempotencyKey") == "order-1"]
    assert [r["metadata"]["name"] for r in owners] == [first.json()["name"]]
    # Recorded before the 202: GET and the list find it at once.
    got = api.client.get(f"{NS}/runs/{first.json()['name']}")
    assert got.status_code == 200
    assert got.json()["id"] == owners[0]["metadata"]["uid"] and got.json()["phase"] == "Pending"
    assert got.json()["payload"] == {"n": 2}
    listed = [r["name"] for r in api.client.get(f"{NS}/runs").json()["runs"]]
    assert first.json()["name"] in listed and existing in listed


def test_the_api_starts_while_postgres_is_down_and_is_ready_once_it_is_up(
    pg: PostgresServer, cluster: LocalCluster
) -> None:
    dsn = pg.create_database(f"outage_{uuid.uuid4().hex[:12]}")  # not migrated yet
    taskruns = len(_taskruns(cluster))
    with outage(pg, "immediate"):
        api = Api(dsn, cluster)
        try:
            wait_for(lambda: api.status("/healthz") == 200, 60, "/healthz with postgres down")
            ready = api.client.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"]
            _assert_unavailable(api.client.post(f"{NS}/tasks/double/runs", json={"payload": {}}))
            _assert_unavailable(api.client.get(f"{NS}/runs"))
            assert len(_taskruns(cluster)) == taskruns
        except BaseException:
            api.close()
            raise
    try:
        api.wait_ready()
        made = api.client.post(f"{NS}/tasks/double/runs", json={"payload": {"n": 4}})
        assert made.status_code == 202
        listed = api.client.get(f"{NS}/runs").json()["runs"]
        assert [r["name"] for r in listed] == [made.json()["name"]]
    finally:
        api.close()


def test_a_runner_write_during_an_outage_lands_once_after_recovery(
    api: Api, pg: PostgresServer, cluster: LocalCluster
) -> None:
    dsn = pg.dsn("outage_api")

    async def seed() -> uuid.UUID:
        pool = await store.open_pool(dsn)
        try:
            run_id = uuid.uuid4()
            run, _ = await runs.ensure(
                pool, run_id=run_id, namespace="default", name="w-1", task="t", payload={}, tags=[]
            )
            change = runs.Change(
                set={"definition": {}, "phase": "Running", "attempt": 1, "pods": 1},
                new_pod=runs.NewPod(idx=1, attempt=1, name="w-1-1", machine="small-1x"),
            )
            assert await runs.transition(pool, run, change) is not None
            return run_id
        finally:
            await pool.close()

    run_id = asyncio.run(seed())
    token = cluster.pod_token("default", "w-1-1")
    failures: list[BaseException] = []
    journal = RunApi(api.url, str(run_id), token, 1)

    def write() -> None:
        try:
            journal.record("fetch", 0, b'{"rows":1}')
        except BaseException as exc:
            failures.append(exc)
        finally:
            journal.close()

    writer = threading.Thread(target=write, daemon=True)
    with outage(pg, "immediate"):
        writer.start()
        probe = api.client.get(
            f"/internal/v1/runs/{run_id}/context", headers={"Authorization": f"Bearer {token}"}
        )
        _assert_unavailable(probe)  # the API sees the outage the writer is retrying through
        assert writer.is_alive()
    writer.join(150)
    assert not writer.is_alive() and failures == []
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT step, output FROM checkpoints WHERE run_id = %s", (run_id,)
        ).fetchall()
    assert rows == [("fetch", {"rows": 1})]
