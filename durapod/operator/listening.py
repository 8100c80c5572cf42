"""LISTEN for checkpoint writes, so ``status.lastCheckpoint`` follows the steps.

A dedicated connection (not from the pool) holds the LISTEN; it reconnects when the
database goes away. Notifications for one run coalesce: only the latest step is shown.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import psycopg

from durapod.operator.reconcile import Reconciler
from durapod.store.checkpoints import CHANNEL

log = logging.getLogger("durapod.operator.listening")


async def listen_for_checkpoints(dsn: str, reconciler: Reconciler) -> None:
    latest: dict[UUID, str] = {}
    wakeup = asyncio.Event()

    async def publish() -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            while latest:
                run_id, step = latest.popitem()
                try:
                    await reconciler.checkpoint_written(run_id, step)
                except Exception:
                    log.exception("showing the last checkpoint of run %s", run_id)

    publisher = asyncio.create_task(publish())
    try:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for notice in conn.notifies():
                        run_id, _, step = notice.payload.partition(" ")
                        latest[UUID(run_id)] = step
                        wakeup.set()
            except psycopg.OperationalError as exc:
                log.warning("listening for checkpoints: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
    finally:
        publisher.cancel()
