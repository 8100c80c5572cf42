"""Idempotency keys: the first trigger with a key within its TTL creates the run; every
later one gets that run. The primary key decides, in one statement, never a read first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from durapod.store import Pool

_CLAIM = (
    "INSERT INTO idempotency_keys (namespace, task, key, run_name, spec, expires_at) "
    "VALUES (%s, %s, %s, %s, %s, now() + %s) "
    "ON CONFLICT (namespace, task, key) DO UPDATE SET run_name = excluded.run_name, "
    "spec = excluded.spec, created_at = now(), expires_at = excluded.expires_at "
    "WHERE idempotency_keys.expires_at <= now() RETURNING run_name, spec"
)
_HOLDER = (
    "SELECT run_name, spec FROM idempotency_keys WHERE namespace = %s AND task = %s AND key = %s"
)


@dataclass(frozen=True)
class Claim:
    #: The run the key stands for.
    run_name: str
    #: The TaskRun spec to create it from (None for kubectl-applied runs).
    spec: dict[str, Any] | None
    #: True when the key is this caller's: it should create (or keep) the run.
    ours: bool


@dataclass(frozen=True)
class Request:
    namespace: str
    task: str
    key: str
    run_name: str
    ttl: timedelta
    spec: dict[str, Any] | None = None


async def claim_on(conn: AsyncConnection[DictRow], request: Request) -> Claim:
    r = request
    cur = await conn.execute(
        _CLAIM,
        (
            r.namespace,
            r.task,
            r.key,
            r.run_name,
            Jsonb(r.spec) if r.spec is not None else None,
            r.ttl,
        ),
    )
    row = await cur.fetchone()
    if row is None:  # a live key: someone else's (or ours, on a retry)
        cur = await conn.execute(_HOLDER, (r.namespace, r.task, r.key))
        row = await cur.fetchone()
        assert row is not None
    return Claim(row["run_name"], row["spec"], row["run_name"] == r.run_name)


async def claim(pool: Pool, request: Request) -> Claim:
    async with pool.connection() as conn:
        return await claim_on(conn, request)


async def claim_many(pool: Pool, requests: list[Request]) -> list[Claim]:
    """Claim a batch's keys in one transaction."""
    async with pool.connection() as conn, conn.transaction():
        return [await claim_on(conn, r) for r in requests]
