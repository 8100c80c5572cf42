"""The run record: the one truth of a run's lifecycle, shared by the operator and the API.

A record is created once per TaskRun uid (``ensure``), Pending, by whoever sees the run
first. After that it changes only through ``transition``: one transaction, guarded by the
record's ``version``, that also moves what must move with the phase (the queue slot, the
pod record, a child's outcome). A writer that read an older version changes nothing and
decides again, so two operator replicas never both apply a transition.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from durapod.store import Pool, names


@dataclass(frozen=True)
class Run:
    id: UUID
    namespace: str
    name: str
    task: str
    payload: dict[str, Any]
    phase: str
    version: int
    attempt: int
    resumes: int
    pods: int
    machine: str | None
    definition: dict[str, Any] | None
    output: Any
    error: dict[str, Any] | None
    tags: list[str]
    queue: str
    holds_slot: bool
    queued_at: datetime | None
    admit_as: str | None
    resume_at: datetime | None
    waiting_for: str | None
    message: str
    reason: str | None
    transitioned_at: datetime
    duplicate_of: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    removed_at: datetime | None
    shown_step: str | None
    shown_at: datetime | None
    #: The root span's W3C traceparent (the trigger's), set once when the record is made.
    traceparent: str | None = None


_COLUMNS = ", ".join(f.name for f in fields(Run))


@dataclass(frozen=True)
class NewPod:
    """The pod record a transition adds (the pod itself is created after the commit)."""

    idx: int
    attempt: int
    name: str
    machine: str


@dataclass(frozen=True)
class Enqueue:
    """Put the run in line for a slot of its queue (the queue's limits are the latest)."""

    queue: str
    limit: int | None
    key_limit: int | None
    concurrency_key: str | None
    priority: int


@dataclass(frozen=True)
class Change:
    """A transition: new column values and what moves with them, in one transaction."""

    #: Columns of ``runs`` to set (``phase``, ``attempt``, ``resume_at``, ...).
    set: dict[str, Any] = field(default_factory=dict)
    #: Give the queue slot back and leave the line.
    release: bool = False
    enqueue: Enqueue | None = None
    new_pod: NewPod | None = None
    #: (pod index, outcome) of the pod whose end this transition acts on.
    pod_outcome: tuple[int, str] | None = None
    #: The index of the pod seen running now (its run time counts against maxDuration).
    pod_started: int | None = None
    #: (step, output): a checkpoint written on the run's behalf (a child's outcome).
    checkpoint: tuple[str, Any] | None = None


#: Columns a transition may set; JSON ones are wrapped.
_SETTABLE = {
    "phase",
    "attempt",
    "resumes",
    "pods",
    "machine",
    "definition",
    "output",
    "error",
    "admit_as",
    "resume_at",
    "waiting_for",
    "message",
    "reason",
    "duplicate_of",
    "started_at",
    "finished_at",
    "expires_at",
}
_JSON = {"definition", "output", "error"}


def _row(row: DictRow | None) -> Run | None:
    return Run(**row) if row else None


#: Asked, inside a removal's transaction, whether the records about to be removed are
#: really gone (no TaskRun has their uid now); False rolls the removal back.
Gone = Callable[[list[UUID]], Awaitable[bool]]


async def ensure(
    pool: Pool,
    *,
    run_id: UUID,
    namespace: str,
    name: str,
    task: str,
    payload: dict[str, Any],
    tags: list[str],
    created_at: datetime | None = None,
    gone: Gone | None = None,
    traceparent: str | None = None,
) -> tuple[Run | None, list[tuple[str, str]]]:
    """The run's record, created Pending if it has none; and the queues whose slots a
    removed record freed.

    An older record still holding the name belongs to a TaskRun that was deleted (names
    are unique in the cluster): it is marked removed in the same transaction, unless
    ``gone`` finds its TaskRun still there (this caller read a stale TaskRun). None: the
    name is held by another live record. ``traceparent`` (the run's root span) is kept
    only by the call that makes the record.
    """
    freed: list[tuple[str, str]] = []
    async with pool.connection() as conn:
        async with conn.transaction():
            removed, freed = await _remove_on(conn, namespace, name, keep=run_id)
            if removed and gone is not None and not await gone(removed):
                freed = []
                raise psycopg.Rollback()
            await conn.execute(
                "INSERT INTO runs (id, namespace, name, task, payload, tags, created_at, "
                "traceparent) VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now()), %s) "
                "ON CONFLICT DO NOTHING",
                (run_id, namespace, name, task, Jsonb(payload), tags, created_at, traceparent),
            )
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        return _row(await cur.fetchone()), freed


async def get(pool: Pool, run_id: UUID) -> Run | None:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        return _row(await cur.fetchone())


async def by_name(pool: Pool, namespace: str, name: str) -> Run | None:
    """The live record answering for the name (none once its TaskRun is gone)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE namespace = %s AND name = %s "
            "AND removed_at IS NULL",
            (namespace, name),
        )
        return _row(await cur.fetchone())


async def transition(pool: Pool, run: Run, change: Change) -> Run | None:
    """Apply ``change`` to the record as read (``run.version``); None if it moved on since."""
    assignments, values = ["version = version + 1", "updated_at = now()"], []
    if "phase" in change.set:
        assignments.append("transitioned_at = clock_timestamp()")
    for column, value in change.set.items():
        if column not in _SETTABLE:
            raise ValueError(f"not a settable run column: {column}")
        assignments.append(f"{column} = %s")
        values.append(Jsonb(value) if column in _JSON and value is not None else value)
    if change.release:
        assignments.append("holds_slot = false, queued_at = NULL")
    if (q := change.enqueue) is not None:
        assignments.append(
            "queue = %s, concurrency_key = %s, priority = %s, "
            "queued_at = coalesce(queued_at, clock_timestamp())"
        )
        values.extend((q.queue, q.concurrency_key, q.priority))
    async with pool.connection() as conn, conn.transaction():
        if q is not None:  # the queue's row first: the order ``queues.admit`` locks in
            # No lock on the queue's row unless its limits change (every admission to a queue
            # would wait on every other, and on ``queues.admit``).
            await conn.execute(
                "INSERT INTO queues (namespace, name, concurrency_limit, key_limit) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (namespace, name) DO NOTHING",
                (run.namespace, q.queue, q.limit, q.key_limit),
            )
            await conn.execute(
                "UPDATE queues SET concurrency_limit = %s, key_limit = %s, updated_at = now() "
                "WHERE namespace = %s AND name = %s "
                "AND (concurrency_limit, key_limit) IS DISTINCT FROM (%s::int, %s::int)",
                (q.limit, q.key_limit, run.namespace, q.queue, q.limit, q.key_limit),
            )
        cur = await conn.execute(
            f"UPDATE runs SET {', '.join(assignments)} WHERE id = %s AND version = %s "
            f"RETURNING {_COLUMNS}",
            (*values, run.id, run.version),
        )
        updated = _row(await cur.fetchone())
        if updated is None:
            return None
        if (pod := change.new_pod) is not None:
            await conn.execute(
                "INSERT INTO pods (run_id, idx, attempt, name, machine) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (run.id, pod.idx, pod.attempt, pod.name, pod.machine),
            )
        if change.pod_outcome is not None:
            idx, outcome = change.pod_outcome
            await conn.execute(
                "UPDATE pods SET outcome = coalesce(outcome, %s), "
                "finished_at = coalesce(finished_at, now()) WHERE run_id = %s AND idx = %s",
                (outcome, run.id, idx),
            )
        if change.pod_started is not None:
            await conn.execute(
                "UPDATE pods SET started_at = coalesce(started_at, now()) "
                "WHERE run_id = %s AND idx = %s",
                (run.id, change.pod_started),
            )
        if change.checkpoint is not None:
            step, output = change.checkpoint
            data = json.dumps(output, separators=(",", ":"))
            await conn.execute(
                "INSERT INTO checkpoints (run_id, step, seq, output, size) "
                "SELECT %s, %s, coalesce(max(seq) + 1, 0), %s::jsonb, %s FROM checkpoints "
                "WHERE run_id = %s ON CONFLICT DO NOTHING",
                (run.id, step, data, len(data.encode()), run.id),
            )
    return updated


async def _remove_on(
    conn: AsyncConnection[DictRow], namespace: str, name: str, keep: UUID | None = None
) -> tuple[list[UUID], list[tuple[str, str]]]:
    cur = await conn.execute(
        "UPDATE runs SET removed_at = now(), updated_at = now(), version = version + 1, "
        "phase = CASE WHEN phase IN ('Succeeded', 'Failed', 'Cancelled', 'TimedOut') "
        "THEN phase ELSE 'Cancelled' END, "
        "finished_at = coalesce(finished_at, now()), "
        "message = CASE WHEN finished_at IS NULL THEN 'the TaskRun was deleted' ELSE message END, "
        "holds_slot = false, queued_at = NULL "
        "WHERE namespace = %s AND name = %s AND removed_at IS NULL AND id IS DISTINCT FROM %s "
        "RETURNING id, namespace, queue, holds_slot",
        (namespace, name, keep),
    )
    rows = await cur.fetchall()
    return [row["id"] for row in rows], [(row["namespace"], row["queue"]) for row in rows]


async def remove(pool: Pool, namespace: str, name: str, gone: Gone) -> list[tuple[str, str]]:
    """The TaskRun is gone: its record stops answering for the name, an unfinished run is
    Cancelled, and its slot is freed (unless ``gone`` finds a TaskRun with its uid after
    all). Returns the queues to refill."""
    async with pool.connection() as conn, conn.transaction():
        removed, freed = await _remove_on(conn, namespace, name)
        if removed and not await gone(removed):
            raise psycopg.Rollback()
        return freed
    return []


async def purge_removed(pool: Pool, older_than: timedelta) -> int:
    """Forget records removed long ago (their checkpoints and pods go with them)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM runs WHERE removed_at < now() - %s::interval", (older_than,)
        )
        return cur.rowcount


async def unfinished(pool: Pool) -> list[tuple[str, str]]:
    """(namespace, name) of every live unfinished run, for the periodic resync; not those
    waiting in line for a slot (the resync's walk of the queues admits them)."""
    return await names(
        pool,
        "SELECT namespace, name FROM runs WHERE phase NOT IN "
        "('Succeeded', 'Failed', 'Cancelled', 'TimedOut') AND removed_at IS NULL "
        "AND NOT (phase = 'Queued' AND queued_at IS NOT NULL AND NOT holds_slot)",
    )


async def claim_checkpoint_show(
    pool: Pool, run_id: UUID, seq: int, step: str, interval: timedelta
) -> tuple[str, str, datetime] | None:
    """Claim the right to show checkpoint ``seq`` in the TaskRun status: (namespace, name,
    the time it is shown from), or None when this caller should not write.

    At most one claim per run per ``interval`` succeeds, across every replica, and never
    for an older checkpoint than the one shown.
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE runs SET shown_seq = %s, shown_step = %s, shown_at = clock_timestamp() "
            "WHERE id = %s AND shown_seq < %s AND removed_at IS NULL "
            "AND (shown_at IS NULL OR shown_at <= clock_timestamp() - %s::interval) "
            "RETURNING namespace, name, shown_at",
            (seq, step, run_id, seq, interval),
        )
        row = await cur.fetchone()
    return (row["namespace"], row["name"], row["shown_at"]) if row else None


async def shown_seq(pool: Pool, run_id: UUID) -> int | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT shown_seq FROM runs WHERE id = %s", (run_id,))
        row = await cur.fetchone()
    return int(row["shown_seq"]) if row else None


async def page(
    pool: Pool,
    namespace: str,
    *,
    task: str | None = None,
    phase: str | None = None,
    tag: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int = 50,
) -> list[Run]:
    """Live runs newest first, filtered; ``after`` is the (created_at, id) of the previous
    page's last run (keyset pagination: cost stays flat however many runs there are)."""
    where, params = ["namespace = %s", "removed_at IS NULL"], [namespace]
    for clause, value in (
        ("task = %s", task),
        ("phase = %s", phase),
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


async def sweep(pool: Pool, live: list[str], created_before: datetime) -> list[tuple[str, str]]:
    """Records whose TaskRun is not among ``live`` uids (deleted while no operator saw it),
    created before ``created_before``: (namespace, name) of each, to reconcile (remove)."""
    return await names(
        pool,
        "SELECT namespace, name FROM runs WHERE removed_at IS NULL AND created_at < %s "
        "AND NOT (id = ANY(%s::uuid[]))",
        (created_before, live),
    )
