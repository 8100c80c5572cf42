"""The stand-in's semantics where it used to be looser than a cluster (issue 9, item 7):
unconditional updates, dry runs, malformed input, watch history, list snapshots, field
selectors, Table watches and pages, Warning headers, ``/version/``, namespace and
foreground deletion. Each test says what kube-apiserver does and shows that ours does too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.apiserver.server import warning_header
from durapod.dev.stack import Stack
from tests.helpers import BIN, REPO, LocalCluster, bare_taskrun, kubectl, wait_for

TR = "/apis/durapod.io/v1/namespaces/default/taskruns"
CM = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _configmap(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **meta},
        "data": {"k": "v"},
    }


def _revision(cluster: LocalCluster) -> int:
    return cluster.read(lambda c: c.storage.revision)


def _watch(client: httpx.Client, path: str, params: dict[str, Any], count: int) -> list[Any]:
    events = []
    with client.stream("GET", path, params={"watch": "true", **params}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            events.append(json.loads(line))
            if len(events) == count:
                break
    return events


# -- 1. unconditional updates ----------------------------------------------------------


def test_put_of_a_custom_resource_needs_a_resource_version(kube_api: httpx.Client) -> None:
    """A real API server refuses a PUT of a custom resource without
    metadata.resourceVersion (apiextensions' customResourceStrategy:
    AllowUnconditionalUpdate is false; the generic registry's Update says so); so does ours."""
    kube_api.post(TR, json=bare_taskrun("r1"))
    response = kube_api.put(f"{TR}/r1", json=bare_taskrun("r1"))
    assert response.status_code == 422
    status = response.json()
    assert status["message"] == (
        'taskruns.durapod.io "r1" is invalid: metadata.resourceVersion: Invalid value: 0: '
        "must be specified for an update"
    )
    assert status["details"]["kind"] == "taskruns"
    assert status["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    current = kube_api.get(f"{TR}/r1").json()
    assert kube_api.put(f"{TR}/r1", json=current).status_code == 200


def test_put_of_a_configmap_without_resource_version_overwrites(kube_api: httpx.Client) -> None:
    """A real API server lets a PUT without resourceVersion overwrite the kinds whose
    strategy allows unconditional updates (ConfigMaps, Pods, Secrets... ) but not Leases
    (leaseStrategy.AllowUnconditionalUpdate is false); so does ours."""
    kube_api.post(CM, json=_configmap("c1"))
    replaced = kube_api.put(f"{CM}/c1", json={**_configmap("c1"), "data": {"k": "new"}})
    assert replaced.status_code == 200 and replaced.json()["data"] == {"k": "new"}
    leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}}
    kube_api.post(leases, json=lease)
    assert kube_api.put(f"{leases}/l", json=lease).status_code == 422


# -- 2. dry runs -----------------------------------------------------------------------


def test_dry_run_changes_nothing_on_any_verb(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """A real API server answers ``dryRun=All`` on POST, PUT, PATCH, DELETE and
    deletecollection with what the write would have produced, and stores nothing (no new
    resourceVersion, no watch event); so does ours."""
    dry = {"dryRun": "All"}
    kept = kube_api.post(TR, json=bare_taskrun("kept")).json()
    held = kube_api.post(TR, json=bare_taskrun("held", finalizers=["example.com/hold"])).json()
    before = _revision(local_cluster)

    created = kube_api.post(TR, params=dry, json=bare_taskrun("ghost"))
    assert created.status_code == 201 and created.json()["metadata"]["name"] == "ghost"
    assert kube_api.get(f"{TR}/ghost").status_code == 404

    replaced = kube_api.put(f"{TR}/kept", params=dry, json={**kept, "spec": {"task": "other"}})
    assert replaced.status_code == 200 and replaced.json()["spec"]["task"] == "other"
    patched = kube_api.patch(
        f"{TR}/kept", params=dry, content=json.dumps({"spec": {"task": "third"}}), headers=MERGE
    )
    assert patched.status_code == 200 and patched.json()["spec"]["task"] == "third"

    deleting = kube_api.delete(f"{TR}/held", params=dry)
    assert deleting.status_code == 200 and deleting.json()["metadata"]["deletionTimestamp"]
    gone = kube_api.request("DELETE", TR, params=dry)
    assert gone.status_code == 200
    assert {i["metadata"]["name"] for i in gone.json()["items"]} == {"kept", "held"}

    assert _revision(local_cluster) == before
    still = kube_api.get(f"{TR}/held").json()
    assert still["metadata"] == held["metadata"]
    assert kube_api.get(f"{TR}/kept").json()["spec"]["task"] == "hello"


def test_kubectl_delete_with_server_dry_run_keeps_the_object(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """``kubectl delete --dry-run=server`` sends DeleteOptions with dryRun [All]; a real
    API server deletes nothing; neither does ours."""
    kube_api.post(CM, json=_configmap("c1"))
    out = local_cluster.kubectl("delete", "configmap", "c1", "--dry-run=server").stdout
    assert "(server dry run)" in out
    assert kube_api.get(f"{CM}/c1").status_code == 200


@pytest.mark.parametrize(
    ("method", "kind"),
    [("POST", "CreateOptions"), ("PATCH", "PatchOptions"), ("DELETE", "DeleteOptions")],
)
def test_an_unknown_dry_run_value_is_refused(
    kube_api: httpx.Client, method: str, kind: str
) -> None:
    """A real API server refuses ``dryRun=Foo`` (meta/v1 ValidateDryRun, as the handler
    reports it: 422 Invalid of the options object, the values shown as JSON); so does ours."""
    kube_api.post(TR, json=bare_taskrun("r1"))
    path = TR if method == "POST" else f"{TR}/r1"
    body = json.dumps(bare_taskrun("r2") if method == "POST" else {})
    headers = MERGE if method == "PATCH" else {"Content-Type": "application/json"}
    response = kube_api.request(
        method,
        path,
        params={"dryRun": "Foo"},
        content=body if method != "DELETE" else None,
        headers=headers,
    )
    assert response.status_code == 422
    assert response.json()["message"] == (
        f'{kind}.meta.k8s.io "" is invalid: dryRun: Unsupported value: ["Foo"]: '
        'supported values: "All"'
    )
    assert kube_api.get(f"{TR}/r1").status_code == 200


# -- 3. malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"resourceVersion": "abc"},
            'invalid resource version: resourceVersion: Invalid value: "abc": '
            'strconv.ParseUint: parsing "abc": invalid syntax',
        ),
        (
            {"watch": "true", "resourceVersion": "-1"},
            'invalid resource version: resourceVersion: Invalid value: "-1": '
            'strconv.ParseUint: parsing "-1": invalid syntax',
        ),
        ({"continue": "not a token"}, "invalid continue token: continue key is not valid"),
        ({"continue": "e30"}, "invalid continue token: continue key is not valid"),
        ({"limit": "abc"}, 'strconv.ParseInt: parsing "abc": invalid syntax'),
        (
            {"watch": "true", "timeoutSeconds": "0.1s"},
            'strconv.ParseInt: parsing "0.1s": invalid syntax',
        ),
        ({"labelSelector": "a b"}, "unable to parse requirement"),
        ({"labelSelector": "app=bad value"}, 'values[0][app]: Invalid value: "bad value"'),
        ({"fieldSelector": "metadata.name"}, "invalid selector: 'metadata.name'"),
        (
            {"limit": "1", "continue": "x", "resourceVersion": "5"},
            "specifying resource version is not allowed when using continue",
        ),
    ],
)
def test_malformed_list_and_watch_parameters_are_a_json_400(
    kube_api: httpx.Client, params: dict[str, str], message: str
) -> None:
    """A real API server answers a malformed list or watch parameter with a 400 Status,
    worded by the parameter codec (strconv), the etcd3 store's ValidateListOptions
    (resource versions, continue tokens) or the selector parsers; so does ours."""
    response = kube_api.get(TR, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    status = response.json()
    assert status["kind"] == "Status" and status["reason"] == "BadRequest"
    assert message in status["message"]


def test_a_body_that_is_not_json_is_a_400(kube_api: httpx.Client) -> None:
    """A real API server answers a body it cannot decode with a 400 Status; so does ours
    (also for a DELETE's DeleteOptions)."""
    created = kube_api.post(TR, content=b"{not json", headers={"Content-Type": "application/json"})
    assert created.status_code == 400 and created.json()["kind"] == "Status"
    kube_api.post(TR, json=bare_taskrun("r1"))
    deleted = kube_api.request(
        "DELETE", f"{TR}/r1", content=b"[1,", headers={"Content-Type": "application/json"}
    )
    assert deleted.status_code == 400 and deleted.json()["kind"] == "Status"


def test_an_unexpected_failure_is_a_json_internal_error(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """A real API server turns an unexpected error into a 500 InternalError Status
    ("Internal error occurred: ..."), never a text/plain page; so does ours."""

    def broken(*_: Any) -> Any:
        raise RuntimeError("the disk caught fire")

    def sabotage(cluster: Cluster) -> None:
        cluster.get = broken  # type: ignore[method-assign]

    local_cluster.read(sabotage)
    response = kube_api.get(f"{TR}/r1")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    status = response.json()
    assert status["reason"] == "InternalError"
    assert status["message"] == "Internal error occurred: the disk caught fire"


# -- 4. watch history ------------------------------------------------------------------


def test_watch_history_expires_by_time(local_cluster: LocalCluster, kube_api: httpx.Client) -> None:
    """A real API server keeps watch history until etcd is compacted (every 5 minutes);
    a watch from an older resourceVersion then gets 410 Expired, ``too old resource
    version: X (Y)`` (the watch cache's wording, Y the newest compacted revision); so does
    ours, with the window configurable (here shortened)."""
    rv = int(kube_api.post(TR, json=bare_taskrun("r1")).json()["metadata"]["resourceVersion"])
    kube_api.post(TR, json=bare_taskrun("r2"))
    replayed = _watch(kube_api, TR, {"resourceVersion": str(rv), "timeoutSeconds": 5}, 1)
    assert replayed[0]["type"] == "ADDED" and replayed[0]["object"]["metadata"]["name"] == "r2"

    def shorten(cluster: Cluster) -> None:
        cluster.storage.history_seconds = 0.2

    local_cluster.read(shorten)
    kube_api.post(TR, json=bare_taskrun("r3"))
    wait_for(
        lambda: local_cluster.read(lambda c: c.storage.changes_since(rv) is None),
        10,
        "the history to expire",
    )
    compacted = local_cluster.read(lambda c: c.storage.compacted)
    event = _watch(kube_api, TR, {"resourceVersion": str(rv), "timeoutSeconds": 5}, 1)[0]
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert event["object"]["message"] == f"too old resource version: {rv} ({compacted})"


def test_watch_history_is_bounded_in_size(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """The history also has a memory budget (a count and bytes): past it, the oldest
    changes go as a compaction would take them, and a watch from before gets 410."""

    def budget(cluster: Cluster) -> None:
        cluster.storage.history_bytes = 20_000

    local_cluster.read(budget)
    rv = kube_api.post(TR, json=bare_taskrun("r0")).json()["metadata"]["resourceVersion"]
    for i in range(1, 30):
        kube_api.post(TR, json=bare_taskrun(f"r{i}"))
    event = _watch(kube_api, TR, {"resourceVersion": rv, "timeoutSeconds": 5}, 1)[0]
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


# -- 5. list snapshots -----------------------------------------------------------------


def test_continue_pages_show_the_list_as_of_its_first_page(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """A real API server serves every page of a paged list at the first page's
    resourceVersion (etcd reads at that revision): later changes do not show, every page
    carries that resourceVersion, and remainingItemCount counts what is left; so does ours."""
    for i in range(5):
        kube_api.post(TR, json=bare_taskrun(f"r{i}"))
    first = kube_api.get(TR, params={"limit": 2}).json()
    rv = first["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in first["items"]] == ["r0", "r1"]
    assert first["metadata"]["remainingItemCount"] == 3
    old_r3 = kube_api.get(f"{TR}/r3").json()

    kube_api.delete(f"{TR}/r2")
    kube_api.post(TR, json=bare_taskrun("r25"))
    kube_api.patch(
        f"{TR}/r3", content=json.dumps({"metadata": {"labels": {"a": "b"}}}), headers=MERGE
    )

    second = kube_api.get(TR, params={"limit": 2, "continue": first["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["r2", "r3"]
    assert second["items"][1] == old_r3
    assert second["metadata"]["resourceVersion"] == rv
    assert second["metadata"]["remainingItemCount"] == 1
    last = kube_api.get(TR, params={"limit": 2, "continue": second["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in last["items"]] == ["r4"]
    assert "continue" not in last["metadata"] and last["metadata"]["resourceVersion"] == rv


def test_a_continue_token_past_compaction_is_410_with_a_fresh_token(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """A real API server refuses a continue token whose resourceVersion has been
    compacted: 410 Expired with etcd3's "too old to display a consistent list result"
    message and, in metadata.continue, a token that goes on from the latest state; so
    does ours."""
    for i in range(4):
        kube_api.post(TR, json=bare_taskrun(f"r{i}"))
    first = kube_api.get(TR, params={"limit": 2}).json()

    def shorten(cluster: Cluster) -> None:
        cluster.storage.history_seconds = 0.0

    local_cluster.read(shorten)
    kube_api.post(TR, json=bare_taskrun("r9"))
    expired = kube_api.get(TR, params={"limit": 2, "continue": first["metadata"]["continue"]})
    assert expired.status_code == 410
    status = expired.json()
    assert status["reason"] == "Expired"
    assert status["message"].startswith(
        "The provided continue parameter is too old to display a consistent list result."
    )
    fresh = kube_api.get(TR, params={"limit": 10, "continue": status["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in fresh.json()["items"]] == ["r2", "r3", "r9"]


# -- 6. field selectors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "selector", "message"),
    [
        (TR, "spec.task=hello", "field label not supported: spec.task"),
        (PODS, "spec.containers=x", "field label not supported: spec.containers"),
        (
            CM,
            "data.k=v",
            '"data.k" is not a known field selector: only "metadata.name", "metadata.namespace"',
        ),
        ("/api/v1/namespaces", "metadata.namespace=x", "field label not supported"),
    ],
)
def test_field_selectors_on_unsupported_fields_are_refused(
    kube_api: httpx.Client, path: str, selector: str, message: str
) -> None:
    """A real API server selects only on the fields a kind's field label conversion
    accepts (core/v1 conversion.go for pods, events, secrets, namespaces, nodes; the
    default metadata.name/namespace for the rest; a CRD's selectableFields) and answers
    any other with 400; so does ours, for lists and watches alike."""
    for params in ({"fieldSelector": selector}, {"fieldSelector": selector, "watch": "true"}):
        response = kube_api.get(path, params=params)
        assert response.status_code == 400, response.text
        assert message in response.json()["message"]


def test_field_selectors_on_supported_fields_select(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """What real clients select by keeps working: kubectl's metadata.name, a kubelet's
    spec.nodeName, kubectl describe's involvedObject.*, status.phase; and a custom
    resource's selectableFields (apiextensions' crConverter), as on a real server."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1"},
        "spec": {"containers": [{"name": "c", "image": "durapod:dev"}], "nodeName": "n1"},
    }
    kube_api.post(PODS, json=pod)
    names = lambda r: [i["metadata"]["name"] for i in r.json()["items"]]  # noqa: E731
    assert names(kube_api.get(PODS, params={"fieldSelector": "spec.nodeName=n1"})) == ["p1"]
    assert names(kube_api.get(PODS, params={"fieldSelector": "spec.hostNetwork=false"})) == ["p1"]
    assert names(kube_api.get(PODS, params={"fieldSelector": "status.phase!=Pending"})) == []
    got = local_cluster.kubectl("get", "pods", "--field-selector", "metadata.name=p1", "-o", "name")
    assert got.stdout.strip() == "pod/p1"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
        "reason": "Started",
        "source": {"component": "kubelet"},
    }
    kube_api.post("/api/v1/namespaces/default/events", json=event)
    selected = kube_api.get(
        "/api/v1/namespaces/default/events",
        params={"fieldSelector": "involvedObject.name=p1,source=kubelet,reason=Started"},
    )
    assert names(selected) == ["e1"]

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    "selectableFields": [{"jsonPath": ".spec.color"}],
                }
            ],
        },
    }
    kube_api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
    widgets = "/apis/example.com/v1/namespaces/default/widgets"
    for name, color in (("w1", "red"), ("w2", "blue")):
        widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}}
        kube_api.post(widgets, json={**widget, "spec": {"color": color}})
    assert names(kube_api.get(widgets, params={"fieldSelector": "spec.color=blue"})) == ["w2"]
    assert kube_api.get(widgets, params={"fieldSelector": "spec.size=1"}).status_code == 400


# -- 7. Tables: watches and pages ------------------------------------------------------


class _Output:
    """A background process's output, read as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def test_kubectl_get_watch_shows_the_printer_columns(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """``kubectl get -w`` asks for Tables on the watch too; a real API server sends each
    event's object as a one-row Table (column definitions on the first only), so the
    printer columns show for every change; so does ours."""
    kube_api.post(TR, json=bare_taskrun("first"))
    env = {**os.environ, "KUBECONFIG": str(local_cluster.kubeconfig)}
    argv = [str(BIN / "kubectl"), "--cache-dir", str(local_cluster.home / "kc"), "get", "tr", "-w"]
    watching = _Output(argv, env)
    try:
        wait_for(lambda: any(line.startswith("first ") for line in watching.lines), 60, "list")
        kube_api.post(TR, json=bare_taskrun("second"))
        kube_api.patch(
            f"{TR}/second/status",
            content=json.dumps({"status": {"phase": "Running", "attempt": 3}}),
            headers=MERGE,
        )
        row = wait_for(
            lambda: next(
                (
                    line.split()
                    for line in watching.lines
                    if line.startswith("second ") and "Running" in line
                ),
                None,
            ),
            60,
            "the watched change with its printer columns",
        )
    finally:
        watching.stop()
    assert watching.lines[0].split() == [
        "NAME",
        "TASK",
        "PHASE",
        "REASON",
        "ATTEMPT",
        "AGE",
        "DURATION",
    ]
    assert row[:4] == ["second", "hello", "Running", "3"]
    assert sum(1 for line in watching.lines if line.startswith("NAME")) == 1


def test_kubectl_get_shows_more_than_one_chunk(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """kubectl get lists in chunks of 500 (``limit=500``) and follows ``continue``; a
    real API server puts the continue token on Table lists too, so every object shows;
    so does ours."""

    async def many(cluster: Cluster) -> None:
        rt = cluster.registry.find("", "v1", "configmaps")
        assert rt is not None
        for i in range(520):
            cluster.create(rt, "default", _configmap(f"cm-{i:04d}"), Options())

    local_cluster.call(many(local_cluster.cluster))
    rows = local_cluster.kubectl("get", "configmaps", "--no-headers").stdout.splitlines()
    assert sum(1 for r in rows if r.startswith("cm-")) == 520
    table = kube_api.get(
        CM,
        params={"limit": 500},
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    ).json()
    assert table["kind"] == "Table" and table["metadata"]["continue"]
    assert len(table["rows"]) == 500


# -- 8. Warning headers, 9. /version/ ---------------------------------------------------


def test_warnings_reach_kubectl(local_cluster: LocalCluster, kube_api: httpx.Client) -> None:
    """A real API server sends warnings as ``Warning: 299 - "text"`` headers quoted as
    apimachinery's NewWarningHeader quotes them, and kubectl prints them on stderr
    (here: an unknown field under ``--validate=warn``, whose text holds quotes); so does
    ours."""
    manifest = json.dumps({**bare_taskrun("w1"), "spec": {"task": "hello", "colour": "red"}})
    applied = local_cluster.kubectl("apply", "--validate=warn", "-f", "-", input=manifest)
    assert 'Warning: unknown field "spec.colour"' in applied.stderr
    response = kube_api.post(
        TR,
        params={"fieldValidation": "Warn"},
        json={**bare_taskrun("w2"), "spec": {"task": "x", "y": 1}},
    )
    assert response.headers.get_list("warning") == ['299 - "unknown field \\"spec.y\\""']
    assert warning_header('a\\b "c"') == '299 - "a\\\\b \\"c\\""'
    assert warning_header("bell\x07") is None


def test_version_answers_with_a_trailing_slash(kube_api: httpx.Client) -> None:
    """A real API server serves ``/version/`` as ``/version`` (the go-restful route
    matches both); so does ours."""
    assert kube_api.get("/version/").json() == kube_api.get("/version").json()


# -- 10. namespaces, 11. foreground deletion --------------------------------------------


def test_a_deleted_namespace_terminates_until_its_content_is_gone(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """A real cluster marks a deleted namespace Terminating, its namespace controller
    deletes the content (each object as its own DELETE: finalizers hold it), reports what
    remains in the status conditions, refuses new content (NamespaceLifecycle admission:
    403), and removes the namespace once it is empty and its ``kubernetes`` finalizer is
    cleared; so does ours."""
    local_cluster.kubectl("create", "namespace", "doomed")
    space = kube_api.get("/api/v1/namespaces/doomed").json()
    assert space["spec"]["finalizers"] == ["kubernetes"]
    runs = "/apis/durapod.io/v1/namespaces/doomed/taskruns"
    kube_api.post(runs, json=bare_taskrun("held", finalizers=["example.com/hold"]))
    kube_api.post("/api/v1/namespaces/doomed/configmaps", json=_configmap("loose"))

    local_cluster.kubectl("delete", "namespace", "doomed", "--wait=false")
    space = kube_api.get("/api/v1/namespaces/doomed").json()
    assert space["status"]["phase"] == "Terminating" and space["metadata"]["deletionTimestamp"]
    conditions = {c["type"]: c for c in space["status"]["conditions"]}
    assert conditions["NamespaceContentRemaining"]["status"] == "True"
    assert conditions["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: taskruns.durapod.io has 1 resource instances"
    )
    assert conditions["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 "
        "resource instances"
    )
    assert kube_api.get("/api/v1/namespaces/doomed/configmaps/loose").status_code == 404
    assert kube_api.get(f"{runs}/held").json()["metadata"]["deletionTimestamp"]
    refused = kube_api.post(runs, json=bare_taskrun("late"))
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        'taskruns.durapod.io "late" is forbidden: unable to create new content in namespace '
        "doomed because it is being terminated"
    )

    kube_api.patch(
        f"{runs}/held", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE
    )
    assert kube_api.get("/api/v1/namespaces/doomed").status_code == 404
    assert kube_api.delete("/api/v1/namespaces/default").status_code == 403


def test_foreground_deletion_waits_for_blocking_dependents(kube_api: httpx.Client) -> None:
    """A real API server answers ``propagationPolicy=Foreground`` by giving the owner
    the ``foregroundDeletion`` finalizer and a deletionTimestamp; the garbage collector
    deletes the dependents and removes the owner only when those with
    ``blockOwnerDeletion`` are gone; so does ours."""
    owner = kube_api.post(TR, json=bare_taskrun("owner")).json()
    ref = {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    kube_api.post(
        CM, json=_configmap("blocker", ownerReferences=[ref], finalizers=["example.com/hold"])
    )
    kube_api.post(
        CM, json=_configmap("loose", ownerReferences=[{**ref, "blockOwnerDeletion": False}])
    )

    answer = kube_api.request(
        "DELETE", f"{TR}/owner", json={"kind": "DeleteOptions", "propagationPolicy": "Foreground"}
    ).json()
    assert answer["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert answer["metadata"]["deletionTimestamp"]
    assert kube_api.get(f"{CM}/loose").status_code == 404
    assert kube_api.get(f"{CM}/blocker").json()["metadata"]["deletionTimestamp"]
    assert kube_api.get(f"{TR}/owner").status_code == 200

    kube_api.patch(
        f"{CM}/blocker", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE
    )
    assert kube_api.get(f"{CM}/blocker").status_code == 404
    assert kube_api.get(f"{TR}/owner").status_code == 404


def test_kubectl_cascade_foreground_and_orphan(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    """``kubectl delete --cascade=foreground`` returns once the owner and its dependents
    are gone; ``orphanDependents=true`` (the legacy form of Orphan) leaves the dependents
    without the owner's reference; as on a real cluster."""
    for name in ("a", "b"):
        owner = kube_api.post(TR, json=bare_taskrun(name)).json()
        ref = {"apiVersion": "durapod.io/v1", "kind": "TaskRun", "name": name}
        ref["uid"] = owner["metadata"]["uid"]
        kube_api.post(CM, json=_configmap(f"{name}-dep", ownerReferences=[ref]))
    local_cluster.kubectl("delete", "tr", "a", "--cascade=foreground", "--timeout=30s")
    assert kube_api.get(f"{TR}/a").status_code == 404
    assert kube_api.get(f"{CM}/a-dep").status_code == 404
    kube_api.delete(f"{TR}/b", params={"orphanDependents": "true"})
    kept = kube_api.get(f"{CM}/b-dep").json()
    assert "ownerReferences" not in kept["metadata"]


# -- 4 again: the operator after a 410 -------------------------------------------------


@pytest.fixture
def dev_stack() -> Iterator[tuple[Stack, asyncio.AbstractEventLoop]]:
    """``durapod dev``'s stack (database, stand-in, kubelet, operator, API) on a loop of
    its own, so a test can reach into the stand-in while the operator runs."""
    home = Path(tempfile.mkdtemp(prefix="durapod-semantics-"))
    home.chmod(0o755)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = Stack(home, REPO, pg_settings={"fsync": "off", "synchronous_commit": "off"})
    try:
        asyncio.run_coroutine_threadsafe(stack.start(), loop).result(180)
        yield stack, loop
    finally:
        asyncio.run_coroutine_threadsafe(stack.stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        shutil.rmtree(home, ignore_errors=True)


def test_the_operator_lists_again_after_a_410_and_goes_on(
    dev_stack: tuple[Stack, asyncio.AbstractEventLoop],
) -> None:
    """On a real cluster a watch that resumes after compaction gets 410 Expired, and
    kopf lists again and watches on; the durapod operator then still completes runs. Here
    the history is compacted past every watcher and every watch stream is ended (as an
    API server restart would), and a run created afterwards still succeeds."""
    stack, loop = dev_stack
    cache = stack.home / "kube-cache"

    def phase(name: str) -> str:
        return kubectl(
            stack.kubeconfig, cache, "get", "tr", name, "-o", "jsonpath={.status.phase}"
        ).stdout

    kubectl(stack.kubeconfig, cache, "apply", "-f", str(REPO / "examples/hello/"))
    wait_for(lambda: phase("hello-1") == "Succeeded", 120, "hello-1 to succeed")

    async def compact_and_cut() -> int:
        storage = stack.cluster.storage
        expired = storage.expired_reads
        window = storage.history_seconds
        storage.history_seconds = 0.0
        rt = stack.cluster.registry.find("", "v1", "configmaps")
        assert rt is not None
        stack.cluster.create(rt, "default", _configmap("compaction-marker"), Options())
        storage.history_seconds = window
        storage.close_watchers()
        return expired

    before = asyncio.run_coroutine_threadsafe(compact_and_cut(), loop).result(30)
    # The kubelet's pod watch and (at least one of) the operator's watches.
    wait_for(
        lambda: stack.cluster.storage.expired_reads >= before + 2,
        60,
        "the watches to be refused as too old",
    )
    manifest = (REPO / "examples/hello/02-taskrun.yaml").read_text().replace("hello-1", "hello-2")
    kubectl(stack.kubeconfig, cache, "apply", "-f", "-", input=manifest)
    wait_for(lambda: phase("hello-2") == "Succeeded", 120, "hello-2 to succeed after the 410")
    assert not stack.restarts
