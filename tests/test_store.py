"""The store's migrations: the schema they build, and how concurrent starts take turns."""

from __future__ import annotations

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
            "status",
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
                "INSERT INTO runs (id, namespace, name, task, status) "
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
