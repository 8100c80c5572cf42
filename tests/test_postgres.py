"""The private PostgreSQL server of `durapod dev` and the tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from durapod.dev.postgres import PostgresServer


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_a_data_dir_the_postgres_user_cannot_reach_moves_to_the_temp_dir() -> None:
    closed = Path(tempfile.mkdtemp())  # 0700, root's: closed to the postgres user
    server = PostgresServer(closed / "pg", settings={"fsync": "off"})
    try:
        dsn = server.start()
        assert server.data_dir.parent == Path(tempfile.gettempdir())
        assert server.data_dir == PostgresServer(closed / "pg")._relocated()  # stable
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop("immediate")
        shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(closed, ignore_errors=True)


def test_restart_keeps_data_and_survives_a_killed_owner(open_tmp: Path) -> None:
    server = PostgresServer(open_tmp / "pg", settings={"fsync": "off"})
    dsn = server.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
    # The owner dies without stopping the server: the next start takes over.
    again = PostgresServer(open_tmp / "pg", settings={"fsync": "off"})
    with psycopg.connect(again.start(), autocommit=True) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (7,)
    again.stop()
    assert not (open_tmp / "pg" / "postmaster.pid").exists()
