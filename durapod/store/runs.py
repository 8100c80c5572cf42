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
    tags: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


_COLUMNS = (
    "id, namespace, name, task, payload, status, attempt, resumes, definition, output, "
    "error, tags, created_at, started_at, finished_at"
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
    tags: list[str] | None = None,
) -> Run:
    """Record a run (once: a second call for the same id returns the first record)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO runs (id, namespace, name, task, payload, definition, tags) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (run_id, namespace, name, task, Jsonb(payload), Jsonb(definition), tags or []),
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


async def page(
    pool: Pool,
    namespace: str,
    *,
    task: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int = 50,
) -> list[Run]:
    """Runs newest first, filtered; ``after`` is the (created_at, id) of the previous page's
    last run (keyset pagination: cost stays flat however many runs there are)."""
    where, params = ["namespace = %s"], [namespace]
    for clause, value in (
        ("task = %s", task),
        ("status = %s", status),
        ("tags @> ARRAY[%s]::text[]", tag),
        ("created_at >= %s", since),
        ("created_at < %s", until),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)  # type: ignore[arg-type]
    if after is not None:
        where.append("(created_at, id) < (%s, %s)")
        params.extend(after)  # type: ignore[arg-type]
    query = (
        f"SELECT {_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC LIMIT %s"
    )
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), [*params, limit])
        return [Run(**row) for row in await cur.fetchall()]
