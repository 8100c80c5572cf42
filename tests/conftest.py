"""Fixtures: a private PostgreSQL server per test process, a database per test, and the
stand-in cluster on loopback."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from durapod.dev.postgres import PostgresServer
from durapod.resources import crds
from tests.helpers import TOKEN, LocalCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    base = open_dir("durapod-test-pg-")
    server = PostgresServer(
        base / "data",
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    )
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


def open_dir(prefix: str) -> Path:
    """A new directory the postgres user can reach (tests may run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    path = open_dir("durapod-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


@pytest.fixture
def kube_api(local_cluster: LocalCluster) -> Iterator[httpx.Client]:
    """An admin HTTP client of the stand-in API server, with durapod's CRDs registered."""
    with httpx.Client(
        base_url=local_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        for manifest in crds.all_crds():
            created = client.post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=manifest
            )
            assert created.status_code == 201, created.text
        yield client
