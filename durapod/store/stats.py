"""What the operator's gauges report: queue depth, slots and unfinished runs, read in one go.

Every operator replica reads the same global numbers (Prometheus takes the max over
replicas). The queries only touch the partial indexes of unfinished, waiting and
slot-holding runs, so their cost follows the live runs, not the history. Concurrency keys
are bounded: the ``top`` keys of each queue by running + waiting, the rest summed as
``OTHER``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from durapod.store import Pool

#: The key the keys beyond a queue's top ones are summed under.
OTHER = "_other"

#: Runs in a queue's line, each read through the partial index of its kind (an OR of the
#: two conditions would match neither index and scan every run ever made).
_IN_LINE = """
SELECT namespace, queue, concurrency_key, true AS running FROM runs WHERE holds_slot
UNION ALL
SELECT namespace, queue, concurrency_key, false FROM runs
WHERE queued_at IS NOT NULL AND NOT holds_slot
"""

_QUEUES = f"""
WITH line AS ({_IN_LINE})
SELECT q.namespace, q.name, q.concurrency_limit,
       count(*) FILTER (WHERE r.running) AS running,
       count(*) FILTER (WHERE NOT r.running) AS waiting
FROM queues q
LEFT JOIN line r ON r.namespace = q.namespace AND r.queue = q.name
GROUP BY q.namespace, q.name, q.concurrency_limit
"""

_ACTIVE = """
SELECT namespace, task, phase, count(*) AS n FROM runs
WHERE phase NOT IN ('Succeeded', 'Failed', 'Cancelled', 'TimedOut') AND removed_at IS NULL
GROUP BY namespace, task, phase
"""

_KEYS = f"""
WITH line AS ({_IN_LINE}), per_key AS (
    SELECT namespace, queue, concurrency_key AS key,
           count(*) FILTER (WHERE running) AS running,
           count(*) FILTER (WHERE NOT running) AS waiting
    FROM line
    WHERE concurrency_key IS NOT NULL
    GROUP BY namespace, queue, concurrency_key
), ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY namespace, queue ORDER BY running + waiting DESC, key
    ) AS rank
    FROM per_key
)
SELECT namespace, queue, CASE WHEN rank <= %(top)s THEN key ELSE %(other)s END AS key,
       sum(running)::bigint AS running, sum(waiting)::bigint AS waiting
FROM ranked
GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class QueueStat:
    namespace: str
    queue: str
    #: The queue's concurrency limit; None: unlimited.
    slots: int | None
    running: int
    waiting: int


@dataclass(frozen=True)
class KeyStat:
    namespace: str
    queue: str
    key: str
    running: int
    waiting: int


@dataclass(frozen=True)
class Snapshot:
    queues: list[QueueStat] = field(default_factory=list)
    #: Unfinished live runs: (namespace, task, phase) -> how many.
    active: dict[tuple[str, str, str], int] = field(default_factory=dict)
    keys: list[KeyStat] = field(default_factory=list)


async def snapshot(pool: Pool, top: int = 10) -> Snapshot:
    """The numbers behind the operator's gauges, now."""
    async with pool.connection() as conn:
        cur = await conn.execute(_QUEUES)
        queue_rows = await cur.fetchall()
        cur = await conn.execute(_ACTIVE)
        active_rows = await cur.fetchall()
        cur = await conn.execute(_KEYS, {"top": top, "other": OTHER})
        key_rows = await cur.fetchall()
    return Snapshot(
        queues=[
            QueueStat(r["namespace"], r["name"], r["concurrency_limit"], r["running"], r["waiting"])
            for r in queue_rows
        ],
        active={(r["namespace"], r["task"], r["phase"]): r["n"] for r in active_rows},
        keys=[
            KeyStat(r["namespace"], r["queue"], r["key"], r["running"], r["waiting"])
            for r in key_rows
        ],
    )
