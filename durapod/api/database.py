"""The API's database: open at start whether PostgreSQL is up or not, migrated in the
background as soon as it answers, and one rule for every route that needs it: while the
database cannot answer, the request gets ``503`` with ``Retry-After``, never a 500.

A request waits at most ``timeout`` seconds for the database (for the first migration
after start, or for a pooled connection), then is refused with a precise message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from durapod import store
from durapod.api.problems import Problem, unavailable

log = logging.getLogger("durapod.api")


def down(exc: BaseException) -> Problem:
    """The 503 for a query that failed because the database cannot be reached."""
    text = str(exc).strip()
    reason = text.splitlines()[0][:300] if text else type(exc).__name__
    return unavailable(f"the database is unavailable: {reason}")


class Database:
    def __init__(self, pool: store.Pool, ready: asyncio.Event, timeout: float) -> None:
        self._pool = pool
        #: Set once the schema is migrated; until then no route touches the database.
        self.ready = ready
        self.timeout = timeout
        self.failed: BaseException | None = None
        self._migrating: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, dsn: str, timeout: float) -> Database:
        """Open the pool at once and migrate in the background (retried until it answers)."""
        db = cls(await store.open_pool(dsn, timeout=timeout), asyncio.Event(), timeout)
        db._migrating = asyncio.create_task(store.migrate_when_up(dsn, db.ready))
        db._migrating.add_done_callback(db._migrated)
        return db

    def _migrated(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.failed = exc
            log.error("the database migrations failed: %s", exc, exc_info=exc)

    async def close(self) -> None:
        if self._migrating is not None:
            self._migrating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._migrating
        await self._pool.close()

    def not_ready(self) -> Problem:
        if self.failed is not None:
            return unavailable(f"the database schema could not be migrated: {self.failed}")
        return unavailable(
            "the database is unavailable: PostgreSQL has not answered since the API started "
            "(its migrations are pending)"
        )

    async def pool(self) -> store.Pool:
        """The pool, once the schema is migrated; a 503 Problem if not within ``timeout``."""
        if not self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                timeout = 0 if self.failed is not None else self.timeout
                await asyncio.wait_for(self.ready.wait(), timeout)
            if not self.ready.is_set():
                raise self.not_ready()
        return self._pool

    async def ping(self, timeout: float | None = None) -> None:
        """One ``SELECT 1``: a 503 Problem unless the database answers now."""
        pool = await self.pool()
        try:
            async with pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
        except store.UNAVAILABLE as exc:
            raise down(exc) from exc
