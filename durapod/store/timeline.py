"""What a run's timeline page shows, read in one go: the record, its pods, its checkpoints
(without their outputs, which can be large) and the child runs it started.

Every query is by the run's id or by a live name, so a page costs the same however many
runs the database holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from durapod.store import Pool, pods, runs

#: Steps whose output names a child run the run started (``ctx.trigger``).
TRIGGER_PREFIX = "$trigger:"


@dataclass(frozen=True)
class Mark:
    """A checkpoint as the timeline shows it: when, which step, how big."""

    step: str
    seq: int
    size: int
    created_at: datetime


@dataclass(frozen=True)
class Child:
    """A child run started by the run; ``phase`` is None once its record is gone."""

    step: str
    name: str
    task: str | None
    phase: str | None


@dataclass(frozen=True)
class RunTimeline:
    run: runs.Run
    pods: list[pods.PodRecord]
    marks: list[Mark]
    children: list[Child]


_MARKS = "SELECT step, seq, size, created_at FROM checkpoints WHERE run_id = %s ORDER BY seq"
# The checkpoint's primary key (run_id, step) finds the trigger steps; runs_live_name the child.
_CHILDREN = (
    "SELECT c.step, c.output->>'name' AS name, r.task, r.phase FROM checkpoints c "
    "LEFT JOIN runs r ON r.namespace = %s AND r.name = c.output->>'name' "
    "AND r.removed_at IS NULL "
    "WHERE c.run_id = %s AND c.step LIKE %s AND c.output->>'name' IS NOT NULL ORDER BY c.seq"
)


async def marks(pool: Pool, run_id: UUID) -> list[Mark]:
    async with pool.connection() as conn:
        cur = await conn.execute(_MARKS, (run_id,))
        return [Mark(**row) for row in await cur.fetchall()]


async def children(pool: Pool, namespace: str, run_id: UUID) -> list[Child]:
    async with pool.connection() as conn:
        cur = await conn.execute(_CHILDREN, (namespace, run_id, TRIGGER_PREFIX + "%"))
        return [Child(**row) for row in await cur.fetchall()]


async def load(pool: Pool, namespace: str, name: str) -> RunTimeline | None:
    """The live run ``namespace/name`` with everything its page shows; None if there is none."""
    run = await runs.by_name(pool, namespace, name)
    if run is None:
        return None
    return RunTimeline(
        run=run,
        pods=await pods.for_run(pool, run.id),
        marks=await marks(pool, run.id),
        children=await children(pool, namespace, run.id),
    )
