"""A real API server validates every object's metadata (apimachinery's ValidateLabels,
ValidateAnnotations, ValidateFinalizerName); so does ours, with its words: label keys
and annotation keys are qualified names, label values at most 63 bytes of a pattern,
annotations at most 256 KiB together, finalizers qualified names; on create and on
update, for built-in kinds and custom resources alike."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import LocalCluster

PODS = "/api/v1/namespaces/default/pods"
TR = "/apis/durapod.io/v1/namespaces/default/taskruns"


def _pod(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **meta},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]},
    }


@pytest.mark.parametrize(
    ("meta", "field", "message"),
    [
        pytest.param(
            {"labels": {"durapod.io/run": "r" * 64}},
            "metadata.labels",
            f'Invalid value: "{"r" * 64}": must be no more than 63 bytes',
            id="a label value of 64 bytes",
        ),
        pytest.param(
            {"labels": {"app": "-x"}},
            "metadata.labels",
            'Invalid value: "-x": a valid label must be an empty string or consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
            "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            id="a label value starting with a dash",
        ),
        pytest.param(
            {"labels": {"a/b/c": "x"}},
            "metadata.labels",
            'Invalid value: "a/b/c": a valid label key must consist of alphanumeric',
            id="a label key with two slashes",
        ),
        pytest.param(
            {"labels": {"Example.com/x": "y"}},
            "metadata.labels",
            'Invalid value: "Example.com/x": prefix part a lowercase RFC 1123 subdomain',
            id="a label key whose prefix is not a DNS subdomain",
        ),
        pytest.param(
            {"labels": {"k" * 64: "v"}},
            "metadata.labels",
            f'Invalid value: "{"k" * 64}": name part must be no more than 63 bytes',
            id="a label key whose name part has 64 bytes",
        ),
        pytest.param(
            {"annotations": {"big": "x" * (256 * 1024)}},
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes",
            id="annotations over 256 KiB together",
        ),
        pytest.param(
            {"annotations": {"not valid": "x"}},
            "metadata.annotations",
            'Invalid value: "not valid": name part must consist of alphanumeric',
            id="an annotation key with a space",
        ),
        pytest.param(
            {"finalizers": ["ok.io/fine", "bad finalizer"]},
            "metadata.finalizers[1]",
            'Invalid value: "bad finalizer": name part must consist of alphanumeric',
            id="a finalizer that is not a qualified name",
        ),
    ],
)
def test_invalid_metadata_is_a_422_naming_the_field(
    kube_api: httpx.Client, meta: dict[str, Any], field: str, message: str
) -> None:
    for path, body in ((PODS, _pod("p", **meta)), (TR, _tr("t", **meta))):
        response = kube_api.post(path, json=body)
        assert response.status_code == 422, response.text
        status = response.json()
        causes = status["details"]["causes"]
        assert any(c["field"] == field and c["message"].startswith(message) for c in causes), causes
        assert f"{field}: {message}" in status["message"]
    assert kube_api.get(PODS).json()["items"] == [] and kube_api.get(TR).json()["items"] == []


def _tr(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "metadata": {"name": name, **meta},
        "spec": {"task": "hello"},
    }


def test_valid_metadata_at_the_limits_is_accepted(kube_api: httpx.Client) -> None:
    meta = {
        "labels": {"example.com/MyName": "v" * 63, "empty": "", "a_b.c-d": "My_value.1"},
        "annotations": {"Example.com/Key": "x" * (256 * 1024 - 40)},
        "finalizers": ["example.com/keep"],
    }
    assert kube_api.post(PODS, json=_pod("p", **meta)).status_code == 201


def test_an_update_that_breaks_metadata_is_refused_and_changes_nothing(
    kube_api: httpx.Client,
) -> None:
    assert kube_api.post(TR, json=_tr("t")).status_code == 201
    patched = kube_api.patch(
        f"{TR}/t",
        json={"metadata": {"labels": {"run": "x" * 70}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422, patched.text
    assert patched.json()["details"]["causes"][0]["field"] == "metadata.labels"
    assert "run" not in (kube_api.get(f"{TR}/t").json()["metadata"].get("labels") or {})


def test_kubectl_prints_the_refusal_as_for_a_real_server(local_cluster: LocalCluster) -> None:
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"
        f"  labels:\n    run: {'r' * 64}\ndata:\n  a: b\n"
    )
    result = local_cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    assert 'The ConfigMap "cm" is invalid: metadata.labels: Invalid value:' in result.stderr
    assert "must be no more than 63 bytes" in result.stderr
