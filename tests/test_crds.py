"""The CRDs in crds/ are generated from the pydantic models and carry what kubectl needs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from durapod.resources import crds
from durapod.resources.models import TaskDefinition, TaskRun, TaskSchedule
from tests.helpers import REPO


def _version(model: Any) -> dict[str, Any]:
    version: dict[str, Any] = crds.crd(model)["spec"]["versions"][0]
    return version


def test_crds_directory_matches_the_models() -> None:
    for manifest in crds.all_crds():
        path = REPO / "crds" / f"{manifest['metadata']['name']}.yaml"
        assert path.read_text() == crds.render(manifest), (
            f"{path.name} drifted from durapod/resources/models.py: run `make crds`"
        )
    assert len(list((REPO / "crds").glob("*.yaml"))) == len(crds.all_crds())


def test_durapod_crds_command_prints_every_crd() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "durapod.cli", "crds"], capture_output=True, text=True, check=True
    ).stdout
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["TaskDefinition", "TaskRun", "TaskSchedule"]


def test_taskrun_printer_columns_names_and_status_subresource() -> None:
    crd = crds.crd(TaskRun)
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["tr"] and names["categories"] == ["durapod"]
    version = _version(TaskRun)
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Task", "Phase", "Reason", "Attempt", "Age", "Duration"]
    assert version["subresources"] == {"status": {}}
    assert crds.crd(TaskDefinition)["spec"]["names"]["shortNames"] == ["td"]
    assert crds.crd(TaskSchedule)["spec"]["names"]["shortNames"] == ["ts"]


def test_schemas_are_structural_with_validation() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        assert "$ref" not in node and "anyOf" not in node, path
        assert node.get("additionalProperties") in (None, True), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    for model in (TaskDefinition, TaskRun, TaskSchedule):
        walk(_version(model)["schema"]["openAPIV3Schema"], model.kind)
    spec = _version(TaskRun)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["task"]
    assert spec["properties"]["priority"]["minimum"] == -1000
    assert "pattern" in spec["properties"]["task"]
    assert spec["properties"]["payload"]["x-kubernetes-preserve-unknown-fields"] is True
    td_spec = _version(TaskDefinition)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(td_spec["required"]) == {"image", "entrypoint"}
    assert td_spec["properties"]["machine"]["enum"][0] == "micro"
