"""The stand-in API server keeps the wire contract kopf and kubectl rely on
(shared/K8S-API-NOTES.md): discovery, writes, concurrency, status, watches, deletes."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.helpers import TOKEN, LocalCluster

TR = "/apis/durapod.io/v1/namespaces/default/taskruns"
PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _run(name: str = "r1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "metadata": {"name": name},
        "spec": {"task": "hello", **spec},
    }


def _pod(name: str = "p1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **meta},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]},
    }


def test_discovery_lists_crd_resources_with_subresources(kube_api: httpx.Client) -> None:
    groups = kube_api.get("/apis").json()
    durapod = next(g for g in groups["groups"] if g["name"] == "durapod.io")
    assert durapod["preferredVersion"]["version"] == "v1"
    resources = {r["name"]: r for r in kube_api.get("/apis/durapod.io/v1").json()["resources"]}
    assert resources["taskruns"]["shortNames"] == ["tr"]
    assert resources["taskruns"]["singularName"] == "taskrun"
    assert "taskruns/status" in resources
    core = {r["name"] for r in kube_api.get("/api/v1").json()["resources"]}
    assert {"pods", "pods/log", "pods/eviction", "events", "namespaces"} <= core
    assert kube_api.get("/version").json()["minor"] == "35"


def test_wrong_token_is_refused(local_cluster: LocalCluster) -> None:
    response = httpx.get(
        f"{local_cluster.url}/api/v1/namespaces", headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401 and response.json()["reason"] == "Unauthorized"


def test_create_sets_server_owned_metadata_and_defaults(kube_api: httpx.Client) -> None:
    created = kube_api.post(TR, json=_run()).json()
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["namespace"] == "default"
    assert created["spec"]["priority"] == 0  # CRD schema default
    again = kube_api.post(TR, json=_run())
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"


def test_generate_name_and_namespace_rules(kube_api: httpx.Client) -> None:
    body = _run(name="")
    body["metadata"] = {"generateName": "run-"}
    made = kube_api.post(TR, json=body)
    assert made.status_code == 201 and made.json()["metadata"]["name"].startswith("run-")
    wrong_ns = _run("r2")
    wrong_ns["metadata"]["namespace"] = "other"
    assert kube_api.post(TR, json=wrong_ns).status_code == 400
    missing = kube_api.post("/apis/durapod.io/v1/namespaces/nowhere/taskruns", json=_run("r3"))
    assert missing.status_code == 404 and "nowhere" in missing.json()["message"]


def test_schema_violations_are_422_naming_each_field(kube_api: httpx.Client) -> None:
    response = kube_api.post(TR, json=_run(task="Bad_Name", priority="high"))
    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "TaskRun"
    fields = {c["field"] for c in body["details"]["causes"]}
    assert fields == {"spec.task", "spec.priority"}
    assert "spec.priority in body must be of type integer" in body["message"]
    missing = kube_api.post(
        TR,
        json={
            "apiVersion": "durapod.io/v1",
            "kind": "TaskRun",
            "metadata": {"name": "x"},
            "spec": {},
        },
    )
    assert missing.json()["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.task",
    }
    assert kube_api.get(f"{TR}/x").status_code == 404  # nothing stored


def test_unknown_fields_strict_rejects_warn_prunes(kube_api: httpx.Client) -> None:
    strict = kube_api.post(f"{TR}?fieldValidation=Strict", json=_run(foo=1))
    assert strict.status_code == 400
    assert 'unknown field "spec.foo"' in strict.json()["message"]
    warned = kube_api.post(TR, json=_run(foo=1))
    assert warned.status_code == 201 and "foo" not in warned.json()["spec"]
    assert (
        'unknown field \\"spec.foo\\"' in warned.headers["Warning"]
        or "spec.foo" in warned.headers["Warning"]
    )


def test_stale_resource_version_conflicts(kube_api: httpx.Client) -> None:
    created = kube_api.post(TR, json=_run()).json()
    old_rv = created["metadata"]["resourceVersion"]
    kube_api.patch(f"{TR}/r1", content=json.dumps({"spec": {"priority": 5}}), headers=MERGE)
    stale = {"metadata": {"resourceVersion": old_rv}, "spec": {"priority": 6}}
    response = kube_api.patch(f"{TR}/r1", content=json.dumps(stale), headers=MERGE)
    assert response.status_code == 409 and response.json()["reason"] == "Conflict"
    put = {**created, "spec": {"task": "hello", "priority": 7}}
    assert kube_api.put(f"{TR}/r1", json=put).status_code == 409
    test_op = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": old_rv},
        {"op": "replace", "path": "/spec/priority", "value": 8},
    ]
    response = kube_api.patch(
        f"{TR}/r1",
        content=json.dumps(test_op),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 422
    assert kube_api.get(f"{TR}/r1").json()["spec"]["priority"] == 5


def test_status_subresource_is_separate(kube_api: httpx.Client) -> None:
    kube_api.post(TR, json=_run())
    main = kube_api.patch(
        f"{TR}/r1",
        content=json.dumps({"status": {"phase": "Running"}, "spec": {"priority": 3}}),
        headers=MERGE,
    ).json()
    assert "status" not in main and main["spec"]["priority"] == 3
    assert main["metadata"]["generation"] == 2
    status = kube_api.patch(
        f"{TR}/r1/status",
        content=json.dumps(
            {
                "status": {"phase": "Running"},
                "spec": {"priority": 9},
                "metadata": {"labels": {"x": "y"}},
            }
        ),
        headers=MERGE,
    ).json()
    assert status["status"]["phase"] == "Running" and status["spec"]["priority"] == 3
    assert "labels" not in status["metadata"]
    assert status["metadata"]["generation"] == 2  # status writes do not bump it
    bad = kube_api.patch(
        f"{TR}/r1/status", content=json.dumps({"status": {"phase": "Nope"}}), headers=MERGE
    )
    assert bad.status_code == 422


def test_strategic_merge_patch_is_refused_for_custom_resources(kube_api: httpx.Client) -> None:
    kube_api.post(TR, json=_run())
    response = kube_api.patch(
        f"{TR}/r1", content="{}", headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert response.status_code == 415
    kube_api.post(PODS, json=_pod())
    pod = kube_api.patch(
        f"{PODS}/p1",
        content=json.dumps({"metadata": {"labels": {"a": "b"}}}),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert pod.status_code == 200 and pod.json()["metadata"]["labels"] == {"a": "b"}


def test_label_and_field_selectors_and_pagination(kube_api: httpx.Client) -> None:
    for i in range(5):
        body = _run(f"r{i}")
        body["metadata"]["labels"] = {"team": "a" if i % 2 else "b"}
        kube_api.post(TR, json=body)
    names = lambda r: [i["metadata"]["name"] for i in r.json()["items"]]  # noqa: E731
    assert names(kube_api.get(TR, params={"labelSelector": "team=a"})) == ["r1", "r3"]
    assert names(kube_api.get(TR, params={"labelSelector": "team in (b),team!=a"})) == [
        "r0",
        "r2",
        "r4",
    ]
    assert names(kube_api.get(TR, params={"fieldSelector": "metadata.name=r2"})) == ["r2"]
    page = kube_api.get(TR, params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["metadata"]["continue"]
    assert page["kind"] == "TaskRunList" and page["items"][0]["kind"] == "TaskRun"
    rest = kube_api.get(TR, params={"limit": 10, "continue": page["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["r2", "r3", "r4"]


def _watch_lines(
    kube_api: httpx.Client, params: dict[str, Any], count: int
) -> list[dict[str, Any]]:
    events = []
    with kube_api.stream("GET", TR, params={"watch": "true", **params}) as response:
        assert response.headers["content-type"].startswith("application/json")
        for line in response.iter_lines():
            events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def test_watch_replays_changes_after_a_resource_version(kube_api: httpx.Client) -> None:
    rv = kube_api.post(TR, json=_run("r1")).json()["metadata"]["resourceVersion"]
    kube_api.post(TR, json=_run("r2"))
    kube_api.delete(f"{TR}/r1")
    events = _watch_lines(kube_api, {"resourceVersion": rv, "timeoutSeconds": 5}, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "r2"),
        ("DELETED", "r1"),
    ]
    fresh = _watch_lines(kube_api, {"timeoutSeconds": 5}, 1)
    assert fresh[0]["type"] == "ADDED" and fresh[0]["object"]["metadata"]["name"] == "r2"


def test_watch_from_an_expired_version_sends_410(
    local_cluster: LocalCluster, kube_api: httpx.Client
) -> None:
    def shrink(cluster: Any) -> None:
        cluster.storage.history_changes = 2

    local_cluster.read(shrink)
    for i in range(4):
        kube_api.post(TR, json=_run(f"r{i}"))
    event = _watch_lines(kube_api, {"resourceVersion": "1", "timeoutSeconds": 5}, 1)[0]
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_finalizers_hold_deletion_until_removed(kube_api: httpx.Client) -> None:
    body = _run()
    body["metadata"]["finalizers"] = ["example.com/hold"]
    kube_api.post(TR, json=body)
    deleting = kube_api.delete(f"{TR}/r1").json()
    assert deleting["metadata"]["deletionTimestamp"]
    assert kube_api.get(f"{TR}/r1").status_code == 200
    refused = kube_api.patch(
        f"{TR}/r1",
        content=json.dumps({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}),
        headers=MERGE,
    )
    assert refused.status_code == 422
    kube_api.patch(
        f"{TR}/r1", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE
    )
    assert kube_api.get(f"{TR}/r1").status_code == 404


def test_deleting_an_owner_collects_its_pods(kube_api: httpx.Client) -> None:
    owner = kube_api.post(TR, json=_run()).json()
    ref = {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "name": "r1",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    kube_api.post(PODS, json=_pod("owned", ownerReferences=[ref]))
    kube_api.post(PODS, json=_pod("free"))
    kube_api.delete(f"{TR}/r1")
    assert kube_api.get(f"{PODS}/owned").status_code == 404
    assert kube_api.get(f"{PODS}/free").status_code == 200


def test_table_output_uses_printer_columns(kube_api: httpx.Client) -> None:
    kube_api.post(TR, json=_run())
    kube_api.patch(
        f"{TR}/r1/status",
        content=json.dumps({"status": {"phase": "Running", "attempt": 2}}),
        headers=MERGE,
    )
    table = kube_api.get(
        TR, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    ).json()
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:7] == ["Name", "Task", "Phase", "Reason", "Attempt", "Age", "Duration"]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["r1", "hello", "Running", None, 2] and cells[6] is None
    assert cells[5].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_openapi_declares_field_validation_for_custom_kinds(kube_api: httpx.Client) -> None:
    index = kube_api.get("/openapi/v3").json()["paths"]
    doc = kube_api.get(index["apis/durapod.io/v1"]["serverRelativeURL"]).json()
    path = doc["paths"]["/apis/durapod.io/v1/namespaces/{namespace}/taskruns/{name}"]
    assert path["patch"]["x-kubernetes-group-version-kind"]["kind"] == "TaskRun"
    assert {"name": "fieldValidation", "in": "query"}.items() <= path["patch"]["parameters"][
        0
    ].items()


def test_token_review_answers_for_known_tokens(kube_api: httpx.Client) -> None:
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": TOKEN},
    }
    good = kube_api.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review)
    assert good.status_code == 201 and good.json()["status"]["authenticated"] is True
    review["spec"]["token"] = "forged"
    bad = kube_api.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review).json()
    assert bad["status"]["authenticated"] is False
