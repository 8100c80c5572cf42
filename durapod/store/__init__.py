"""PostgreSQL: the schema (versioned migrations), a connection pool and typed queries.

Processes start whether or not the database is up: the pool opens without waiting and
checks each connection it hands out, and ``migrate_when_up`` retries with backoff. While
the database is away, queries raise ``psycopg.OperationalError`` (``UNAVAILABLE``) after
at most the pool's ``timeout``: callers answer 503 or retry later, never hang.
"""

from __future__ import annotations

import asyncio
import logging
import random
import select

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from durapod.store.migrations import migrate

log = logging.getLogger("durapod.store")

#: A pool of autocommit connections whose rows are dicts.
Pool = AsyncConnectionPool[AsyncConnection[DictRow]]
#: What a query raises when the database cannot be reached (down, restarting, dropped).
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)


async def open_pool(dsn: str, min_size: int = 1, max_size: int = 10, timeout: float = 5.0) -> Pool:
    """A pool of autocommit connections to ``dsn``, open at once even if it is down."""

    async def alive(conn: AsyncConnection[DictRow]) -> None:
        """Is a pooled connection usable? Without a round trip (this is on every step's
        path): an idle connection the server closed, or told it is terminated, has
        something to read (EOF or a FATAL notice); a healthy idle one has nothing."""
        if not (conn.closed or conn.broken):
            poller = select.poll()  # not select.select: it refuses descriptors past 1023
            poller.register(conn.pgconn.socket, select.POLLIN)
            if not poller.poll(0):
                return
        await conn.close()  # so the pool discards it rather than handing it out again
        # The server restarted or dropped us: its other idle connections went too.
        await pool.drain()
        raise psycopg.OperationalError("the server closed the connection")

    pool: Pool = AsyncConnectionPool(
        dsn,
        connection_class=AsyncConnection[DictRow],
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        check=alive,
        reconnect_timeout=60.0,
        kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5},
    )
    await pool.open(wait=False)
    return pool


async def names(pool: Pool, query: str, params: tuple[object, ...] = ()) -> list[tuple[str, str]]:
    """The (namespace, name) pairs a query selects, for the operator's periodic walks."""
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        return [(row["namespace"], row["name"]) for row in await cur.fetchall()]


async def migrate_when_up(dsn: str, ready: asyncio.Event, max_delay: float = 5.0) -> None:
    """Migrate as soon as the database answers (backoff with jitter), then set ``ready``.

    Any other failure (a migration that cannot apply) is raised: it is no passing fault.
    """
    delay = 0.1
    while True:
        try:
            await asyncio.to_thread(migrate, dsn)
        except UNAVAILABLE as exc:
            log.warning("database not ready (%s); retrying in %.1fs", exc, delay)
        else:
            ready.set()
            return
        await asyncio.sleep(delay * random.uniform(1.0, 1.5))
        delay = min(delay * 2, max_delay)


__all__ = ["UNAVAILABLE", "Pool", "migrate", "migrate_when_up", "names", "open_pool"]
