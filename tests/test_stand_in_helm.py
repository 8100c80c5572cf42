"""Helm 4 against ``durapod dev``: the stock chart of ``helm create`` installs, upgrades,
rolls back and uninstalls unmodified, as on a cluster.

What this leans on in the stand-in: the built-in kinds with their upstream schemas and
OpenAPI (Helm validates manifests), protobuf bodies (Helm's release Secrets go through
client-go's typed core client), server-side apply with managed fields (Helm 4 applies
server-side by default, so a value dropped on upgrade removes its field) and deletion.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN, DevProcess, running_dev


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-helm-") as process:
        yield process


def helm(dev: DevProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "helm"), "--kubeconfig", str(dev.home / "kubeconfig"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={
            "HOME": str(dev.home),
            "HELM_CACHE_HOME": str(dev.home / "helm-cache"),
            "HELM_CONFIG_HOME": str(dev.home / "helm-config"),
            "HELM_DATA_HOME": str(dev.home / "helm-data"),
            "PATH": "/usr/bin:/bin",
        },
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result


def deployment(dev: DevProcess, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = dev.get(f"/apis/apps/v1/namespaces/default/deployments/{name}")
    return found


def release(dev: DevProcess, name: str, revision: int) -> dict[str, Any]:
    """A release as Helm stored it: a Secret holding base64(gzip(JSON))."""
    secret = dev.get(f"/api/v1/namespaces/default/secrets/sh.helm.release.v1.{name}.v{revision}")
    assert secret is not None, f"no release Secret for revision {revision}"
    assert secret["type"] == "helm.sh/release.v1"
    blob = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    stored: dict[str, Any] = json.loads(gzip.decompress(blob))
    return stored


@pytest.fixture(scope="module")
def chart(dev: DevProcess) -> Path:
    helm(dev, "create", str(dev.home / "demo"))
    return dev.home / "demo"


def test_install_creates_the_stock_charts_objects_and_its_release(
    dev: DevProcess, chart: Path
) -> None:
    """A real cluster takes ``helm install`` of ``helm create``'s chart as it is."""
    helm(dev, "install", "demo", str(chart))
    made = deployment(dev, "demo")
    assert made is not None
    assert made["spec"]["replicas"] == 1
    assert made["spec"]["template"]["spec"]["containers"][0]["image"].startswith("nginx:")
    assert dev.get("/api/v1/namespaces/default/services/demo")["spec"]["ports"][0]["port"] == 80
    assert dev.get("/api/v1/namespaces/default/serviceaccounts/demo") is not None
    assert release(dev, "demo", 1)["info"]["status"] == "deployed"
    listed = json.loads(helm(dev, "list", "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in listed] == [("demo", "deployed")]


def test_upgrade_dropping_a_value_removes_its_field_and_rollback_brings_it_back(
    dev: DevProcess, chart: Path
) -> None:
    """Helm 4 upgrades by server-side apply: a field no longer in the chart's output is
    removed from the live object (its manager stopped applying it), as on a cluster."""
    helm(dev, "upgrade", "demo", str(chart), "--set", "podAnnotations.durapod/test=on")
    made = deployment(dev, "demo")
    assert made is not None
    assert made["spec"]["template"]["metadata"]["annotations"] == {"durapod/test": "on"}

    # Without values, Helm would reuse the last release's: reset them to the chart's.
    helm(dev, "upgrade", "demo", str(chart), "--reset-values")
    made = deployment(dev, "demo")
    assert made is not None
    assert "durapod/test" not in (made["spec"]["template"]["metadata"].get("annotations") or {})

    helm(dev, "rollback", "demo", "2")
    made = deployment(dev, "demo")
    assert made is not None
    assert made["spec"]["template"]["metadata"]["annotations"] == {"durapod/test": "on"}
    history = json.loads(helm(dev, "history", "demo", "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["status"] == "deployed"
    assert release(dev, "demo", 3)["info"]["status"] == "superseded"


def test_uninstall_removes_the_objects_and_the_releases(dev: DevProcess, chart: Path) -> None:
    helm(dev, "uninstall", "demo")
    assert deployment(dev, "demo") is None
    assert dev.get("/api/v1/namespaces/default/services/demo") is None
    assert dev.get("/api/v1/namespaces/default/serviceaccounts/demo") is None
    secrets = dev.get("/api/v1/namespaces/default/secrets", labelSelector="owner=helm")
    assert secrets["items"] == []
    assert json.loads(helm(dev, "list", "-o", "json").stdout) == []
