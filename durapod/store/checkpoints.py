"""Typed queries on checkpoints: the hot path of every step.

One statement, one commit per write, idempotent: a retried write of the same step
changes nothing. The same statement notifies the operator (``durapod_checkpoint``,
"<run id> <seq> <step>"), which shows the latest step in ``status.lastCheckpoint``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from durapod.store import Pool

CHANNEL = "durapod_checkpoint"
STATE = "$state"

_RECORD = (
    "WITH written AS (INSERT INTO checkpoints (run_id, step, seq, output, size) "
    "VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING RETURNING run_id, seq, step) "
    f"SELECT pg_notify('{CHANNEL}', run_id::text || ' ' || seq || ' ' || step) FROM written"
)
_SAVE_STATE = (
    "INSERT INTO checkpoints (run_id, step, seq, output, size) "
    f"VALUES (%s, '{STATE}', %s, %s::jsonb, %s) ON CONFLICT (run_id, step) DO UPDATE "
    "SET seq = excluded.seq, output = excluded.output, size = excluded.size, "
    "created_at = now() WHERE checkpoints.seq < excluded.seq"
)


async def record(pool: Pool, run_id: UUID, step: str, seq: int, output: bytes) -> bool:
    """Store a completed step's output (raw JSON) unless the step is stored already;
    whether this call stored it (False: a retried write, which changed nothing)."""
    async with pool.connection() as conn:
        cur = await conn.execute(_RECORD, (run_id, step, seq, output.decode(), len(output)))
        return cur.rowcount == 1


async def save_state(pool: Pool, run_id: UUID, seq: int, state: bytes) -> None:
    """Store ``ctx.checkpoint()`` state; a stale (lower seq) write never wins."""
    async with pool.connection() as conn:
        await conn.execute(_SAVE_STATE, (run_id, seq, state.decode(), len(state)))


async def for_run(pool: Pool, run_id: UUID) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT step, seq, output, created_at FROM checkpoints WHERE run_id = %s ORDER BY seq",
            (run_id,),
        )
        return list(await cur.fetchall())
