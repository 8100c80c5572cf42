"""Queue slots: admission control shared by every operator replica.

``admit`` locks the queue's row (``SELECT ... FOR UPDATE``), counts the slots held, and
hands the free ones to the waiting runs: the concurrency key holding the fewest slots
first (round-robin, so one tenant cannot starve the others, never more per key than the
key limit), then highest priority, then oldest. A run gives its slot back when its pod ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from durapod.store import Pool, names

_ADMIT = """
WITH held AS (
    SELECT concurrency_key, count(*) AS n FROM runs
    WHERE namespace = %(ns)s AND queue = %(queue)s AND holds_slot
    GROUP BY concurrency_key
), waiting AS (
    SELECT r.id, r.name, r.concurrency_key, r.priority, r.queued_at,
           row_number() OVER (PARTITION BY r.concurrency_key
                              ORDER BY r.priority DESC, r.queued_at, r.id) AS turn
    FROM runs r
    WHERE r.namespace = %(ns)s AND r.queue = %(queue)s AND r.queued_at IS NOT NULL
      AND NOT r.holds_slot AND r.phase = 'Queued' AND r.removed_at IS NULL
), eligible AS (
    -- A run's place: the slots its key would hold with it. Keys holding fewer go first.
    SELECT w.* FROM waiting w LEFT JOIN held h
        ON h.concurrency_key IS NOT DISTINCT FROM w.concurrency_key
    WHERE w.concurrency_key IS NULL OR %(key_limit)s::int IS NULL
       OR coalesce(h.n, 0) + w.turn <= %(key_limit)s::int
    ORDER BY coalesce(h.n, 0) + w.turn, w.priority DESC, w.queued_at, w.id
    LIMIT %(free)s
)
-- A new version: a transition decided before this admission must look again.
UPDATE runs SET holds_slot = true, queued_at = NULL, version = version + 1
FROM eligible WHERE runs.id = eligible.id
    -- Checked again on the row as it is now: one cancelled or removed meanwhile gets none.
    AND runs.phase = 'Queued' AND NOT runs.holds_slot AND runs.queued_at IS NOT NULL
    AND runs.removed_at IS NULL AND runs.queue = %(queue)s
RETURNING runs.id, runs.name
"""


@dataclass(frozen=True)
class QueueState:
    name: str
    limit: int | None
    key_limit: int | None
    running: int
    waiting: int


async def admit(pool: Pool, namespace: str, queue: str) -> list[tuple[UUID, str]]:
    """Give free slots to waiting runs; return the runs admitted now."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT concurrency_limit, key_limit FROM queues WHERE namespace = %s AND name = %s "
            "FOR UPDATE",
            (namespace, queue),
        )
        limits = await cur.fetchone()
        if limits is None:
            return []
        cur = await conn.execute(
            "SELECT count(*) AS n FROM runs WHERE namespace = %s AND queue = %s AND holds_slot",
            (namespace, queue),
        )
        held = (await cur.fetchone() or {"n": 0})["n"]
        limit = limits["concurrency_limit"]
        free = 1_000_000 if limit is None else max(limit - held, 0)
        if free == 0:
            return []
        cur = await conn.execute(
            _ADMIT,
            {"ns": namespace, "queue": queue, "free": free, "key_limit": limits["key_limit"]},
        )
        return [(row["id"], row["name"]) for row in await cur.fetchall()]


async def waiting(pool: Pool) -> list[tuple[str, str]]:
    """(namespace, queue) of every queue with runs waiting for a slot, for the resync."""
    return await names(
        pool,
        "SELECT DISTINCT namespace, queue AS name FROM runs WHERE queued_at IS NOT NULL "
        "AND NOT holds_slot",
    )


async def states(pool: Pool, namespace: str) -> list[QueueState]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT q.name, q.concurrency_limit, q.key_limit, "
            "count(r.id) FILTER (WHERE r.holds_slot) AS running, "
            "count(r.id) FILTER (WHERE r.queued_at IS NOT NULL AND NOT r.holds_slot) AS waiting "
            "FROM queues q LEFT JOIN runs r ON r.namespace = q.namespace AND r.queue = q.name "
            "AND (r.holds_slot OR r.queued_at IS NOT NULL) WHERE q.namespace = %s "
            "GROUP BY q.name, q.concurrency_limit, q.key_limit ORDER BY q.name",
            (namespace,),
        )
        return [
            QueueState(
                r["name"], r["concurrency_limit"], r["key_limit"], r["running"], r["waiting"]
            )
            for r in await cur.fetchall()
        ]
