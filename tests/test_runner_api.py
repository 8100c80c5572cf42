"""The runner's endpoints of the API over real HTTP: per-run tokens, outcomes, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from durapod import store
from durapod.auth import run_token
from durapod.dev.postgres import free_port
from durapod.store import runs
from tests.helpers import wait_for

SECRET = "test-secret"


@pytest.fixture
def api(database: str) -> Iterator[tuple[str, list[uuid.UUID]]]:
    async def seed() -> list[uuid.UUID]:
        pool = await store.open_pool(database)
        ids = [uuid.uuid4(), uuid.uuid4()]
        for i, run_id in enumerate(ids):
            await runs.admit(
                pool,
                run_id=run_id,
                namespace="team-a",
                name=f"r{i}",
                task="t",
                payload={"n": i},
                definition={},
            )
        await pool.close()
        return ids

    ids = asyncio.run(seed())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "DATABASE_URL": database, "DURAPOD_RUN_TOKEN_SECRET": SECRET},
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 30, "the API")
    yield url, ids
    process.terminate()
    process.wait(10)


def _auth(run_id: uuid.UUID, namespace: str = "team-a", secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {run_token(secret, str(run_id), namespace)}"}


def test_a_run_token_reads_its_own_run(api: tuple[str, list[uuid.UUID]]) -> None:
    url, (first, _) = api
    response = httpx.get(f"{url}/internal/v1/runs/{first}/context", headers=_auth(first))
    assert response.status_code == 200
    assert response.json()["payload"] == {"n": 0} and response.json()["name"] == "r0"


def test_a_run_token_cannot_read_another_run(api: tuple[str, list[uuid.UUID]]) -> None:
    url, (first, second) = api
    response = httpx.get(f"{url}/internal/v1/runs/{second}/context", headers=_auth(first))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    forged = httpx.get(
        f"{url}/internal/v1/runs/{second}/context", headers=_auth(second, namespace="team-b")
    )
    assert forged.status_code == 403
    wrong_secret = httpx.get(
        f"{url}/internal/v1/runs/{second}/context", headers=_auth(second, secret="guess")
    )
    assert wrong_secret.status_code == 403
    missing = httpx.get(f"{url}/internal/v1/runs/{second}/context")
    assert missing.status_code == 403


def test_outcome_reports_are_validated_and_stored(
    api: tuple[str, list[uuid.UUID]], database: str
) -> None:
    url, (first, _) = api
    endpoint = f"{url}/internal/v1/runs/{first}/outcome"
    assert httpx.post(endpoint, content=b"{nope", headers=_auth(first)).status_code == 400
    assert (
        httpx.post(endpoint, json={"error": {"type": "X"}}, headers=_auth(first)).status_code == 400
    )
    assert (
        httpx.post(endpoint, json={"output": {"ok": True}}, headers=_auth(first)).status_code == 204
    )

    async def read() -> object:
        pool = await store.open_pool(database)
        record = await runs.get(pool, first)
        await pool.close()
        assert record is not None
        return record.output

    assert asyncio.run(read()) == {"ok": True}
