"""Built-in kinds on the stand-in: decoded against upstream's Kubernetes 1.35 schemas,
defaulted and validated as kube-apiserver does, and served in ``/openapi/v2`` and ``v3``.

Each test reads "a real API server does X; so does ours" and names the upstream code it
matched: apiserver's handlers (``pkg/endpoints/handlers/{create,patch,rest}.go``),
sigs.k8s.io/json's strict decoder, apimachinery's ``resource.ParseQuantity`` and
``util/validation``, and kube-apiserver's ``pkg/apis/*/validation`` and ``*/v1/defaults.go``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from durapod.dev.apiserver import quantities
from tests.helpers import TOKEN, LocalCluster, wait_for

PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"
SECRETS = "/api/v1/namespaces/default/secrets"
SERVICES = "/api/v1/namespaces/default/services"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
ROLES = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles"
MERGE = {"Content-Type": "application/merge-patch+json"}
QUANTITY_ERROR = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


def _pod(name: str = "p", **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", **container}]},
    }


def _deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
            **spec,
        },
    }


def _causes(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "Invalid"
    return [(c["reason"], c["field"], c["message"]) for c in body["details"]["causes"]]


@pytest.fixture
def api(local_cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=local_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


# -- decoding ----------------------------------------------------------------------------


def test_a_malformed_quantity_is_a_decode_error(api: httpx.Client) -> None:
    """A real server parses quantities while decoding (Quantity.UnmarshalJSON), so
    ``512MB`` is a 400 with ParseQuantity's ErrFormatWrong, before any validation."""
    sent = api.post(PODS, json=_pod(resources={"limits": {"memory": "512MB"}}))
    assert sent.status_code == 400
    assert sent.json()["reason"] == "BadRequest"
    assert sent.json()["message"] == (
        f'Pod in version "v1" cannot be handled as a Pod: {QUANTITY_ERROR}'
    )


def test_a_value_of_the_wrong_type_is_a_decode_error(api: httpx.Client) -> None:
    """A real server's Go decoder names the struct field it could not fill
    (encoding/json's UnmarshalTypeError, wrapped by transformDecodeError)."""
    sent = api.post(DEPLOYMENTS, json=_deployment(replicas="three"))
    assert sent.status_code == 400
    assert sent.json()["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot '
        "unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    )


def test_unknown_fields_follow_field_validation(api: httpx.Client) -> None:
    """A real server refuses unknown fields under Strict (a 400 listing each path, as
    sigs.k8s.io/json's strict mode reports them), warns under Warn (the default) and
    drops them silently under Ignore; in every case they are not stored."""
    body = _pod("strict", bogus=1)
    body["spec"]["foo"] = "x"
    strict = api.post(PODS, json=body, params={"fieldValidation": "Strict"})
    assert strict.status_code == 400
    assert strict.json()["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].bogus", unknown field "spec.foo"'
    )

    body["metadata"]["name"] = "warn"
    warned = api.post(PODS, json=body, params={"fieldValidation": "Warn"})
    assert warned.status_code == 201
    assert warned.headers.get_list("Warning") == [
        '299 - "unknown field \\"spec.containers[0].bogus\\""',
        '299 - "unknown field \\"spec.foo\\""',
    ]
    assert "foo" not in warned.json()["spec"]

    body["metadata"]["name"] = "ignore"
    ignored = api.post(PODS, json=body, params={"fieldValidation": "Ignore"})
    assert ignored.status_code == 201
    assert "Warning" not in ignored.headers
    assert "bogus" not in ignored.json()["spec"]["containers"][0]


def test_an_unknown_field_in_a_patch_is_a_422_on_the_patch(api: httpx.Client) -> None:
    """A real server reports a patched built-in that does not decode strictly as an
    invalid ``patch`` (patch.go's strategic patcher prints the patch as a Go map)."""
    assert api.post(CMS, json={"metadata": {"name": "cm"}, "data": {"a": "1"}}).status_code == 201
    sent = api.patch(
        f"{CMS}/cm",
        content=json.dumps({"dataa": {"b": "2"}}),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
        params={"fieldValidation": "Strict"},
    )
    assert _causes(sent) == [
        (
            "FieldValueInvalid",
            "patch",
            'Invalid value: "map[dataa:map[b:2]]": strict decoding error: unknown field "dataa"',
        )
    ]


# -- validation --------------------------------------------------------------------------


def test_a_pod_without_containers_is_invalid(api: httpx.Client) -> None:
    """A real server requires spec.containers (validateContainers: field.Required)."""
    body = _pod()
    body["spec"]["containers"] = []
    sent = api.post(PODS, json=body)
    assert _causes(sent) == [("FieldValueRequired", "spec.containers", "Required value")]
    assert sent.json()["message"] == 'Pod "p" is invalid: spec.containers: Required value'


def test_an_unknown_restart_policy_is_not_supported(api: httpx.Client) -> None:
    """A real server lists the restart policies it supports (validateRestartPolicy)."""
    body = _pod()
    body["spec"]["restartPolicy"] = "Sometimes"
    assert _causes(api.post(PODS, json=body)) == [
        (
            "FieldValueNotSupported",
            "spec.restartPolicy",
            'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
        )
    ]


def test_an_env_name_with_an_equals_sign_is_invalid(api: httpx.Client) -> None:
    """A real 1.35 server checks env names with IsRelaxedEnvVarName (the
    RelaxedEnvironmentVariableValidation gate is on): printable ASCII other than '='."""
    sent = api.post(PODS, json=_pod(env=[{"name": "A=B", "value": "1"}]))
    assert _causes(sent) == [
        (
            "FieldValueInvalid",
            "spec.containers[0].env[0].name",
            'Invalid value: "A=B": a valid environment variable name must consist only of '
            "printable ASCII characters other than '='",
        )
    ]


def test_requests_above_limits_and_bad_container_names_are_invalid(api: httpx.Client) -> None:
    """A real server checks requests against limits (ValidateResourceRequirements, on
    the ``requests`` path with the canonical quantities) and container names
    (DNS-1123 labels, unique)."""
    body = _pod(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1000m"}})
    body["spec"]["containers"][0]["name"] = "Web"
    body["spec"]["containers"].append({"name": "Web", "image": "busybox"})
    causes = _causes(api.post(PODS, json=body))
    assert (
        "FieldValueInvalid",
        "spec.containers[0].resources.requests",
        'Invalid value: "2": must be less than or equal to cpu limit of 1',
    ) in causes
    assert ("FieldValueDuplicate", "spec.containers[1].name", 'Duplicate value: "Web"') in causes
    assert any(
        field == "spec.containers[0].name" and "a lowercase RFC 1123 label" in message
        for _, field, message in causes
    )


def test_a_deployment_selector_must_match_its_template(api: httpx.Client) -> None:
    """A real server requires a Deployment's selector to select its template's labels,
    and keeps the selector immutable in apps/v1 (apps validation and strategy)."""
    body = _deployment()
    body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    assert _causes(api.post(DEPLOYMENTS, json=body)) == [
        (
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            'Invalid value: {"app":"other"}: `selector` does not match template `labels`',
        )
    ]
    assert api.post(DEPLOYMENTS, json=_deployment()).status_code == 201
    changed = api.patch(
        f"{DEPLOYMENTS}/web",
        content=json.dumps({"spec": {"selector": {"matchLabels": {"app": "web", "v": "2"}}}}),
        headers=MERGE,
    )
    assert (
        "FieldValueInvalid",
        "spec.selector",
        'Invalid value: {"matchLabels":{"app":"web","v":"2"}}: field is immutable',
    ) in _causes(changed)


def test_rbac_rules_need_verbs(api: httpx.Client) -> None:
    """A real server refuses a policy rule without verbs (rbac ValidatePolicyRule)."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"]}],
    }
    assert _causes(api.post(ROLES, json=role)) == [
        (
            "FieldValueRequired",
            "rules[0].verbs",
            "Required value: verbs must contain at least one value",
        )
    ]


# -- immutability ------------------------------------------------------------------------


def test_a_running_pods_command_cannot_change(node_cluster: LocalCluster) -> None:
    """A real server lets a pod's image change but nothing else of its containers
    (ValidatePodUpdate's "pod updates may not change fields other than ...")."""
    pod = _pod(
        "sleeper", image="durapod:dev", command=["python", "-c", "import time; time.sleep(60)"]
    )
    node_cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    wait_for(
        lambda: (
            node_cluster.kubectl("get", "pod", "sleeper", "-o", "jsonpath={.status.phase}").stdout
            == "Running"
        ),
        30,
        "the pod to run",
    )
    patch = {"spec": {"containers": [{"name": "c", "command": ["python", "-c", "pass"]}]}}
    refused = node_cluster.kubectl("patch", "pod", "sleeper", "-p", json.dumps(patch), check=False)
    assert refused.returncode != 0
    assert (
        'The Pod "sleeper" is invalid: spec: Forbidden: pod updates may not change fields '
        "other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
        "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
        "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
        "was previously negative)"
    ) in refused.stderr
    image = {"spec": {"containers": [{"name": "c", "image": "durapod:other"}]}}
    node_cluster.kubectl("patch", "pod", "sleeper", "-p", json.dumps(image))
    node_cluster.kubectl("delete", "pod", "sleeper", "--grace-period=0", "--wait=false")


def test_an_immutable_configmap_keeps_its_data(api: httpx.Client) -> None:
    """A real server refuses data changes and un-setting ``immutable`` on an immutable
    ConfigMap (ValidateConfigMapUpdate); its metadata may still change."""
    body = {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True}
    assert api.post(CMS, json=body).status_code == 201
    edit = api.patch(f"{CMS}/frozen", content=json.dumps({"data": {"a": "2"}}), headers=MERGE)
    assert _causes(edit) == [
        ("FieldValueForbidden", "data", "Forbidden: field is immutable when `immutable` is set")
    ]
    thaw = api.patch(f"{CMS}/frozen", content=json.dumps({"immutable": False}), headers=MERGE)
    assert _causes(thaw) == [
        (
            "FieldValueForbidden",
            "immutable",
            "Forbidden: field is immutable when `immutable` is set",
        )
    ]
    label = {"metadata": {"labels": {"tier": "config"}}}
    assert api.patch(f"{CMS}/frozen", content=json.dumps(label), headers=MERGE).status_code == 200


def test_a_secrets_type_and_a_services_cluster_ip_are_immutable(api: httpx.Client) -> None:
    """A real server keeps a Secret's type (ValidateSecretUpdate) and a Service's
    cluster IP (validateUpgradeDowngradeClusterIPs) once set."""
    assert api.post(SECRETS, json={"metadata": {"name": "s"}, "data": {}}).status_code == 201
    retype = api.patch(
        f"{SECRETS}/s", content=json.dumps({"type": "kubernetes.io/basic-auth"}), headers=MERGE
    )
    assert (
        "FieldValueInvalid",
        "type",
        'Invalid value: "kubernetes.io/basic-auth": field is immutable',
    ) in _causes(retype)
    service = {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    created = api.post(SERVICES, json=service)
    assert created.status_code == 201
    ip = created.json()["spec"]["clusterIP"]
    moved = api.patch(
        f"{SERVICES}/svc",
        content=json.dumps({"spec": {"clusterIP": "10.96.0.200", "clusterIPs": ["10.96.0.200"]}}),
        headers=MERGE,
    )
    assert _causes(moved)[0] == (
        "FieldValueInvalid",
        "spec.clusterIPs[0]",
        'Invalid value: ["10.96.0.200"]: may not change once set',
    )
    assert api.get(f"{SERVICES}/svc").json()["spec"]["clusterIP"] == ip


# -- defaults ----------------------------------------------------------------------------


def test_created_objects_carry_upstreams_defaults(api: httpx.Client) -> None:
    """A real server fills in what SetDefaults_* (core and apps v1) and the Service
    registry's allocators do; clients such as helm and kubectl rollout read them."""
    pod = api.post(PODS, json=_pod("d", image="busybox")).json()
    spec = pod["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["schedulerName"]) == (
        "Always",
        "ClusterFirst",
        "default-scheduler",
    )
    assert spec["terminationGracePeriodSeconds"] == 30 and spec["securityContext"] == {}
    assert spec["serviceAccountName"] == "default"
    container = spec["containers"][0]
    assert container["imagePullPolicy"] == "Always"  # no tag means :latest
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"

    dep = api.post(DEPLOYMENTS, json=_deployment()).json()["spec"]
    assert dep["replicas"] == 1 and dep["revisionHistoryLimit"] == 10
    assert dep["progressDeadlineSeconds"] == 600
    assert dep["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert dep["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"

    service = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    svc = api.post(SERVICES, json=service).json()["spec"]
    assert svc["type"] == "ClusterIP" and svc["sessionAffinity"] == "None"
    assert svc["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert svc["clusterIPs"] == [svc["clusterIP"]] and svc["clusterIP"].startswith("10.9")
    assert svc["ipFamilies"] == ["IPv4"]
    secret = api.post(SECRETS, json={"metadata": {"name": "plain"}}).json()
    assert secret["type"] == "Opaque"


def test_quantities_are_stored_in_canonical_form() -> None:
    """A real server writes quantities back canonically (Quantity.CanonicalizeBytes)."""
    cases = {"0.5": "500m", "1024Mi": "1Gi", "2000m": "2", "1.5Gi": "1536Mi", "1e3": "1e3"}
    assert {k: str(quantities.parse(k)) for k in cases} == cases
    with pytest.raises(quantities.QuantityError, match="must match the regular expression"):
        quantities.parse("512MB")


# -- OpenAPI and the real clients ------------------------------------------------------------


def test_kubectl_explain_reads_a_builtin_schema(local_cluster: LocalCluster) -> None:
    """A real server publishes each built-in's schema in its group-version's v3
    document, which ``kubectl explain`` reads."""
    out = local_cluster.kubectl("explain", "deployment.spec.replicas").stdout
    assert "KIND:       Deployment" in out
    assert "FIELD: replicas <integer>" in out
    assert "Number of desired pods" in out


def test_kubectl_create_of_a_deployment_with_a_typo_fails_strictly(
    local_cluster: LocalCluster,
) -> None:
    """kubectl sends fieldValidation=Strict when the OpenAPI declares the parameter; a
    real server then refuses the typo with its strict decoding error."""
    body = _deployment()
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = local_cluster.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": Deployment in version '
        '"v1" cannot be handled as a Deployment: strict decoding error: unknown field '
        '"spec.template.spec.containers[0].imagePullPolicyy"'
    )


def test_kubectl_apply_updates_a_builtin_by_strategic_merge(local_cluster: LocalCluster) -> None:
    """kubectl apply patches a changed built-in by strategic merge, with directives
    such as ``$setElementOrder`` that a real server applies and never stores, so strict
    validation finds nothing unknown; a typo is refused as an invalid patch."""
    body = _deployment()
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    applied = local_cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert "Warning" not in applied.stderr
    image = local_cluster.kubectl(
        "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    ).stdout
    assert image == "nginx:1.28"
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    refused = local_cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith('The request is invalid: patch: Invalid value: "map[')
    assert refused.stderr.strip().endswith(
        'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolicyy"'
    )


def test_strategic_merge_follows_the_upstream_merge_keys(local_cluster: LocalCluster) -> None:
    """A real server merges lists by the patch merge key of their Go field (Service
    ports by ``port``, x-kubernetes-patch-merge-key) and re-adds DefaultTolerationSeconds'
    tolerations on update, so kubectl apply can change a Service's port and add a
    toleration to a pod."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
    service["spec"]["ports"] = [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
    ports = json.loads(
        local_cluster.kubectl("get", "svc", "web", "-o", "jsonpath={.spec.ports}").stdout
    )
    assert [(p["name"], p["port"], p["targetPort"]) for p in ports] == [
        ("http", 8080, 8080),
        ("metrics", 9090, 9090),
    ]
    pod = _pod("tolerant")
    pod["spec"]["tolerations"] = [{"key": "a", "operator": "Exists"}]
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    pod["spec"]["tolerations"].append({"key": "b", "operator": "Exists"})
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    keys = local_cluster.kubectl(
        "get", "pod", "tolerant", "-o", "jsonpath={.spec.tolerations[*].key}"
    ).stdout.split()
    assert keys == ["a", "b", "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]


def test_openapi_v2_and_v3_serve_the_builtins(api: httpx.Client) -> None:
    """A real server lists every group-version in /openapi/v3 and publishes the
    built-ins' definitions and write operations (with fieldValidation) in both
    versions."""
    index = api.get("/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1"} <= set(index)
    core = api.get(index["api/v1"]["serverRelativeURL"]).json()
    pod = core["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert pod["properties"]["spec"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}],
        "description": pod["properties"]["spec"]["description"],
    }
    patch = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert {p["name"] for p in patch["parameters"]} == {"fieldValidation"}

    swagger = api.get("/openapi/v2").json()
    assert swagger["swagger"] == "2.0"
    spec = swagger["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]
    assert spec["properties"]["replicas"]["type"] == "integer"
    assert (
        spec["properties"]["template"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
    )
    assert swagger["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == (
        "int-or-string"
    )
    put = swagger["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["put"]
    assert put["parameters"][0]["name"] == "fieldValidation"
