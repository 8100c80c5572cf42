"""How much a durable step costs, against the floor of a bare INSERT + COMMIT.

Both run in this process against the same private PostgreSQL server (fsync on, as in
production): the floor is one 1 KiB JSONB ``INSERT ... ON CONFLICT DO NOTHING`` in
autocommit from psycopg; a step is ``await ctx.step(...)`` with a 1 KiB output through the
runner's client, the API process (``python -m durapod.api``: uvicorn, Starlette) and its
single-statement write. Prints p50/p90 in milliseconds and the ratio of the p50s.

    .venv/bin/python benchmarks/checkpoint_path.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from psycopg.types.json import Jsonb

from durapod import store
from durapod.dev.postgres import PostgresServer, free_port
from durapod.runner.api import RunApi
from durapod.runner.context import Context
from durapod.store import runs

OUTPUT = {"blob": "x" * 1000}
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import LocalCluster  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


def floor(dsn: str, n: int) -> list[float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (k text PRIMARY KEY, v jsonb)")
        times = []
        for i in range(n):
            start = time.perf_counter()
            conn.execute(
                "INSERT INTO floor VALUES (%s, %s) ON CONFLICT DO NOTHING", (f"k{i}", Jsonb(OUTPUT))
            )
            times.append(time.perf_counter() - start)
    return times


async def seed(dsn: str) -> tuple[uuid.UUID, str]:
    pool = await store.open_pool(dsn)
    run_id = uuid.uuid4()
    run, _ = await runs.ensure(
        pool,
        run_id=run_id,
        namespace="bench",
        name=f"bench-{run_id.hex[:8]}",
        task="bench",
        payload={},
        tags=[],
    )
    change = runs.Change(
        set={"definition": {}, "phase": "Running", "attempt": 1, "pods": 1},
        new_pod=runs.NewPod(idx=1, attempt=1, name=f"{run.name}-1", machine="small-1x"),
    )
    assert await runs.transition(pool, run, change) is not None
    await pool.close()
    return run_id, f"{run.name}-1"


async def steps(api_url: str, run_id: uuid.UUID, token: str, n: int) -> list[float]:
    client = RunApi(api_url, str(run_id), token, 1)
    ctx = Context(run_id=str(run_id), name="bench-1", namespace="bench", attempt=1, journal=client)
    return await timed_steps(ctx, n)


async def timed_steps(ctx: Context, n: int) -> list[float]:
    """The seconds each of ``n`` durable steps of 1 KiB output takes."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        await ctx.step(f"s{i}", lambda: OUTPUT)
        times.append(time.perf_counter() - start)
    return times


def serve_api(
    dsn: str, cluster: LocalCluster, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """``python -m durapod.api`` on a free port, once it is ready; its URL and process."""
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", str(port)],
        env={
            **os.environ,
            **(env or {}),
            "DATABASE_URL": dsn,
            "KUBECONFIG": str(cluster.kubeconfig),
        },
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return url, api


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    n = parser.parse_args().steps
    base = Path(tempfile.mkdtemp(prefix="durapod-bench-"))
    base.chmod(0o755)
    server = PostgresServer(base / "pg")
    # The stand-in API server reviews the pods' tokens (the API caches its answers).
    (base / "cluster").mkdir()
    cluster = LocalCluster(base / "cluster")
    api = None
    try:
        dsn = server.start()
        store.migrate(dsn)
        run_id, pod = asyncio.run(seed(dsn))
        token = cluster.pod_token("bench", pod)
        url, api = serve_api(dsn, cluster)
        floor(dsn, 200)  # warm up both paths
        warm_id, warm_pod = asyncio.run(seed(dsn))
        asyncio.run(steps(url, warm_id, cluster.pod_token("bench", warm_pod), 200))
        bare = percentiles(floor(dsn, n))
        step = percentiles(asyncio.run(steps(url, run_id, token, n)))
        print(
            f"bare INSERT+COMMIT (1 KiB jsonb)  p50 {bare[0] * 1e3:.3f} ms  "
            f"p90 {bare[1] * 1e3:.3f} ms"
        )
        print(
            f"durapod step (runner→API→PG)      p50 {step[0] * 1e3:.3f} ms  "
            f"p90 {step[1] * 1e3:.3f} ms"
        )
        print(f"step / bare write (p50): {step[0] / bare[0]:.2f}x  ({n} samples each)")
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        server.stop("immediate")
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
