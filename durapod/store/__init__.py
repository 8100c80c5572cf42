"""PostgreSQL: the schema (versioned migrations), a connection pool and typed queries."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from durapod.store.migrations import migrate

#: A pool of autocommit connections whose rows are dicts.
Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


async def open_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> Pool:
    """Migrate the database, then open a pool of autocommit connections to it."""
    migrate(dsn)
    pool: Pool = AsyncConnectionPool(
        dsn,
        connection_class=AsyncConnection[DictRow],
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True, "row_factory": dict_row},
    )
    await pool.open(wait=True, timeout=30)
    return pool


__all__ = ["Pool", "migrate", "open_pool"]
