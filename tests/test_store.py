"""The store's migrations: the schema they build, and how concurrent starts take turns."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from durapod.store import migrations
from tests.helpers import wait_for


def _columns(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, str]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s",
        (table,),
    ).fetchall()
    return {name: (kind, nullable) for name, kind, nullable in rows}


def _constraints(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


def test_migrations_build_the_schema_on_an_empty_database(database: str) -> None:
    assert migrations.migrate(database) == [m.version for m in migrations.available()]
    with psycopg.connect(database) as conn:
        runs = _columns(conn, "runs")
        for column in (
            "id",
            "namespace",
            "name",
            "task",
            "payload",
            "phase",
            "version",
            "attempt",
            "resumes",
            "definition",
            "output",
            "error",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
        ):
            assert column in runs, column
        assert runs["id"] == ("uuid", "NO") and runs["payload"] == ("jsonb", "NO")
        checkpoints = _columns(conn, "checkpoints")
        assert set(checkpoints) == {"run_id", "step", "seq", "output", "size", "created_at"}
        assert "PRIMARY KEY (run_id, step)" in _constraints(conn, "checkpoints")
        assert "UNIQUE (run_id, seq)" in _constraints(conn, "checkpoints")
        assert runs["tags"] == ("ARRAY", "NO")
        keys = _columns(conn, "idempotency_keys")
        assert set(keys) == {
            "namespace",
            "task",
            "key",
            "run_name",
            "spec",
            "created_at",
            "expires_at",
        }
        assert keys["expires_at"] == ("timestamp with time zone", "NO")
        assert "PRIMARY KEY (namespace, task, key)" in _constraints(conn, "idempotency_keys")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO runs (id, namespace, name, task, phase) "
                "VALUES (gen_random_uuid(), 'ns', 'n', 't', 'Bogus')"
            )


def test_migrating_again_applies_nothing(database: str) -> None:
    migrations.migrate(database)
    assert migrations.migrate(database) == []


def test_concurrent_starts_apply_each_migration_once(database: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrations.migrate(database), range(4)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in migrations.available()]
    with psycopg.connect(database) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(migrations.available()),)


def test_migrate_waits_for_the_advisory_lock(database: str) -> None:
    holder = psycopg.connect(database, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (migrations.LOCK_KEY,))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (migrations.migrate(database), done.set()))
    thread.start()
    with psycopg.connect(database, autocommit=True) as probe:
        wait_for(
            lambda: (
                probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
                == (1,)
            ),
            what="migrate to wait on the lock",
        )
        assert not done.is_set()
        assert probe.execute("SELECT to_regclass('runs')").fetchone() == (None,)
    holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.LOCK_KEY,))
    thread.join(30)
    holder.close()
    assert done.is_set()


def test_the_pool_hands_out_live_connections_after_every_backend_was_terminated(
    database: str,
) -> None:
    """Dropped connections are found out before they are handed over (no round trip on
    the way: a closed socket is readable), so no query fails after the drop."""

    async def go() -> None:
        from durapod import store

        migrations.migrate(database)
        pool = await store.open_pool(database, min_size=4, max_size=4)
        try:
            await pool.wait(timeout=30)
            async with pool.connection() as conn:
                before = await (await conn.execute("SELECT pg_backend_pid() AS p")).fetchone()
            with psycopg.connect(database, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                assert killed is not None and killed[0] >= 4

                def gone() -> bool:
                    row = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchone()
                    return row is not None and row[0] == 0

                wait_for(gone, 30, "the terminated backends to exit")
            for _ in range(8):  # every pooled connection was dead: none is handed out
                async with pool.connection() as conn:
                    row = await (await conn.execute("SELECT pg_backend_pid() AS p")).fetchone()
                    assert row is not None and row != before
        finally:
            await pool.close()

    asyncio.run(go())


def test_a_removal_is_rolled_back_when_the_taskrun_is_still_there(database: str) -> None:
    """A replica that read a stale TaskRun (deleted and applied again meanwhile) must not
    remove the live record: the removal asks, inside its transaction, whether the records
    it removes are really gone, and is rolled back when one is not."""

    async def go() -> None:
        from uuid import uuid4

        from durapod import store
        from durapod.store import runs

        migrations.migrate(database)
        pool = await store.open_pool(database)
        old, new = uuid4(), uuid4()
        common = {"namespace": "ns", "name": "again", "task": "t", "payload": {}, "tags": []}

        async def is_live(uid: object) -> runs.Gone:
            async def gone(removed: list[object]) -> bool:
                return uid not in removed

            return gone

        try:
            first, _ = await runs.ensure(pool, run_id=old, **common)
            assert first is not None
            # A stale ensure of another uid while the old TaskRun still exists: refused.
            refused, freed = await runs.ensure(pool, run_id=new, gone=await is_live(old), **common)
            assert refused is None and freed == []
            assert (await runs.by_name(pool, "ns", "again")).id == old  # type: ignore[union-attr]
            # The old one is gone for real: the new one takes the name.
            taken, _ = await runs.ensure(pool, run_id=new, gone=await is_live(None), **common)
            assert taken is not None and taken.id == new
            assert (await runs.get(pool, old)).removed_at is not None  # type: ignore[union-attr]
            # A removal by name while a TaskRun with the record's uid exists: rolled back.
            assert await runs.remove(pool, "ns", "again", await is_live(new)) == []
            assert (await runs.by_name(pool, "ns", "again")).id == new  # type: ignore[union-attr]
            await runs.remove(pool, "ns", "again", await is_live(None))
            assert await runs.by_name(pool, "ns", "again") is None
        finally:
            await pool.close()

    asyncio.run(go())
