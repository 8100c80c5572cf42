"""The runner's endpoints of the API over real HTTP: per-run tokens, outcomes, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from durapod import store
from durapod.api.pod_tokens import CACHE_SECONDS
from durapod.dev.postgres import free_port
from durapod.store import checkpoints, pods, runs
from tests.helpers import TOKEN, LocalCluster, wait_for

#: Each run's pod token (its pod is r<i>-1 in team-a), made by the ``api`` fixture.
_TOKENS: dict[uuid.UUID, str] = {}


@pytest.fixture
def api(database: str, local_cluster: LocalCluster) -> Iterator[tuple[str, list[uuid.UUID]]]:
    async def seed() -> list[uuid.UUID]:
        store.migrate(database)
        pool = await store.open_pool(database)
        ids = [uuid.uuid4(), uuid.uuid4()]
        for i, run_id in enumerate(ids):
            run, _ = await runs.ensure(
                pool,
                run_id=run_id,
                namespace="team-a",
                name=f"r{i}",
                task="t",
                payload={"n": i},
                tags=[],
            )
            change = runs.Change(
                set={
                    "definition": {"checkpointSizeLimit": 100},
                    "phase": "Running",
                    "attempt": 1,
                    "pods": 1,
                },
                new_pod=runs.NewPod(idx=1, attempt=1, name=f"r{i}-1", machine="small-1x"),
            )
            assert await runs.transition(pool, run, change) is not None
        await pool.close()
        return ids

    ids = asyncio.run(seed())
    for i, run_id in enumerate(ids):
        _TOKENS[run_id] = local_cluster.pod_token("team-a", f"r{i}-1")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "DATABASE_URL": database, "KUBECONFIG": str(local_cluster.kubeconfig)},
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, "the API to be ready")
    yield url, ids
    process.terminate()
    process.wait(10)


def _auth(run_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {_TOKENS[run_id]}"}


def test_a_pod_token_reads_its_own_run(api: tuple[str, list[uuid.UUID]]) -> None:
    url, (first, _) = api
    response = httpx.get(f"{url}/internal/v1/runs/{first}/context", headers=_auth(first))
    assert response.status_code == 200
    assert response.json()["payload"] == {"n": 0} and response.json()["name"] == "r0"


def test_a_pod_token_cannot_read_another_run(
    api: tuple[str, list[uuid.UUID]], local_cluster: LocalCluster
) -> None:
    url, (first, second) = api
    response = httpx.get(f"{url}/internal/v1/runs/{second}/context", headers=_auth(first))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"

    def status(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{url}/internal/v1/runs/{second}/context", headers=headers).status_code

    # The same pod name in another namespace is another pod: not this run's.
    assert status(local_cluster.pod_token("team-b", "r1-1")) == 401
    # A token for the Kubernetes API (its audience) is no durapod token.
    kube_audience = "https://kubernetes.default.svc.cluster.local"
    assert status(local_cluster.pod_token("team-a", "r1-1", audience=kube_audience)) == 401
    assert status("not-a-token") == 401
    assert httpx.get(f"{url}/internal/v1/runs/{second}/context").status_code == 401


def test_a_deleted_pods_token_is_refused(
    api: tuple[str, list[uuid.UUID]], local_cluster: LocalCluster
) -> None:
    """The token is bound to the pod: once the pod is gone the API server says it is not
    valid, and the API refuses it (after its few seconds of caching)."""
    url, (first, _) = api
    endpoint = f"{url}/internal/v1/runs/{first}/context"
    assert httpx.get(endpoint, headers=_auth(first)).status_code == 200
    with httpx.Client(
        base_url=local_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as kube:
        gone = kube.delete("/api/v1/namespaces/team-a/pods/r0-1")
        assert gone.status_code == 200, gone.text
    wait_for(
        lambda: httpx.get(endpoint, headers=_auth(first)).status_code == 401,
        CACHE_SECONDS + 30,
        "the deleted pod's token to be refused",
    )


def test_a_pod_reports_only_its_own_outcome(api: tuple[str, list[uuid.UUID]]) -> None:
    url, (first, _) = api
    endpoint = f"{url}/internal/v1/runs/{first}/outcome"
    other_pod = httpx.post(endpoint, json={"pod": 2, "output": 1}, headers=_auth(first))
    assert other_pod.status_code == 403


def _read(database: str, query: Any) -> Any:
    async def go() -> Any:
        pool = await store.open_pool(database)
        try:
            return await query(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_outcome_reports_are_validated_and_stored(
    api: tuple[str, list[uuid.UUID]], database: str
) -> None:
    url, (first, _) = api
    endpoint = f"{url}/internal/v1/runs/{first}/outcome"
    post = lambda body: httpx.post(endpoint, json=body, headers=_auth(first))  # noqa: E731
    assert httpx.post(endpoint, content=b"{nope", headers=_auth(first)).status_code == 400
    assert post({"pod": 1, "error": {"type": "X"}}).status_code == 400
    assert post({"pod": 1, "output": 1, "error": {}}).status_code == 400
    assert post({"pod": 9, "output": {"ok": True}}).status_code == 403  # not its pod
    assert post({"pod": 1, "output": {"ok": True}}).status_code == 204
    record = _read(database, lambda pool: pods.get(pool, first, 1))
    assert record.output == {"ok": True} and record.error is None


def test_checkpoint_writes_are_idempotent_and_listed_in_the_context(
    api: tuple[str, list[uuid.UUID]], database: str
) -> None:
    url, (first, second) = api
    endpoint = f"{url}/internal/v1/runs/{first}/checkpoints"
    body = {"step": "fetch", "seq": 0, "output": {"rows": 3}, "duration": 0.5}
    for _ in range(3):  # a retried write changes nothing
        assert httpx.post(endpoint, json=body, headers=_auth(first)).status_code == 204
    # ... and its step is timed once (the runner sends the step's duration with each try).
    scraped = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    [timed] = [f for f in scraped if f.name == "durapod_step_duration_seconds"]
    assert [s.value for s in timed.samples if s.name.endswith("_count")] == [1]
    other = {"step": "fetch", "seq": 0, "output": {"rows": 99}}
    assert httpx.post(endpoint, json=other, headers=_auth(first)).status_code == 204
    assert (
        httpx.post(
            endpoint, json={"step": "", "seq": 1, "output": 1}, headers=_auth(first)
        ).status_code
        == 400
    )
    stored = _read(database, lambda pool: checkpoints.for_run(pool, first))
    assert [(c["step"], c["output"]) for c in stored] == [("fetch", {"rows": 3})]
    context = httpx.get(f"{url}/internal/v1/runs/{first}/context", headers=_auth(first)).json()
    assert context["checkpoints"] == [{"step": "fetch", "seq": 0, "output": {"rows": 3}}]
    assert context["checkpointLimit"] == 100
    # Another run's token can neither read nor write this run's checkpoints.
    assert httpx.post(endpoint, json=body, headers=_auth(second)).status_code == 403
    assert (
        httpx.get(f"{url}/internal/v1/runs/{first}/context", headers=_auth(second)).status_code
        == 403
    )


def test_state_saves_keep_the_newest(api: tuple[str, list[uuid.UUID]], database: str) -> None:
    url, (first, _) = api
    endpoint = f"{url}/internal/v1/runs/{first}/state"
    for seq, state in ((1, "a"), (3, "c"), (2, "stale")):
        assert (
            httpx.put(endpoint, json={"seq": seq, "state": state}, headers=_auth(first)).status_code
            == 204
        )
    stored = _read(database, lambda pool: checkpoints.for_run(pool, first))
    assert [(c["step"], c["output"]) for c in stored] == [("$state", "c")]
