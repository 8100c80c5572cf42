"""Fixtures: a private PostgreSQL server per test process, a database per test, and the
stand-in cluster on loopback."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from durapod.dev.postgres import PostgresServer
from tests.helpers import LocalCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="durapod-test-pg-"))
    base.chmod(0o755)  # the server runs as the postgres user when tests run as root
    server = PostgresServer(
        base / "data",
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    )
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """The DSN of a new, empty database of its own."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path)
    yield cluster
    cluster.close()


@pytest.fixture
def node_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """The stand-in cluster with a kubelet that runs pods."""
    cluster = LocalCluster(tmp_path, kubelet=True)
    yield cluster
    cluster.close()
