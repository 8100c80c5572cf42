"""Rendering ``helm/durapod`` with the real Helm binary, for the chart's tests."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import BIN, REPO

CHART = REPO / "helm" / "durapod"
RELEASE = "durapod"
NAMESPACE = "durapod-system"
#: The smallest values that install: an external PostgreSQL from a Secret.
EXTERNAL = {"postgres": {"host": "db.example.internal", "existingSecret": "durapod-db"}}
#: Helm's cache and config (it needs somewhere; nothing in it matters), and values files.
_HELM_HOME = Path(tempfile.gettempdir()) / f"durapod-test-helm-{os.getuid()}"
_HELM_HOME.mkdir(exist_ok=True)
Doc = dict[str, Any]


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The pinned Helm 4, with its cache and config in a private directory."""
    env = {
        "HOME": str(_HELM_HOME),
        "HELM_CACHE_HOME": str(_HELM_HOME / "cache"),
        "HELM_CONFIG_HOME": str(_HELM_HOME / "config"),
        "HELM_DATA_HOME": str(_HELM_HOME / "data"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [str(BIN / "helm"), *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Values layered like repeated ``-f`` files: nested maps merge, the rest replaces."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def values_file(values: dict[str, Any]) -> Path:
    """``values`` written to a new YAML file, for ``-f``."""
    descriptor, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=_HELM_HOME)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(values, handle)
    return Path(name)


def template_text(*values: dict[str, Any], check: bool = True, extra: tuple[str, ...] = ()) -> Any:
    """``helm template`` of the chart with ``values`` layered over its defaults."""
    path = values_file(merge(*values))
    try:
        return helm(
            "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(path), *extra, check=check
        )
    finally:
        path.unlink()


def render(*values: dict[str, Any]) -> list[Doc]:
    """The rendered manifests, parsed (empty documents dropped)."""
    text = template_text(*values).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def pod_specs(docs: list[Doc]) -> dict[str, Doc]:
    """Each workload's pod spec, by ``Kind/name``."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


def container(docs: list[Doc], deployment: str) -> Doc:
    spec = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    found: Doc = spec["containers"][0]
    return found


def env(docs: list[Doc], deployment: str) -> dict[str, Any]:
    """A container's environment: name to value, or to its ``valueFrom``."""
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs, deployment)["env"]
    }
