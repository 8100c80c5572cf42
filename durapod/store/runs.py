"""Typed queries on runs: the durable record the operator and the API share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from durapod.store import Pool


@dataclass(frozen=True)
class Run:
    id: UUID
    namespace: str
    name: str
    task: str
    payload: dict[str, Any]
    status: str
    attempt: int
    resumes: int
    definition: dict[str, Any] | None
    output: Any
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


_COLUMNS = (
    "id, namespace, name, task, payload, status, attempt, resumes, definition, output, "
    "error, created_at, started_at, finished_at"
)


async def admit(
    pool: Pool,
    *,
    run_id: UUID,
    namespace: str,
    name: str,
    task: str,
    payload: dict[str, Any],
    definition: dict[str, Any],
) -> Run:
    """Record a run (once: a second call for the same id returns the first record)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO runs (id, namespace, name, task, payload, definition) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (run_id, namespace, name, task, Jsonb(payload), Jsonb(definition)),
        )
    run = await get(pool, run_id)
    assert run is not None
    return run


async def get(pool: Pool, run_id: UUID) -> Run | None:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        row = await cur.fetchone()
    return Run(**row) if row else None


async def set_status(
    pool: Pool,
    run_id: UUID,
    status: str,
    *,
    attempt: int | None = None,
    started: bool = False,
    finished: bool = False,
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET status = %s, attempt = coalesce(%s, attempt), updated_at = now(), "
            "started_at = CASE WHEN %s THEN coalesce(started_at, now()) ELSE started_at END, "
            "finished_at = CASE WHEN %s THEN coalesce(finished_at, now()) ELSE finished_at END "
            "WHERE id = %s",
            (status, attempt, started, finished, run_id),
        )


async def finish(
    pool: Pool, run_id: UUID, status: str, *, output: Any = None, error: Any = None
) -> None:
    """Record how the run ended."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET status = %s, output = %s, error = %s, updated_at = now(), "
            "finished_at = coalesce(finished_at, now()) WHERE id = %s",
            (status, Jsonb(output), Jsonb(error) if error is not None else None, run_id),
        )
