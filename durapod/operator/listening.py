"""LISTEN for checkpoint writes, so ``status.lastCheckpoint`` follows the steps.

A dedicated connection (not from the pool) holds the LISTEN and reconnects when the
database goes away. Notifications for one run coalesce to the latest, and the run
record decides which replica writes it (at most once per run per interval); a replica
that loses that race looks again after the interval, so the last step is always shown.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import psycopg

from durapod import store
from durapod.operator.reconcile import Reconciler
from durapod.store.checkpoints import CHANNEL

log = logging.getLogger("durapod.operator.listening")


async def listen_for_checkpoints(dsn: str, reconciler: Reconciler) -> None:
    latest: dict[UUID, tuple[int, str]] = {}
    wakeup = asyncio.Event()
    loop = asyncio.get_running_loop()

    def note(run_id: UUID, seq: int, step: str) -> None:
        if seq > latest.get(run_id, (-1, ""))[0]:
            latest[run_id] = (seq, step)
        wakeup.set()

    async def publish() -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            while latest:
                run_id, (seq, step) = latest.popitem()
                try:
                    again = await reconciler.show_checkpoint(run_id, seq, step)
                except Exception as exc:
                    log.warning("showing the last checkpoint of run %s: %s", run_id, exc)
                    again = 1.0
                if again is not None:
                    loop.call_later(again, note, run_id, seq, step)

    publisher = asyncio.create_task(publish())
    try:
        while True:
            try:
                # Keepalives: a half-open connection (a vanished server) is found out.
                connect = psycopg.AsyncConnection.connect(
                    dsn,
                    autocommit=True,
                    connect_timeout=5,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
                async with await connect as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for notice in conn.notifies():
                        run_id, seq, step = notice.payload.split(" ", 2)
                        note(UUID(run_id), int(seq), step)
            except store.UNAVAILABLE as exc:
                log.warning("listening for checkpoints: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
    finally:
        publisher.cancel()
