"""Server-side apply and managedFields on the stand-in, as kube-apiserver does them.

Each test reads "a real API server does X; so does ours", citing the upstream source it
matched: apimachinery's ``pkg/util/managedfields/internal`` (the field manager) and
kubernetes-sigs/structured-merge-diff (``typed`` walks and ``merge/update.go``). The
tables check the pure functions; the rest go through HTTP and the real kubectl.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from durapod.dev.apiserver import managed, structured
from tests.helpers import LocalCluster

CMS = "/api/v1/namespaces/default/configmaps"
TR = "/apis/durapod.io/v1/namespaces/default/taskruns"
APPLY = {"Content-Type": "application/apply-patch+yaml"}
MERGE = {"Content-Type": "application/merge-patch+json"}

#: A CRD-style schema with every list and map semantics SMD knows.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "atomicList": {"type": "array", "items": {"type": "string"}},
                "setList": {
                    "type": "array",
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "string"},
                },
                "mapList": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                    },
                },
                "atomicMap": {
                    "type": "object",
                    "x-kubernetes-map-type": "atomic",
                    "additionalProperties": {"type": "string"},
                },
                "granularMap": {"type": "object", "additionalProperties": {"type": "string"}},
                "struct": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                },
            },
        }
    },
}
TYPES = structured.Types(SCHEMA, lambda s: s)


def _cm(name: str = "cm", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _apply(
    client: httpx.Client,
    path: str,
    obj: dict[str, Any],
    manager: str | None = "test",
    **params: str,
) -> httpx.Response:
    if manager is not None:
        params["fieldManager"] = manager
    return client.patch(
        f"{path}/{obj['metadata']['name']}", content=json.dumps(obj), headers=APPLY, params=params
    )


def _entries(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


# -- the pure functions, as tables ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ({"atomicList": ["a", "b"]}, {"f:atomicList": {}}),
        ({"setList": ["a", "b"]}, {"f:setList": {'v:"a"': {}, 'v:"b"': {}}}),
        (
            {"mapList": [{"name": "x", "value": "1"}]},
            {"f:mapList": {'k:{"name":"x"}': {".": {}, "f:name": {}, "f:value": {}}}},
        ),
        ({"atomicMap": {"k": "v"}}, {"f:atomicMap": {}}),
        ({"granularMap": {"k": "v"}}, {"f:granularMap": {"f:k": {}}}),
        ({"struct": {}}, {"f:struct": {}}),
        ({"struct": {"a": "1"}}, {"f:struct": {"f:a": {}}}),
    ],
)
def test_field_sets_follow_the_schemas_list_and_map_types(
    spec: dict[str, Any], fields: dict[str, Any]
) -> None:
    """A real API server owns list items by key or value and atomic lists and maps whole
    (SMD typed/tofieldset.go, encoded as FieldsV1 by fieldpath/serialize.go); so does ours."""
    assert structured.encode(TYPES.field_set({"spec": spec})) == {"f:spec": fields}


@pytest.mark.parametrize(
    ("live", "config", "merged"),
    [
        ({"atomicList": ["a", "b"]}, {"atomicList": ["c"]}, {"atomicList": ["c"]}),
        ({"setList": ["a", "b"]}, {"setList": ["c", "a"]}, {"setList": ["c", "a", "b"]}),
        (
            {"mapList": [{"name": "x", "value": "1"}, {"name": "y", "value": "2"}]},
            {"mapList": [{"name": "y", "value": "3"}]},
            {"mapList": [{"name": "x", "value": "1"}, {"name": "y", "value": "3"}]},
        ),
        ({"atomicMap": {"k": "v", "j": "w"}}, {"atomicMap": {"k": "z"}}, {"atomicMap": {"k": "z"}}),
        (
            {"granularMap": {"k": "v"}},
            {"granularMap": {"j": "w"}},
            {"granularMap": {"k": "v", "j": "w"}},
        ),
    ],
)
def test_apply_merges_by_the_schemas_list_and_map_types(
    live: dict[str, Any], config: dict[str, Any], merged: dict[str, Any]
) -> None:
    """A real API server merges an applied configuration per list/map type, keeping the
    live order around the applied items (SMD typed/merge.go); so does ours."""
    assert TYPES.merge({"spec": live}, {"spec": config}) == {"spec": merged}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"mapList": [{"name": "x"}, {"name": "x"}]},
            '.spec.mapList: duplicate entries for key [name="x"]',
        ),
        (
            {"mapList": [{"value": "1"}]},
            ".spec.mapList: element 0: associative list with keys has an element that omits "
            'all key fields ["name"] (and doesn\'t have default values for any key fields)',
        ),
        (
            {"setList": [{"a": 1}]},
            ".spec.setList: element 0: associative list without keys has an element that's "
            "a map type",
        ),
    ],
)
def test_an_applied_configuration_must_fit_its_list_types(
    spec: dict[str, Any], message: str
) -> None:
    """A real API server refuses an applied list it cannot key, in SMD's words
    (typed/helpers.go, validate.go); so does ours."""
    with pytest.raises(structured.StructureError) as caught:
        TYPES.field_set({"spec": spec}, strict=True)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("agent", "manager"),
    [
        ("kopf/1.45.2", "kopf"),
        ("kubectl/v1.35.0 (linux/amd64) kubernetes/abc", "kubectl"),
        ("OpenAPI-Generator/31.0.0/python", "OpenAPI-Generator"),
        ("", "unknown"),
    ],
)
def test_a_write_without_field_manager_is_named_by_its_user_agent(agent: str, manager: str) -> None:
    """A real API server names an update's manager by the User-Agent up to its first "/"
    (apiserver handlers/create.go managerOrUserAgent; "unknown" from buildmanagerinfo.go);
    so does ours."""
    assert managed.manager_name("", agent) == manager


def test_update_entries_own_new_maps_themselves() -> None:
    """A real API server's Update entries own a map they add as well as its keys (the
    ``.`` of SMD's Compare), while Apply entries own only what was sent; so does ours."""
    write = managed.Write(TYPES, "v1", "X", "", managed.keeper(False, ""), "T")
    entries = managed.updated(None, {"spec": {"granularMap": {"k": "v"}}}, "me", write)
    assert entries == [
        {
            "manager": "me",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "T",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {".": {}, "f:granularMap": {".": {}, "f:k": {}}}},
        }
    ]


# -- over HTTP -----------------------------------------------------------------------------


def test_apply_creates_a_missing_object_with_an_apply_entry(kube_api: httpx.Client) -> None:
    """A real API server creates the object an apply names (201) and records the applier's
    Apply entry without name or apiVersion fields (stripmeta.go); so does ours."""
    created = _apply(kube_api, CMS, _cm(a="1"), manager="tool")
    assert created.status_code == 201, created.text
    [entry] = created.json()["metadata"]["managedFields"]
    assert entry["manager"] == "tool" and entry["operation"] == "Apply"
    assert entry["apiVersion"] == "v1" and entry["fieldsType"] == "FieldsV1"
    assert entry["time"].endswith("Z") and "subresource" not in entry
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert kube_api.get(f"{CMS}/cm").json()["metadata"]["managedFields"] == [entry]


def test_apply_removes_what_the_applier_stopped_sending_unless_others_own_it(
    kube_api: httpx.Client,
) -> None:
    """A real API server prunes fields the applier applied before and not now, except
    those another manager owns (SMD merge/update.go prune, addBackOwnedItems); so does ours."""
    assert _apply(kube_api, CMS, _cm(a="1", b="2", c="3"), manager="first").status_code == 201
    # Another manager co-owns b by applying the same value: no conflict.
    assert _apply(kube_api, CMS, _cm(b="2"), manager="second").status_code == 200
    after = _apply(kube_api, CMS, _cm(c="3"), manager="first").json()
    assert after["data"] == {"b": "2", "c": "3"}
    owners = _entries(after)
    assert owners["first", "Apply"]["fieldsV1"] == {"f:data": {"f:c": {}}}
    assert owners["second", "Apply"]["fieldsV1"] == {"f:data": {"f:b": {}}}


def test_a_conflicting_apply_is_409_unless_forced(kube_api: httpx.Client) -> None:
    """A real API server refuses to let an applier change fields other managers own, with
    causes of reason FieldManagerConflict (conflict.go NewConflictError), and ``force=true``
    moves the ownership; so does ours."""
    assert _apply(kube_api, CMS, _cm(a="1", b="2"), manager="owner").status_code == 201
    patched = kube_api.patch(f"{CMS}/cm", json={"data": {"c": "3"}}, headers=MERGE)
    assert patched.status_code == 200
    refused = _apply(kube_api, CMS, _cm(a="9", b="9", c="9"), manager="taker")
    assert refused.status_code == 409
    body = refused.json()
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Apply failed with 3 conflicts: conflicts with "owner":\n- .data.a\n- .data.b\n'
        'conflicts with "python-httpx" using v1:\n- .data.c'
    )
    assert body["details"]["causes"][0] == {
        "reason": "FieldManagerConflict",
        "message": 'conflict with "owner"',
        "field": ".data.a",
    }
    one = _apply(kube_api, CMS, _cm(a="9"), manager="taker").json()
    assert one["message"] == 'Apply failed with 1 conflict: conflict with "owner": .data.a'
    forced = _apply(kube_api, CMS, _cm(a="9"), manager="taker", force="true")
    assert forced.status_code == 200 and forced.json()["data"]["a"] == "9"
    owners = _entries(forced.json())
    assert owners["taker", "Apply"]["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert owners["owner", "Apply"]["fieldsV1"] == {"f:data": {"f:b": {}}}


def test_updates_take_fields_without_conflict_and_record_their_manager(
    kube_api: httpx.Client,
) -> None:
    """A real API server lets creates, updates and patches take any field, recording an
    Update entry for ``fieldManager`` or the User-Agent (managedfieldsupdater.go); so
    does ours."""
    body = _cm(a="1")
    created = kube_api.post(CMS, json=body, params={"fieldManager": "maker"}).json()
    assert _entries(created)["maker", "Update"]["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}}
    patched = kube_api.patch(
        f"{CMS}/cm", json={"data": {"a": "2"}}, headers={**MERGE, "User-Agent": "kopf/1.45.2"}
    ).json()
    owners = _entries(patched)
    assert owners["kopf", "Update"]["fieldsV1"] == {"f:data": {"f:a": {}}}
    # The creator keeps the map itself; its key went to the last writer.
    assert owners["maker", "Update"]["fieldsV1"] == {"f:data": {}}


def test_apply_options_are_checked_as_upstream(kube_api: httpx.Client) -> None:
    """A real API server requires ``fieldManager`` for apply and ``force`` only for apply
    (ValidatePatchOptions), and refuses configurations with managedFields or of another
    kind (structuredmerge.go, versioncheck.go); so does ours."""
    missing = _apply(kube_api, CMS, _cm(a="1"), manager=None)
    assert missing.status_code == 422
    assert missing.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
        "is required for apply patch"
    )
    forced = kube_api.patch(f"{CMS}/cm", json={"data": {}}, headers=MERGE, params={"force": "true"})
    assert forced.status_code == 422
    assert "force: Forbidden: may not be specified for non-apply patch" in forced.text
    with_fields = _cm(a="1")
    with_fields["metadata"]["managedFields"] = []
    refused = _apply(kube_api, CMS, with_fields)
    assert refused.status_code == 400
    assert refused.json()["message"] == "metadata.managedFields must be nil"
    wrong = _apply(kube_api, CMS, {**_cm(a="1"), "kind": "Secret"})
    assert wrong.status_code == 400
    assert wrong.json()["message"] == "invalid object type: /v1, Kind=Secret"
    assert kube_api.get(f"{CMS}/cm").status_code == 404


def test_status_writes_are_recorded_for_the_status_subresource(kube_api: httpx.Client) -> None:
    """A real API server records status writes with ``subresource: status`` and only the
    status fields, and an apply to a missing object's status is 404; so does ours."""
    run = {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskRun",
        "metadata": {"name": "r1"},
        "spec": {"task": "hello"},
    }
    assert kube_api.post(TR, json=run, params={"fieldManager": "maker"}).status_code == 201
    status = kube_api.patch(
        f"{TR}/r1/status",
        json={"status": {"phase": "Running"}},
        headers=MERGE,
        params={"fieldManager": "operator"},
    ).json()
    entry = _entries(status)["operator", "Update"]
    assert entry["subresource"] == "status"
    # Only status, with what the schema defaulted in it (CRD defaulting precedes tracking).
    assert set(entry["fieldsV1"]) == {"f:status"} and "f:phase" in entry["fieldsV1"]["f:status"]
    assert "f:status" not in json.dumps(_entries(status)["maker", "Update"]["fieldsV1"])
    gone = {**run, "metadata": {"name": "nobody"}}
    missing = kube_api.patch(
        f"{TR}/nobody/status", content=json.dumps(gone), headers=APPLY, params={"fieldManager": "x"}
    )
    assert missing.status_code == 404


def test_managed_fields_sent_on_an_update_reset_or_are_ignored(kube_api: httpx.Client) -> None:
    """A real API server drops all managedFields when an update sends ``[]``, ignores
    malformed ones, and tracks an object without any only from its next apply, when what
    was there goes to "before-first-apply" (fieldmanager.go decodeLiveOrNew,
    skipnonapplied.go); so does ours."""
    created = _apply(kube_api, CMS, _cm(a="1"), manager="tool").json()
    bad = [{"manager": "x", "operation": "Sideways", "apiVersion": "v1", "fieldsType": "FieldsV1"}]
    kept = kube_api.patch(
        f"{CMS}/cm", json={"metadata": {"managedFields": bad}}, headers=MERGE
    ).json()
    assert kept["metadata"]["managedFields"] == created["metadata"]["managedFields"]
    reset = kube_api.patch(
        f"{CMS}/cm", json={"metadata": {"managedFields": []}}, headers=MERGE
    ).json()
    assert "managedFields" not in reset["metadata"]
    untracked = kube_api.patch(f"{CMS}/cm", json={"data": {"b": "2"}}, headers=MERGE).json()
    assert "managedFields" not in untracked["metadata"]
    applied = _apply(kube_api, CMS, _cm(c="3"), manager="tool").json()
    owners = _entries(applied)
    assert owners["before-first-apply", "Update"]["fieldsV1"] == {
        "f:data": {".": {}, "f:a": {}, "f:b": {}}
    }
    assert owners["tool", "Apply"]["fieldsV1"] == {"f:data": {"f:c": {}}}


def test_more_than_ten_update_managers_fold_into_ancient_changes(kube_api: httpx.Client) -> None:
    """A real API server keeps at most ten Update entries, folding the oldest into
    "ancient-changes" (capmanagers.go); so does ours."""
    kube_api.post(CMS, json=_cm(), params={"fieldManager": "m00"})
    for n in range(1, 12):
        kube_api.patch(
            f"{CMS}/cm",
            json={"data": {f"k{n:02}": "v"}},
            headers=MERGE,
            params={"fieldManager": f"m{n:02}"},
        )
    entries = kube_api.get(f"{CMS}/cm").json()["metadata"]["managedFields"]
    updates = [e["manager"] for e in entries if e["operation"] == "Update"]
    assert len(updates) == 10 and "ancient-changes" in updates
    ancient = next(e for e in entries if e["manager"] == "ancient-changes")
    assert set(ancient["fieldsV1"]["f:data"]) >= {"f:k01", "f:k02"}


def test_built_in_lists_merge_by_their_patch_merge_keys(kube_api: httpx.Client) -> None:
    """A real API server merges a built-in kind's keyed lists item by item (containers by
    name, ports by containerPort and defaulted protocol), so two appliers can each own a
    container; so does ours."""
    deployments = "/apis/apps/v1/namespaces/default/deployments"

    def deployment(*containers: dict[str, Any]) -> dict[str, Any]:
        labels = {"app": "web"}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
            },
        }

    app = {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}
    side = {"name": "side", "image": "side:1"}
    first = _apply(kube_api, deployments, deployment(app), manager="chart")
    assert first.status_code == 201, first.text
    both = _apply(kube_api, deployments, deployment(side), manager="mesh")
    assert both.status_code == 200, both.text
    containers = both.json()["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "side"]
    again = _apply(kube_api, deployments, deployment({**app, "image": "app:2"}), manager="chart")
    assert again.status_code == 200, again.text
    spec = again.json()["spec"]["template"]["spec"]
    assert [(c["name"], c["image"]) for c in spec["containers"]] == [
        ("app", "app:2"),
        ("side", "side:1"),
    ]
    assert len(spec["containers"][0]["ports"]) == 1


# -- with kubectl --------------------------------------------------------------------------

CM_YAML = """apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
  size: large
"""


def test_kubectl_server_side_apply_drops_removed_keys(local_cluster: LocalCluster) -> None:
    """On a real cluster ``kubectl apply --server-side`` of a manifest without a key
    removes that key, and ``--show-managed-fields`` shows kubectl's Apply entry; so here."""
    applied = local_cluster.kubectl("apply", "--server-side", "-f", "-", input=CM_YAML)
    assert "configmap/settings serverside-applied" in applied.stdout
    local_cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=CM_YAML.replace("  size: large\n", "")
    )
    shown = json.loads(
        local_cluster.kubectl(
            "get", "configmap", "settings", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert shown["data"] == {"color": "blue"}
    [entry] = shown["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Apply")
    assert entry["fieldsV1"] == {"f:data": {"f:color": {}}}
    hidden = json.loads(local_cluster.kubectl("get", "configmap", "settings", "-o", "json").stdout)
    assert "managedFields" not in hidden["metadata"]


def test_kubectl_conflict_and_force_conflicts(local_cluster: LocalCluster) -> None:
    """On a real cluster a second field manager changing kubectl's key fails with the
    server's conflict message, and ``--force-conflicts`` wins; so here."""
    local_cluster.kubectl("apply", "--server-side", "-f", "-", input=CM_YAML)
    changed = CM_YAML.replace("blue", "red")
    refused = local_cluster.kubectl(
        "apply", "--server-side", "--field-manager=other", "-f", "-", input=changed, check=False
    )
    assert refused.returncode != 0
    assert (
        'error: Apply failed with 1 conflict: conflict with "kubectl": .data.color'
        in refused.stderr
    )
    local_cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
        input=changed,
    )
    shown = json.loads(
        local_cluster.kubectl(
            "get", "configmap", "settings", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert shown["data"]["color"] == "red"
    owners = _entries(shown)
    assert owners["other", "Apply"]["fieldsV1"]["f:data"] == {"f:color": {}, "f:size": {}}
    # Forcing took the conflicting key; the one both set alike stays shared.
    assert owners["kubectl", "Apply"]["fieldsV1"] == {"f:data": {"f:size": {}}}


def test_kubectl_moves_from_client_side_to_server_side_apply(local_cluster: LocalCluster) -> None:
    """On a real cluster a manifest first applied client-side can be applied server-side
    with a changed value (the server forces conflicts its last-applied annotation explains:
    lastappliedmanager.go), kubectl migrates the ownership, and a key dropped later goes;
    so here."""
    local_cluster.kubectl("apply", "-f", "-", input=CM_YAML)
    changed = CM_YAML.replace("blue", "green")
    local_cluster.kubectl("apply", "--server-side", "-f", "-", input=changed)
    local_cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=changed.replace("  size: large\n", "")
    )
    shown = json.loads(local_cluster.kubectl("get", "configmap", "settings", "-o", "json").stdout)
    assert shown["data"] == {"color": "green"}
    last = json.loads(
        shown["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert last["data"] == {"color": "green"}


def test_kubectl_server_side_apply_of_a_taskrun(
    kube_api: httpx.Client, local_cluster: LocalCluster
) -> None:
    """On a real cluster ``kubectl apply --server-side`` works for a custom resource and
    leaves its status to the status subresource; so here, for durapod's TaskRun."""
    run = (
        "apiVersion: durapod.io/v1\nkind: TaskRun\nmetadata:\n  name: ssa-run\n"
        "spec:\n  task: hello\n"
    )
    applied = local_cluster.kubectl("apply", "--server-side", "-f", "-", input=run)
    assert "taskrun.durapod.io/ssa-run serverside-applied" in applied.stdout
    stored = kube_api.get(f"{TR}/ssa-run").json()
    assert stored["spec"]["task"] == "hello"
    entry = _entries(stored)["kubectl", "Apply"]
    assert entry["apiVersion"] == "durapod.io/v1"
    assert entry["fieldsV1"] == {"f:spec": {"f:task": {}}}
    local_cluster.kubectl("apply", "--server-side", "-f", "-", input=run)
    assert kube_api.get(f"{TR}/ssa-run").json()["metadata"]["generation"] == 1
