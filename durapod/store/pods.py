"""Typed queries on pods: one row per pod a run has had."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from durapod.store import Pool


@dataclass(frozen=True)
class PodRecord:
    run_id: UUID
    idx: int
    attempt: int
    name: str
    machine: str
    created_at: datetime
    in_cluster: bool
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    output: Any
    error: dict[str, Any] | None
    suspend: dict[str, Any] | None


_COLUMNS = (
    "run_id, idx, attempt, name, machine, created_at, in_cluster, started_at, finished_at, "
    "outcome, "
    "output, error, suspend"
)


async def get(pool: Pool, run_id: UUID, idx: int) -> PodRecord | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM pods WHERE run_id = %s AND idx = %s", (run_id, idx)
        )
        row = await cur.fetchone()
    return PodRecord(**row) if row else None


async def for_run(pool: Pool, run_id: UUID) -> list[PodRecord]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM pods WHERE run_id = %s ORDER BY idx", (run_id,)
        )
        return [PodRecord(**row) for row in await cur.fetchall()]


async def owner(pool: Pool, namespace: str, name: str) -> tuple[UUID, int, str] | None:
    """The run (its id, the pod's index, the run's task) the pod ``namespace/name``
    belongs to; the newest run's when a deleted run's name was taken again."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT p.run_id, p.idx, r.task FROM pods p JOIN runs r ON r.id = p.run_id "
            "WHERE p.name = %s AND r.namespace = %s ORDER BY r.created_at DESC LIMIT 1",
            (name, namespace),
        )
        row = await cur.fetchone()
    return (row["run_id"], row["idx"], row["task"]) if row else None


async def in_cluster(pool: Pool, run_id: UUID, idx: int, running: bool = False) -> None:
    """The pod exists (the API server has it); ``running``: its runner has started."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE pods SET in_cluster = true, started_at = CASE WHEN %s "
            "THEN coalesce(started_at, now()) ELSE started_at END "
            "WHERE run_id = %s AND idx = %s",
            (running, run_id, idx),
        )


async def report(pool: Pool, run_id: UUID, idx: int, kind: str, value: Any) -> bool:
    """Store what a pod's runner reports (output, error or suspend); False if no such pod."""
    column = {"output": "output", "error": "error", "suspend": "suspend"}[kind]
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"UPDATE pods SET {column} = %s WHERE run_id = %s AND idx = %s AND outcome IS NULL",
            (Jsonb(value), run_id, idx),
        )
        return cur.rowcount == 1
