"""Protobuf request bodies: client-go's typed clients send built-in kinds as
``application/vnd.kubernetes.protobuf`` (kubectl create, kubectl auth, Helm's release
storage, DeleteOptions) and the stand-in takes them as kube-apiserver does, answering JSON.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]

from durapod.dev.apiserver import errors, protobuf
from tests.helpers import BIN, LocalCluster

PB = {"Content-Type": protobuf.MEDIA_TYPE, "Accept": f"{protobuf.MEDIA_TYPE},application/json"}
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def _message(name: str, data: dict[str, Any]) -> Any:
    """A message of the stand-in's table, built from its proto3-JSON form."""
    return json_format.ParseDict(data, protobuf.message_class(name)())


def _body(api_version: str, kind: str, message: str, data: dict[str, Any]) -> bytes:
    return protobuf.envelope(api_version, kind, _message(message, data))


# -- what kubectl 1.35 sends, byte for byte (captured with kubectl -v=9) -------------------

KUBECTL_BODIES = {
    "create token bot --audience=x --duration=10m": (
        "6b3873000a280a1861757468656e7469636174696f6e2e6b38732e696f2f7631120c546f6b656e5265"
        "717565737412200a100a0012001a0022002a0032003800420012060a017820d8041a040a0012001a00"
        "2200",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {},
            "spec": {"audiences": ["x"], "expirationSeconds": 600},
            "status": {"token": ""},
        },
    ),
    "auth can-i list pods --subresource=log -n kube-system": (
        "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a"
        "65637441636365737352657669657712440a100a0012001a0022002a0032003800420012260a240a0b"
        "6b7562652d73797374656d12046c6973741a0022002a04706f647332036c6f673a001a08080012001a"
        "0020001a002200",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {
                "resourceAttributes": {
                    "namespace": "kube-system",
                    "verb": "list",
                    "resource": "pods",
                    "subresource": "log",
                }
            },
            "status": {"allowed": False},
        },
    ),
    "auth can-i get /healthz": (
        "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a"
        "656374416363657373526576696577122f0a100a0012001a0022002a003200380042001211120f0a08"
        "2f6865616c74687a12036765741a08080012001a0020001a002200",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}},
            "status": {"allowed": False},
        },
    ),
    "auth whoami": (
        "6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c66537562"
        "6a656374526576696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a0022"
        "00",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
            "metadata": {},
            "status": {"userInfo": {}},
        },
    ),
    "auth can-i --list": (
        "6b3873000a310a17617574686f72697a6174696f6e2e6b38732e696f2f7631121653656c665375626a"
        "65637452756c657352657669657712230a100a0012001a0022002a0032003800420012090a0764656661"
        "756c741a04180022001a002200",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "metadata": {},
            "spec": {"namespace": "default"},
        },
    ),
}


@pytest.mark.parametrize("command", list(KUBECTL_BODIES))
def test_kubectl_bodies_decode_to_the_json_a_json_client_sends(command: str) -> None:
    """kube-apiserver decodes kubectl's protobuf into the Go types, whose JSON omits the
    empty fields gogo-protobuf always writes but keeps non-omitempty ones such as
    ``status.allowed``; our decoder hands the same object to the handlers."""
    hex_body, expected = KUBECTL_BODIES[command]
    assert protobuf.decode(bytes.fromhex(hex_body)) == expected


# -- unit-level: every special type the table converts ------------------------------------


def test_object_meta_times_owners_and_managed_fields() -> None:
    """metav1.Time is RFC 3339 at second precision, an empty Time is null (omitted), a
    false ``controller`` pointer survives, FieldsV1 is the JSON object it carries
    (apimachinery pkg/apis/meta/v1 time_proto.go, types.go)."""
    fields: dict[str, Any] = {"f:data": {"f:a": {}}}
    body = _body(
        "v1",
        "ConfigMap",
        "ConfigMap",
        {
            "metadata": {
                "name": "c",
                "namespace": "",
                "generation": "0",
                "creationTimestamp": {},
                "deletionTimestamp": {"seconds": "1700000000", "nanos": 999},
                "deletionGracePeriodSeconds": "0",
                "labels": {"a": "b"},
                "annotations": {"note": ""},
                "finalizers": ["example.com/f"],
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u1"},
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "p",
                        "uid": "u2",
                        "controller": False,
                        "blockOwnerDeletion": True,
                    },
                ],
                "managedFields": [
                    {
                        "manager": "kubectl",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": {"seconds": "1700000000"},
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"raw": base64.b64encode(json.dumps(fields).encode()).decode()},
                    }
                ],
            },
            "immutable": False,
            "data": {"a": "1"},
            "binaryData": {"b": base64.b64encode(b"\x00\xff").decode()},
        },
    )
    assert protobuf.decode(body, "ConfigMap", "v1") == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "c",
            "deletionTimestamp": "2023-11-14T22:13:20Z",
            "deletionGracePeriodSeconds": 0,
            "labels": {"a": "b"},
            "annotations": {"note": ""},
            "finalizers": ["example.com/f"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u1"},
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "p",
                    "uid": "u2",
                    "controller": False,
                    "blockOwnerDeletion": True,
                },
            ],
            "managedFields": [
                {
                    "manager": "kubectl",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2023-11-14T22:13:20Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields,
                }
            ],
        },
        "immutable": False,
        "data": {"a": "1"},
        "binaryData": {"b": "AP8="},
    }


def test_lease_micro_times_and_pointer_zeros() -> None:
    """MicroTime keeps microseconds (RFC 3339 with six digits); LeaseSpec's pointers keep
    a zero the client sent (apimachinery micro_time_proto.go; api coordination/v1)."""
    body = _body(
        "coordination.k8s.io/v1",
        "Lease",
        "Lease",
        {
            "metadata": {"name": "l"},
            "spec": {
                "holderIdentity": "me",
                "leaseDurationSeconds": 15,
                "renewTime": {"seconds": "1700000000", "nanos": 123456789},
                "leaseTransitions": 0,
            },
        },
    )
    assert protobuf.decode(body)["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "renewTime": "2023-11-14T22:13:20.123456Z",
        "leaseTransitions": 0,
    }


def test_quantities_and_int_or_strings() -> None:
    """resource.Quantity travels as its string, intstr.IntOrString as {type, intVal,
    strVal} and is a number or a string in JSON; a pointer IntOrString of 0 is kept."""
    quota = _body(
        "v1",
        "ResourceQuota",
        "ResourceQuota",
        {"metadata": {"name": "q"}, "spec": {"hard": {"cpu": {"string": "500m"}}}},
    )
    assert protobuf.decode(quota)["spec"] == {"hard": {"cpu": "500m"}}
    pdb = _body(
        "policy/v1",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        {
            "metadata": {"name": "p"},
            "spec": {
                "minAvailable": {"type": "0", "intVal": 0},
                "maxUnavailable": {"type": "1", "strVal": "25%"},
                "selector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": []}]
                },
            },
        },
    )
    assert protobuf.decode(pdb)["spec"] == {
        "minAvailable": 0,
        "maxUnavailable": "25%",
        "selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
    }
    service = _body(
        "v1",
        "Service",
        "Service",
        {
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": {"type": "1", "strVal": "http"}}]},
        },
    )
    assert protobuf.decode(service)["spec"] == {"ports": [{"port": 80, "targetPort": "http"}]}


def test_token_request_and_access_review_messages() -> None:
    """TokenRequest's boundObjectRef (proto field ``uID``, JSON ``uid``) and the access
    reviews' attribute messages, selectors and ExtraValue maps decode to their JSON."""
    token = _body(
        "authentication.k8s.io/v1",
        "TokenRequest",
        "TokenRequest",
        {
            "spec": {
                "audiences": ["durapod"],
                "expirationSeconds": "3600",
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"},
            }
        },
    )
    assert protobuf.decode(token)["spec"] == {
        "audiences": ["durapod"],
        "expirationSeconds": 3600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"},
    }
    review = _body(
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        "SubjectAccessReview",
        {
            "spec": {
                "user": "alice",
                "groups": ["devs"],
                "extra": {"scopes": {"items": ["a", "b"]}},
                "resourceAttributes": {
                    "verb": "list",
                    "resource": "pods",
                    "labelSelector": {
                        "requirements": [{"key": "app", "operator": "In", "values": ["x"]}]
                    },
                    "fieldSelector": {"rawSelector": "spec.nodeName=n"},
                },
            }
        },
    )
    assert protobuf.decode(review)["spec"] == {
        "user": "alice",
        "groups": ["devs"],
        "extra": {"scopes": ["a", "b"]},
        "resourceAttributes": {
            "verb": "list",
            "resource": "pods",
            "labelSelector": {"requirements": [{"key": "app", "operator": "In", "values": ["x"]}]},
            "fieldSelector": {"rawSelector": "spec.nodeName=n"},
        },
    }
    token_review = _body(
        "authentication.k8s.io/v1",
        "TokenReview",
        "TokenReview",
        {"spec": {"token": "t", "audiences": ["durapod"]}},
    )
    assert protobuf.decode(token_review)["spec"] == {"token": "t", "audiences": ["durapod"]}


def test_delete_options_in_any_group_version() -> None:
    """client-go sends DeleteOptions in its own client's group version; kube-apiserver
    takes them from any (apiserver pkg/endpoints/handlers/delete.go)."""
    for api_version in ("v1", "apps/v1", "meta.k8s.io/v1"):
        body = _body(
            api_version,
            "DeleteOptions",
            "DeleteOptions",
            {
                "gracePeriodSeconds": "0",
                "preconditions": {"uid": "u", "resourceVersion": "7"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
            },
        )
        assert protobuf.decode(body, "DeleteOptions", "meta.k8s.io/v1") == {
            "apiVersion": api_version,
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": "u", "resourceVersion": "7"},
            "propagationPolicy": "Foreground",
            "dryRun": ["All"],
        }


def test_envelope_without_type_takes_the_handlers_kind() -> None:
    """The protobuf serializer fills a missing kind/version from the type it decodes into
    (apimachinery protobuf.go ``copyKindDefaults``)."""
    body = protobuf.envelope("", "", _message("ConfigMap", {"metadata": {"name": "c"}}))
    assert protobuf.decode(body, "ConfigMap", "v1") == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty data"),
        (b"k8s\x00", "empty body"),
        (b"{}", "provided data does not appear to be a protobuf message"),
        (b"k8s\x00\xff\xff\xff", "the object provided is unrecognized (must be of type ConfigMap)"),
        (
            protobuf.envelope("v1", "ConfigMap", _message("ConfigMap", {}))[:-2] + b"\x08",
            "the object provided is unrecognized (must be of type ConfigMap)",
        ),
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes, message: str) -> None:
    """A body the protobuf serializer cannot read is a 400 (apiserver handlers/rest.go
    ``transformDecodeError``), never a 500."""
    with pytest.raises(errors.StatusError) as caught:
        protobuf.decode(body, "ConfigMap", "v1")
    assert caught.value.code == 400 and message in caught.value.message


def test_malformed_message_inside_a_good_envelope_is_a_bad_request() -> None:
    """The real server words it ``<Kind> in version "v1" cannot be handled as a <Kind>``."""
    unknown = protobuf.message_class("Unknown")(raw=b"\x0a\x05\x0a\x01")
    unknown.typeMeta.apiVersion, unknown.typeMeta.kind = "v1", "ConfigMap"
    with pytest.raises(errors.StatusError) as caught:
        protobuf.decode(protobuf.MAGIC + unknown.SerializeToString(), "ConfigMap", "v1")
    assert caught.value.code == 400
    assert caught.value.message.startswith(
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
    )


# -- over HTTP ----------------------------------------------------------------------------


def test_protobuf_create_update_read_back_as_json(kube_api: httpx.Client) -> None:
    """A real API server stores a protobuf Secret and answers JSON to a client that
    accepts it; Secret.data reads back base64 as in any JSON client's view."""
    secret = {
        "metadata": {"name": "s", "labels": {"owner": "helm"}},
        "type": "helm.sh/release.v1",
        "data": {"release": base64.b64encode(b"\x00\x01\xfe\xff").decode()},
    }
    created = kube_api.post(
        "/api/v1/namespaces/default/secrets",
        content=_body("v1", "Secret", "Secret", secret),
        headers=PB,
    )
    assert created.status_code == 201, created.text
    assert created.headers["Content-Type"].startswith("application/json")
    read = kube_api.get("/api/v1/namespaces/default/secrets/s").json()
    assert read["data"] == {"release": "AAH+/w=="}
    assert read["type"] == "helm.sh/release.v1"
    assert read["metadata"]["labels"] == {"owner": "helm"}
    secret["data"] = {"release": base64.b64encode(b"v2").decode()}
    updated = kube_api.put(
        "/api/v1/namespaces/default/secrets/s",
        content=_body("v1", "Secret", "Secret", secret),
        headers=PB,
    )
    assert updated.status_code == 200, updated.text
    assert kube_api.get("/api/v1/namespaces/default/secrets/s").json()["data"] == {
        "release": "djI="
    }


def test_unknown_kinds_and_custom_resources_are_415(kube_api: httpx.Client) -> None:
    """Custom resources take no protobuf (apiextensions-apiserver serves JSON and YAML
    only), and a built-in kind the stand-in cannot decode is refused the same way."""
    for path, body in (
        (
            "/apis/apps/v1/namespaces/default/deployments",
            _body("apps/v1", "Deployment", "ConfigMap", {"metadata": {"name": "d"}}),
        ),
        (
            "/apis/durapod.io/v1/namespaces/default/taskruns",
            _body("v1", "ConfigMap", "ConfigMap", {"metadata": {"name": "c"}}),
        ),
    ):
        response = kube_api.post(path, content=body, headers=PB)
        assert response.status_code == 415, response.text
        assert response.json()["reason"] == "UnsupportedMediaType"
        assert response.json()["message"] == (
            "the body of the request was in an unknown format - accepted media types "
            "include: application/json, application/yaml"
        )


def test_malformed_protobuf_over_http_is_400(kube_api: httpx.Client) -> None:
    """Malformed protobuf and malformed JSON DeleteOptions are 400s, as kube-apiserver
    answers them, not 500s."""
    response = kube_api.post(CONFIGMAPS, content=b"k8s\x00\xff\xff", headers=PB)
    assert response.status_code == 400 and response.json()["reason"] == "BadRequest"
    kube_api.post(CONFIGMAPS, json={"metadata": {"name": "c"}})
    for content, headers in ((b"k8s\x00\x0a", PB), (b"{nope", {})):
        bad = kube_api.request("DELETE", f"{CONFIGMAPS}/c", content=content, headers=headers)
        assert bad.status_code == 400, bad.text
    assert kube_api.get(f"{CONFIGMAPS}/c").status_code == 200


def _delete(client: httpx.Client, path: str, options: dict[str, Any]) -> httpx.Response:
    body = _body("v1", "DeleteOptions", "DeleteOptions", options)
    return client.request("DELETE", path, content=body, headers=PB)


def test_protobuf_delete_options_preconditions_are_honoured(kube_api: httpx.Client) -> None:
    """A real API server refuses a delete whose preconditions do not match the object
    (409 Conflict) and deletes when they do (apimachinery meta/v1 Preconditions)."""
    created = kube_api.post(CONFIGMAPS, json={"metadata": {"name": "c"}}).json()["metadata"]
    stale = _delete(kube_api, f"{CONFIGMAPS}/c", {"preconditions": {"uid": "not-the-uid"}})
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    old_rv = _delete(kube_api, f"{CONFIGMAPS}/c", {"preconditions": {"resourceVersion": "1"}})
    assert old_rv.status_code == 409
    assert kube_api.get(f"{CONFIGMAPS}/c").status_code == 200
    done = _delete(
        kube_api,
        f"{CONFIGMAPS}/c",
        {"preconditions": {"uid": created["uid"], "resourceVersion": created["resourceVersion"]}},
    )
    assert done.status_code == 200, done.text
    assert kube_api.get(f"{CONFIGMAPS}/c").status_code == 404


def test_protobuf_delete_options_propagation_policy_is_honoured(kube_api: httpx.Client) -> None:
    """``propagationPolicy: Orphan`` keeps the dependents (their owner reference is
    dropped); the default collects them."""
    for policy, dependent_survives in (("Orphan", True), (None, False)):
        owner = kube_api.post(CONFIGMAPS, json={"metadata": {"name": "owner"}}).json()
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner"}
        ref["uid"] = owner["metadata"]["uid"]
        kube_api.post(CONFIGMAPS, json={"metadata": {"name": "dep", "ownerReferences": [ref]}})
        options = {"propagationPolicy": policy} if policy else {}
        assert _delete(kube_api, f"{CONFIGMAPS}/owner", options).status_code == 200
        dependent = kube_api.get(f"{CONFIGMAPS}/dep")
        if dependent_survives:
            assert dependent.status_code == 200
            assert not dependent.json()["metadata"].get("ownerReferences")
            kube_api.delete(f"{CONFIGMAPS}/dep")
        else:
            assert dependent.status_code == 404


def test_delete_options_from_the_query_only_without_a_body(kube_api: httpx.Client) -> None:
    """Query parameters are DeleteOptions only when the body is empty (apiserver
    handlers/delete.go); lightkube sends them that way."""
    owner = kube_api.post(CONFIGMAPS, json={"metadata": {"name": "owner"}}).json()
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner"}
    ref["uid"] = owner["metadata"]["uid"]
    kube_api.post(CONFIGMAPS, json={"metadata": {"name": "dep", "ownerReferences": [ref]}})
    response = kube_api.delete(f"{CONFIGMAPS}/owner", params={"propagationPolicy": "Orphan"})
    assert response.status_code == 200
    assert kube_api.get(f"{CONFIGMAPS}/dep").status_code == 200
    bad = kube_api.delete(f"{CONFIGMAPS}/dep", params={"gracePeriodSeconds": "soon"})
    assert bad.status_code == 400


# -- real clients -------------------------------------------------------------------------


def test_kubectl_create_configmap_secret_namespace(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """``kubectl create configmap|secret|namespace`` send protobuf through client-go's typed
    clients; on a real cluster they succeed and the objects read back as sent."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00\xffbinary")
    local_cluster.kubectl("create", "configmap", "x", "--from-literal=a=b")
    local_cluster.kubectl(
        "create", "secret", "generic", "s", "--from-literal=k=v", f"--from-file=blob={blob}"
    )
    local_cluster.kubectl("create", "namespace", "n")
    configmap = json.loads(local_cluster.kubectl("get", "configmap", "x", "-o", "json").stdout)
    assert configmap["data"] == {"a": "b"}
    secret = json.loads(local_cluster.kubectl("get", "secret", "s", "-o", "json").stdout)
    assert secret["data"] == {
        "k": base64.b64encode(b"v").decode(),
        "blob": base64.b64encode(b"\x00\xffbinary").decode(),
    }
    namespace = json.loads(local_cluster.kubectl("get", "namespace", "n", "-o", "json").stdout)
    assert namespace["metadata"]["name"] == "n"


def test_helm_release_storage_round_trips(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """Helm keeps each revision in a Secret written by client-go's typed client (protobuf
    create, update, delete with DeleteOptions); the release reads back intact."""
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mini\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hi\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{ .Release.Name }}-cm'\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )

    def helm(*args: str) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(local_cluster.kubeconfig),
            **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")},
        }
        result = subprocess.run(
            [str(BIN / "helm"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"

    helm("install", "r1", str(chart))
    helm("upgrade", "r1", str(chart), "--set", "greeting=yo")
    secrets = "/api/v1/namespaces/default/secrets"
    with httpx.Client(base_url=local_cluster.url) as client:
        stored = client.get(f"{secrets}/sh.helm.release.v1.r1.v2").json()
        assert stored["metadata"]["labels"]["status"] == "deployed"
        # data.release is base64 (Secret JSON) of base64 of gzipped release JSON.
        release = json.loads(
            gzip.decompress(base64.b64decode(base64.b64decode(stored["data"]["release"])))
        )
        assert release["name"] == "r1" and release["config"] == {"greeting": "yo"}
        helm("uninstall", "r1")
        left = client.get(secrets, params={"labelSelector": "owner=helm"}).json()["items"]
        assert left == []
