"""Apply the versioned SQL migrations in ``migrations/`` at start-up.

Every process (operator and API replicas) migrates on start; a session-level advisory
lock makes concurrent starts take turns, and ``schema_migrations`` records what is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import psycopg

#: Advisory lock key: "durapod" as an integer, shared by every durapod process.
LOCK_KEY = 0x6475726170_6F64


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("durapod.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def migrate(dsn: str) -> list[int]:
    """Bring the database at ``dsn`` up to date; return the versions this call applied."""
    applied = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in available():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied
