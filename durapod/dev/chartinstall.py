"""``durapod dev --install helm``: durapod installed on the stand-in by its own Helm chart.

Instead of running the operator and the API as processes of its own, the stack installs
``helm/durapod`` with the real ``helm`` binary, and the stand-in runs what the chart makes:
its Deployments become ReplicaSets and pods (the controllers), the kubelet runs each pod's
container from the chart's command and environment (``secretKeyRef`` resolved), with the
chart's ServiceAccount token mounted for in-cluster config, in a network namespace of its
own, probed as the chart says. Task pods reach the API by the Service name the chart gives
the operator (``http://durapod-api.durapod-system.svc``).

What this machine needs from the chart, and only that, is in one values file,
``HOME/dev-values.yaml``: PostgreSQL (this stack's server, which pods find at their own
``127.0.0.1``, with credentials from a Secret made here), the replicas, and nothing else.
The image is the chart's default, ``ghcr.io/durapod/durapod:<appVersion>``; the node maps
that name to this Python environment, as a registry would give the image.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The release, the namespace it is installed in, and the chart (from the working directory).
RELEASE = "durapod"
NAMESPACE = "durapod-system"
CHART_DIR = Path("helm/durapod")
#: The Secret holding the PostgreSQL credentials the chart reads (``postgres.existingSecret``).
DATABASE_SECRET = "durapod-dev-postgres"
VALUES_FILE = "dev-values.yaml"
#: How long ``helm install --wait`` may take: pods start here as processes, on a machine
#: that may be busy.
INSTALL_TIMEOUT = "5m"


def chart_path(workdir: Path) -> Path:
    chart = workdir / CHART_DIR
    if not (chart / "Chart.yaml").is_file():
        raise RuntimeError(
            f"{CHART_DIR}/ not found in {workdir}: run `durapod dev --install helm` "
            "from the repository"
        )
    return chart


def chart_image(chart: Path) -> str:
    """The image the chart runs by default: ``image.repository`` at the appVersion."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    image = values["image"]
    return f"{image['repository']}:{image.get('tag') or meta['appVersion']}"


def dev_values(postgres_port: int, database: str, operators: int, apis: int) -> dict[str, Any]:
    """The values that make the chart run on this machine; everything else is its default."""
    return {
        "postgres": {
            # Pods reach this machine's PostgreSQL at their own loopback (the kubelet
            # forwards the port into each pod's network namespace).
            "host": "127.0.0.1",
            "port": postgres_port,
            "database": database,
            "sslmode": "disable",
            "existingSecret": DATABASE_SECRET,
        },
        # One machine: the chart's two replicas each (for spreading over nodes) would only
        # load it; --operators/--apis ask for more.
        "operator": {"replicas": operators},
        "api": {"replicas": apis},
    }


def write_values(home: Path, values: dict[str, Any]) -> Path:
    path = home / VALUES_FILE
    path.write_text(
        "# The values `durapod dev --install helm` installs helm/durapod with (the rest are\n"
        "# the chart's defaults). Try a change with:\n"
        f"#   helm upgrade {RELEASE} {CHART_DIR} -n {NAMESPACE} -f {path} --set ...\n"
        + yaml.safe_dump(values, sort_keys=False)
    )
    return path


def helm_path() -> str:
    """The helm beside this Python (the pinned one ``make setup`` installs), else PATH's."""
    beside = Path(sys.executable).parent / "helm"
    found = str(beside) if beside.exists() else shutil.which("helm")
    if not found:
        raise RuntimeError("helm not found: run `make setup`, which installs the pinned one")
    return found


@dataclass
class Helm:
    """The real ``helm`` against the stand-in, with its cache and config under ``home``."""

    kubeconfig: Path
    home: Path

    async def run(self, *args: str) -> str:
        """Run ``helm ARGS``; its output. Raises RuntimeError with helm's message."""
        state = self.home / "helm"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(state / "cache"),
            "HELM_CONFIG_HOME": str(state / "config"),
            "HELM_DATA_HOME": str(state / "data"),
        }
        process = await asyncio.create_subprocess_exec(
            helm_path(),
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {err.decode().strip()}")
        return out.decode()
