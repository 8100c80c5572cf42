"""The Helm chart ``helm/durapod``, rendered by the real Helm (helm-unittest style, as
pytest over ``helm template``): each value does what values.yaml says, the RBAC is exactly
``durapod.permissions``, every pod is locked down, the generated files have not drifted,
and a mistyped key is refused by the schema. Installing on the stand-in is
``test_chart_install.py``."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from durapod import __version__, chart, permissions
from durapod.resources import crds
from tests.chart_helpers import (
    CHART,
    EXTERNAL,
    NAMESPACE,
    container,
    env,
    find,
    helm,
    merge,
    one,
    pod_specs,
    render,
    template_text,
)
from tests.helpers import REPO

OPERATOR, API, POSTGRES = "durapod-operator", "durapod-api", "durapod-postgres"
BUNDLED = {"postgres": {"bundled": {"enabled": True}}}


def _values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def _rules(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(docs, kind, name)["rules"]
    return rules


# -- the chart's identity and its generated files -----------------------------------------


def test_chart_version_and_app_version_are_the_package_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["apiVersion"] == "v2"
    assert meta["version"] == meta["appVersion"] == project["version"] == __version__


def test_generated_crd_templates_and_rbac_rules_have_not_drifted() -> None:
    for relative, text in chart.files().items():
        path = CHART / relative
        assert path.exists() and path.read_text() == text, (
            f"{relative} drifted from its source: run `make chart`"
        )
    made = {p.name for p in (CHART / "templates").glob("crd-*.yaml")}
    assert made == {f"crd-{m['metadata']['name']}.yaml" for m in crds.all_crds()}


def test_helm_lint_strict_is_clean_with_defaults_and_each_ci_values_file() -> None:
    for extra in ([], *(["-f", str(p)] for p in sorted((CHART / "ci").glob("*.yaml")))):
        result = helm("lint", "--strict", str(CHART), *extra)
        assert "0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


# -- values.yaml and its schema -----------------------------------------------------------


def _documented_keys() -> dict[str, bool]:
    """Each key's dotted path in values.yaml, and whether a ``# --`` comment documents it."""
    found: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = re.match(r"^( *)([A-Za-z][\w.]*):", line)
        if match and not stripped.startswith("-"):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            found[".".join(k for _, k in stack)] = bool(comment) and comment[0].startswith("# --")
        comment = []
    return found


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths of the values a user sets: non-maps, and maps left empty."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not path.endswith(("resources", "hard")):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def test_every_value_is_documented_in_helm_docs_style() -> None:
    documented = _documented_keys()
    for leaf in _leaves(_values()):
        parts = leaf.split(".")
        ancestry = [".".join(parts[: n + 1]) for n in range(len(parts))]
        assert any(documented.get(path) for path in ancestry), f"{leaf} has no `# --` comment"


def test_the_schema_declares_exactly_the_values_and_refuses_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: Any, node: dict[str, Any], path: str) -> None:
        if "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{path or 'top'} takes unknown keys"
        declared = set(node["properties"]) - ({"global"} if not path else set())
        assert set(values) == declared, f"{path or 'top'}: values.yaml and schema differ"
        for key, sub in node["properties"].items():
            if key in values and isinstance(values[key], dict):
                walk(values[key], sub, f"{path}.{key}".lstrip("."))

    walk(_values(), schema, "")


def test_a_mistyped_key_fails_with_the_schemas_message() -> None:
    result = template_text(EXTERNAL, {"operator": {"replica": 3}}, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "replica" in result.stderr and "additional properties" in result.stderr


def test_a_wrong_type_and_an_unknown_enum_value_fail_with_the_schemas_message() -> None:
    wrong = template_text(EXTERNAL, {"api": {"replicas": "two"}}, check=False)
    assert wrong.returncode != 0 and "/api/replicas" in wrong.stderr
    mode = template_text(EXTERNAL, {"postgres": {"sslmode": "on"}}, check=False)
    assert mode.returncode != 0 and "/postgres/sslmode" in mode.stderr


#: For each value, another one of the right type (with the values that make it count).
CHANGES: dict[str, Any] = {
    "nameOverride": "tasks",
    "fullnameOverride": "dp",
    "commonLabels": {"team": "platform"},
    "image.repository": "registry.example/durapod",
    "image.tag": "9.9.9",
    "image.digest": "sha256:" + "a" * 64,
    "image.pullPolicy": "Always",
    "imagePullSecrets": [{"name": "regcred"}],
    "crds.enabled": False,
    "crds.keep": False,
    "watchNamespaces": ["team-a"],
    "securityContext.runAsUser": 20001,
    "securityContext.runAsGroup": 20001,
    "securityContext.fsGroup": 20001,
    "postgres.host": "other.example",
    "postgres.port": 6543,
    "postgres.database": "tasks",
    "postgres.sslmode": "verify-full",
    "postgres.existingSecret": "other-secret",
    "postgres.userKey": "user",
    "postgres.passwordKey": "pass",
    "postgres.urlKey": "url",
    "postgres.bundled.enabled": True,
    "postgres.bundled.image.repository": "registry.example/postgres",
    "postgres.bundled.image.tag": "16.10",
    "postgres.bundled.image.pullPolicy": "Always",
    "postgres.bundled.runAsUser": 70,
    "postgres.bundled.persistence.size": "1Gi",
    "postgres.bundled.persistence.storageClassName": "fast",
    "postgres.bundled.resources": {"requests": {"cpu": "1"}},
    "operator.apiURL": "http://durapod.example",
    "operator.healthPort": 9000,
    "operator.metricsPort": 9100,
    "operator.workers": 4,
    "operator.resyncSeconds": 30,
    "api.port": 9090,
    "api.service.type": "NodePort",
    "api.service.port": 8080,
    "api.service.annotations": {"a": "b"},
    "api.databaseTimeoutSeconds": 10,
    "api.tokens.existingSecret": "callers",
    "api.tokens.key": "list",
    "api.tokens.generate": False,
    "api.preStopSleepSeconds": 10,
    "networkPolicy.enabled": False,
    "networkPolicy.api.allowedNamespaces": ["callers"],
    "networkPolicy.api.extraFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
    "networkPolicy.egress.enabled": True,
    "networkPolicy.egress.kubeAPIServerCIDRs": ["10.96.0.2/32"],
    "networkPolicy.egress.kubeAPIServerPorts": [8443],
    "networkPolicy.egress.postgresCIDRs": ["10.20.0.0/16"],
    "networkPolicy.egress.extraTo": [
        {"to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}], "ports": [{"port": 4318}]}
    ],
    "resourceQuota.enabled": True,
    "resourceQuota.namespaces": ["team-b"],
    "resourceQuota.hard": {"pods": "5"},
    "metrics.serviceMonitor.enabled": True,
    "metrics.serviceMonitor.interval": "60s",
    "metrics.serviceMonitor.labels": {"release": "prometheus"},
    "metrics.prometheusRule.enabled": True,
    "metrics.prometheusRule.labels": {"release": "prometheus"},
    "metrics.prometheusRule.failingRunsRatio": 0.2,
    "metrics.prometheusRule.queueBacklogMinutes": 30,
    "metrics.prometheusRule.startLatencyP95Seconds": 60,
    "metrics.prometheusRule.checkpointWriteP99Seconds": 0.5,
    "metrics.prometheusRule.reconcileErrorsRatio": 0.05,
    "metrics.prometheusRule.downMinutes": 10,
    "metrics.dashboard.enabled": True,
    "metrics.dashboard.labels": {"team": "platform"},
    "metrics.dashboard.annotations": {"grafana_folder": "durapod"},
}
for _component in ("operator", "api"):
    CHANGES |= {
        f"{_component}.replicas": 3,
        f"{_component}.resources": {"requests": {"cpu": "2"}},
        f"{_component}.terminationGracePeriodSeconds": 120,
        f"{_component}.podDisruptionBudget.enabled": False,
        f"{_component}.podDisruptionBudget.minAvailable": "50%",
        f"{_component}.topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
            }
        ],
        f"{_component}.nodeSelector": {"pool": "system"},
        f"{_component}.tolerations": [{"key": "system", "operator": "Exists"}],
        f"{_component}.affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "Exists"}]}
                    ]
                }
            }
        },
        f"{_component}.priorityClassName": "system-cluster-critical",
        f"{_component}.podAnnotations": {"a": "b"},
        f"{_component}.podLabels": {"a": "b"},
        f"{_component}.extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": _component}],
        f"{_component}.serviceAccount.annotations": {"a": "b"},
    }
#: The values a change needs around it to show (by dotted prefix): always, and (ENABLE)
#: for every value but the switch itself.
CONTEXT: dict[str, dict[str, Any]] = {
    "networkPolicy.egress.": {
        "networkPolicy": {
            "egress": {"kubeAPIServerCIDRs": ["10.96.0.1/32"], "postgresCIDRs": ["10.0.0.0/24"]}
        }
    },
    "resourceQuota.": {"resourceQuota": {"namespaces": ["team-a"]}},
}
ENABLE: dict[str, dict[str, Any]] = {
    "postgres.bundled.": BUNDLED,
    "networkPolicy.egress.": {"networkPolicy": {"egress": {"enabled": True}}},
    "resourceQuota.": {"resourceQuota": {"enabled": True}},
    "metrics.serviceMonitor.": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "metrics.prometheusRule.": {"metrics": {"prometheusRule": {"enabled": True}}},
    "metrics.dashboard.": {"metrics": {"dashboard": {"enabled": True}}},
}


def _context(dotted: str) -> dict[str, Any]:
    layers = [layer for prefix, layer in CONTEXT.items() if dotted.startswith(prefix)]
    layers += [
        layer
        for prefix, layer in ENABLE.items()
        if dotted.startswith(prefix) and dotted != prefix + "enabled"
    ]
    return merge(*layers)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def test_every_value_changes_the_rendered_manifests() -> None:
    """No value is dead: each leaf of values.yaml, changed, changes what is rendered. (What
    it changes is checked by the tests below, value by value.)"""
    leaves = _leaves(_values())
    assert set(leaves) == set(CHANGES), "CHANGES must name every value of values.yaml"
    for dotted, value in CHANGES.items():
        assert value != leaves[dotted], dotted
        context = _context(dotted)
        base = template_text(EXTERNAL, context).stdout
        changed = template_text(EXTERNAL, context, _nested(dotted, value)).stdout
        base = re.sub(r"tokens: \"[^\"]+\"", "", base)  # a token is generated per render
        changed = re.sub(r"tokens: \"[^\"]+\"", "", changed)
        assert changed != base, f"{dotted} changed nothing"


# -- RBAC ---------------------------------------------------------------------------------


def test_rbac_is_exactly_durapod_permissions_without_a_wildcard() -> None:
    docs = render(EXTERNAL)
    for component, rules in permissions.COMPONENTS.items():
        name = f"durapod-{component}"
        assert _rules(docs, "ClusterRole", name) == [r.manifest() for r in rules]
        binding = one(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        ]
        assert one(docs, "ServiceAccount", name)["metadata"]["namespace"] == NAMESPACE
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    for role in find(docs, "ClusterRole") + find(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: {rule}"


def test_watch_namespaces_binds_roles_in_each_and_keeps_cluster_scoped_rules_cluster_wide() -> None:
    docs = render(EXTERNAL, {"watchNamespaces": ["team-a", "team-b"]})
    extra = {"operator": permissions.OPERATOR_WATCHING_NAMESPACES, "api": ()}
    for component, rules in permissions.COMPONENTS.items():
        name = f"durapod-{component}"
        namespaced = [r.manifest() for r in rules if not r.cluster_scoped]
        cluster = [r.manifest() for r in (*rules, *extra[component]) if r.cluster_scoped]
        assert _rules(docs, "ClusterRole", name) == cluster
        roles = [r for r in find(docs, "Role", name)]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
        assert all(r["rules"] == namespaced for r in roles)
        bindings = find(docs, "RoleBinding", name)
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
        assert all(b["subjects"][0]["namespace"] == NAMESPACE for b in bindings)
    cluster_scoped = {"customresourcedefinitions", "tokenreviews", "namespaces"}
    for role in find(docs, "Role"):
        assert not cluster_scoped & {res for rule in role["rules"] for res in rule["resources"]}
    assert env(docs, OPERATOR)["DURAPOD_WATCH_NAMESPACES"] == "team-a,team-b"
    assert "DURAPOD_WATCH_NAMESPACES" not in env(render(EXTERNAL), OPERATOR)


# -- PostgreSQL ---------------------------------------------------------------------------


def test_an_external_postgres_reaches_the_processes_by_libpq_variables_and_secret_refs() -> None:
    docs = render(
        EXTERNAL,
        {
            "postgres": {
                "host": "pg.internal",
                "port": 6432,
                "database": "tasks",
                "sslmode": "verify-full",
                "existingSecret": "pg-creds",
                "userKey": "user",
                "passwordKey": "pass",
            }
        },
    )
    for deployment in (OPERATOR, API):
        variables = env(docs, deployment)
        assert variables["DATABASE_URL"] == "postgresql://"
        assert variables["PGHOST"] == "pg.internal" and variables["PGPORT"] == "6432"
        assert variables["PGDATABASE"] == "tasks" and variables["PGSSLMODE"] == "verify-full"
        assert variables["PGUSER"] == {"secretKeyRef": {"name": "pg-creds", "key": "user"}}
        assert variables["PGPASSWORD"] == {"secretKeyRef": {"name": "pg-creds", "key": "pass"}}
    assert not find(docs, "ConfigMap") and not find(docs, "StatefulSet")


def test_a_url_key_makes_the_whole_url_come_from_the_secret() -> None:
    docs = render(EXTERNAL, {"postgres": {"host": "", "urlKey": "url"}})
    variables = env(docs, API)
    assert variables["DATABASE_URL"] == {"secretKeyRef": {"name": "durapod-db", "key": "url"}}
    assert not {k for k in variables if k.startswith("PG")}


def test_without_a_database_the_chart_says_what_to_set() -> None:
    none = template_text({}, check=False)
    assert none.returncode != 0 and "postgres.existingSecret" in none.stderr
    assert "postgres.bundled.enabled=true" in none.stderr
    hostless = template_text({"postgres": {"existingSecret": "pg"}}, check=False)
    assert hostless.returncode != 0 and "postgres.host" in hostless.stderr


def test_the_bundled_postgres_is_a_statefulset_with_a_generated_kept_secret() -> None:
    docs = render(BUNDLED)
    sts = one(docs, "StatefulSet", POSTGRES)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "docker.io/library/postgres:17.6"
    )
    secret = one(docs, "Secret", POSTGRES)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"username", "password"}
    variables = env(docs, OPERATOR)
    assert variables["PGHOST"] == f"{POSTGRES}.{NAMESPACE}.svc"
    assert variables["PGSSLMODE"] == "disable"
    assert variables["PGPASSWORD"] == {"secretKeyRef": {"name": POSTGRES, "key": "password"}}
    assert one(docs, "Service", POSTGRES)["spec"]["ports"][0]["port"] == 5432
    policy = one(docs, "NetworkPolicy", POSTGRES)
    sources = [
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in (policy["spec"]["ingress"][0]["from"])
    ]
    assert sources == ["operator", "api"]
    assert not find(render(EXTERNAL), "StatefulSet")


def test_credentials_reach_containers_only_by_secret_references() -> None:
    """No password or token is written into a pod spec (or a ConfigMap): the rendered
    manifests can be shown, diffed and stored without leaking one."""
    for values in (EXTERNAL, BUNDLED, {"postgres": {"host": "", "urlKey": "url"}}):
        docs = render(EXTERNAL, values)
        assert not find(docs, "ConfigMap")
        for name, spec in pod_specs(docs).items():
            for item in (e for c in spec["containers"] for e in c.get("env", [])):
                if re.search("PASSWORD|TOKEN", item["name"]):
                    assert "secretKeyRef" in item["valueFrom"], f"{name}: {item['name']}"
                if item["name"] == "DATABASE_URL":
                    assert item.get("value", "postgresql://") == "postgresql://", name


# -- the workloads ------------------------------------------------------------------------


def test_every_pod_is_non_root_with_a_read_only_root_and_no_privileges() -> None:
    specs = pod_specs(render(BUNDLED)) | pod_specs(render(EXTERNAL))
    assert set(specs) == {f"Deployment/{OPERATOR}", f"Deployment/{API}", f"StatefulSet/{POSTGRES}"}
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"] + spec.get("initContainers", []):
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts, name
    for deployment in (OPERATOR, API):
        assert specs[f"Deployment/{deployment}"]["securityContext"]["runAsUser"] == 10001


def test_a_null_uid_leaves_it_to_the_platform_but_keeps_run_as_non_root() -> None:
    docs = render(EXTERNAL, {"securityContext": {"runAsUser": None, "runAsGroup": None}})
    pod = pod_specs(docs)[f"Deployment/{API}"]["securityContext"]
    assert "runAsUser" not in pod and "runAsGroup" not in pod
    assert pod["runAsNonRoot"] is True and pod["fsGroup"] == 10001


def test_the_image_is_the_app_version_by_default_a_pinned_tag_or_a_digest_never_latest() -> None:
    assert container(render(EXTERNAL), API)["image"] == f"ghcr.io/durapod/durapod:{__version__}"
    tagged = render(EXTERNAL, {"image": {"repository": "r.example/dp", "tag": "1.2.3"}})
    assert {container(tagged, d)["image"] for d in (API, OPERATOR)} == {"r.example/dp:1.2.3"}
    digest = "sha256:" + "b" * 64
    pinned = render(EXTERNAL, {"image": {"digest": digest}})
    assert container(pinned, OPERATOR)["image"] == f"ghcr.io/durapod/durapod@{digest}"
    latest = template_text(EXTERNAL, {"image": {"tag": "latest"}}, check=False)
    assert latest.returncode != 0 and "/image/tag" in latest.stderr


def test_replicas_and_resources_reach_the_deployments() -> None:
    resources = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    docs = render(
        EXTERNAL,
        {"operator": {"replicas": 3}, "api": {"replicas": 5, "resources": resources}},
    )
    assert one(docs, "Deployment", OPERATOR)["spec"]["replicas"] == 3
    assert one(docs, "Deployment", API)["spec"]["replicas"] == 5
    assert container(docs, API)["resources"] == resources
    defaults = render(EXTERNAL)
    assert {one(defaults, "Deployment", d)["spec"]["replicas"] for d in (OPERATOR, API)} == {2}


def test_a_pod_disruption_budget_only_where_there_is_more_than_one_replica() -> None:
    docs = render(EXTERNAL, {"operator": {"replicas": 1}, "api": {"replicas": 3}})
    assert not find(docs, "PodDisruptionBudget", OPERATOR)
    budget = one(docs, "PodDisruptionBudget", API)["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    off = render(EXTERNAL, {"api": {"podDisruptionBudget": {"enabled": False}}})
    assert not find(off, "PodDisruptionBudget", API)


def test_probes_are_on_the_processes_real_health_endpoints() -> None:
    docs = render(EXTERNAL, {"operator": {"healthPort": 9100}, "api": {"port": 9090}})
    api = container(docs, API)
    assert api["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert api["command"][-2:] == ["--port", "9090"]
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    operator = container(docs, OPERATOR)
    assert env(docs, OPERATOR)["DURAPOD_OPERATOR_HEALTH_URL"] == "http://0.0.0.0:9100/healthz"
    assert operator["ports"][0]["containerPort"] == 9100
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["command"] == ["python", "-m", "durapod.operator"]


def test_the_operator_serves_metrics_on_its_port_behind_a_service() -> None:
    docs = render(EXTERNAL, {"operator": {"metricsPort": 9300}})
    assert env(docs, OPERATOR)["DURAPOD_OPERATOR_METRICS_ADDR"] == "0.0.0.0:9300"
    ports = container(docs, OPERATOR)["ports"]
    assert {"name": "metrics", "containerPort": 9300, "protocol": "TCP"} in ports
    service = one(docs, "Service", OPERATOR)["spec"]
    assert service["ports"] == [
        {"name": "metrics", "port": 9300, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["selector"]["app.kubernetes.io/component"] == "operator"


def test_graceful_termination_outlasts_the_longest_request_in_flight() -> None:
    docs = render(EXTERNAL)
    api = one(docs, "Deployment", API)["spec"]["template"]["spec"]
    sleep = api["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    longest_poll = 60  # GET .../runs/NAME?wait= allows up to 60 s
    assert api["terminationGracePeriodSeconds"] > sleep + longest_poll
    strategy = one(docs, "Deployment", API)["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    operator = one(docs, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert operator["terminationGracePeriodSeconds"] == 30


def test_topology_spread_constraints_get_their_components_selector() -> None:
    docs = render(EXTERNAL)
    for deployment, component in ((OPERATOR, "operator"), (API, "api")):
        spec = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
        (constraint,) = spec["topologySpreadConstraints"]
        assert constraint["topologyKey"] == "kubernetes.io/hostname"
        labels = constraint["labelSelector"]["matchLabels"]
        assert labels["app.kubernetes.io/component"] == component


def test_the_operator_tells_task_pods_the_api_services_in_cluster_name() -> None:
    docs = render(EXTERNAL, {"api": {"service": {"port": 8080}}})
    service = one(docs, "Service", API)
    assert service["spec"]["ports"][0]["port"] == 8080
    assert env(docs, OPERATOR)["DURAPOD_API_URL"] == f"http://{API}.{NAMESPACE}.svc:8080"
    given = render(EXTERNAL, {"operator": {"apiURL": "https://durapod.example"}})
    assert env(given, OPERATOR)["DURAPOD_API_URL"] == "https://durapod.example"


def test_api_tokens_come_from_a_generated_secret_an_existing_one_or_none() -> None:
    docs = render(EXTERNAL)
    secret = one(docs, "Secret", "durapod-api-tokens")
    assert len(secret["data"]["tokens"]) > 40
    assert env(docs, API)["DURAPOD_API_TOKENS"] == {
        "secretKeyRef": {"name": "durapod-api-tokens", "key": "tokens"}
    }
    theirs = render(EXTERNAL, {"api": {"tokens": {"existingSecret": "callers", "key": "list"}}})
    assert not find(theirs, "Secret")
    assert env(theirs, API)["DURAPOD_API_TOKENS"] == {
        "secretKeyRef": {"name": "callers", "key": "list"}
    }
    none = render(EXTERNAL, {"api": {"tokens": {"generate": False}}})
    assert not find(none, "Secret") and "DURAPOD_API_TOKENS" not in env(none, API)


def test_no_default_secret_is_in_values_yaml() -> None:
    text = (CHART / "values.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"^\s*(password|token|tokens|secret)\s*:\s*[^\s#]", line, re.IGNORECASE):
            pytest.fail(f"a default secret in values.yaml: {line.strip()}")


# -- CRDs ---------------------------------------------------------------------------------


def test_crds_are_rendered_from_the_models_and_kept_unless_told_otherwise() -> None:
    docs = render(EXTERNAL)
    rendered = find(docs, "CustomResourceDefinition")
    assert {d["metadata"]["name"] for d in rendered} == {
        m["metadata"]["name"] for m in crds.all_crds()
    }
    for manifest in crds.all_crds():
        (doc,) = find(rendered, "CustomResourceDefinition", manifest["metadata"]["name"])
        assert doc["spec"] == manifest["spec"]
        assert doc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    unkept = render(EXTERNAL, {"crds": {"keep": False}})
    assert all("annotations" not in d["metadata"] for d in find(unkept, "CustomResourceDefinition"))
    assert not find(render(EXTERNAL, {"crds": {"enabled": False}}), "CustomResourceDefinition")


def test_crd_copies_in_crds_dir_and_chart_are_the_same_models() -> None:
    for path in sorted((REPO / "crds").glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        template = CHART / "templates" / f"crd-{path.name}"
        assert template.read_text() == chart.crd_template(manifest)


# -- NetworkPolicy, ResourceQuota, monitoring ---------------------------------------------


def _api_sources(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = one(docs, "NetworkPolicy", API)["spec"]["ingress"][0]["from"]
    return sources


def test_the_api_accepts_task_pods_its_namespace_and_allowed_namespaces_only() -> None:
    docs = render(EXTERNAL, {"networkPolicy": {"api": {"allowedNamespaces": ["shop"]}}})
    task_pods, own_namespace, allowed = _api_sources(docs)
    assert task_pods["podSelector"]["matchExpressions"] == [
        {"key": "durapod.io/run", "operator": "Exists"}
    ]
    assert task_pods["namespaceSelector"] == {}
    assert own_namespace == {"podSelector": {}}
    assert allowed["namespaceSelector"]["matchExpressions"][0]["values"] == ["shop"]
    assert one(docs, "NetworkPolicy", OPERATOR)["spec"]["ingress"] == [
        {"ports": [{"port": "health", "protocol": "TCP"}, {"port": "metrics", "protocol": "TCP"}]}
    ]
    scoped = render(EXTERNAL, {"watchNamespaces": ["team-a"]})
    selector = _api_sources(scoped)[0]["namespaceSelector"]["matchExpressions"][0]
    assert selector["values"] == ["team-a"]
    assert not find(render(EXTERNAL, {"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_egress_is_open_unless_enabled_and_then_needs_the_addresses() -> None:
    for policy in find(render(EXTERNAL), "NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    missing = template_text(EXTERNAL, {"networkPolicy": {"egress": {"enabled": True}}}, check=False)
    assert missing.returncode != 0 and "kubeAPIServerCIDRs" in missing.stderr
    docs = render(
        EXTERNAL,
        {
            "networkPolicy": {
                "egress": {
                    "enabled": True,
                    "kubeAPIServerCIDRs": ["10.96.0.1/32"],
                    "postgresCIDRs": ["10.0.5.0/24"],
                }
            }
        },
    )
    egress = one(docs, "NetworkPolicy", API)["spec"]["egress"]
    assert {p["port"] for p in egress[0]["ports"]} == {53}
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]
    assert egress[2] == {
        "to": [{"ipBlock": {"cidr": "10.0.5.0/24"}}],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }


def test_a_resource_quota_in_each_task_namespace() -> None:
    assert not find(render(EXTERNAL), "ResourceQuota")
    docs = render(
        EXTERNAL,
        {"watchNamespaces": ["team-a", "team-b"], "resourceQuota": {"enabled": True}},
    )
    quotas = find(docs, "ResourceQuota")
    assert sorted(q["metadata"]["namespace"] for q in quotas) == ["team-a", "team-b"]
    assert quotas[0]["spec"]["hard"]["pods"] == "50"
    named = render(EXTERNAL, {"resourceQuota": {"enabled": True, "namespaces": ["jobs"]}})
    assert [q["metadata"]["namespace"] for q in find(named, "ResourceQuota")] == ["jobs"]
    nowhere = template_text(EXTERNAL, {"resourceQuota": {"enabled": True}}, check=False)
    assert nowhere.returncode != 0 and "resourceQuota.namespaces" in nowhere.stderr


def test_service_monitor_and_prometheus_rule_only_when_enabled() -> None:
    docs = render(EXTERNAL)
    assert not find(docs, "ServiceMonitor") and not find(docs, "PrometheusRule")
    docs = render(
        EXTERNAL,
        {
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                "prometheusRule": {"enabled": True},
            }
        },
    )
    monitor = one(docs, "ServiceMonitor", "durapod")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    # Each endpoint is a port only one of the two Services has: every pod scraped once.
    endpoints = {e["port"]: e["path"] for e in monitor["spec"]["endpoints"]}
    assert endpoints == {"metrics": "/metrics", "http": "/metrics"}
    # durapod's `namespace` label (the runs') is kept, not renamed exported_namespace.
    assert all(e["honorLabels"] is True for e in monitor["spec"]["endpoints"])
    selector = monitor["spec"]["selector"]
    assert selector["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["operator", "api"]}
    ]
    selected = [
        s["metadata"]["name"]
        for s in find(docs, "Service")
        if selector["matchLabels"].items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"] in ("operator", "api")
    ]
    assert sorted(selected) == [API, OPERATOR]
    ports = {s: {p["name"] for p in one(docs, "Service", s)["spec"]["ports"]} for s in selected}
    assert ports == {API: {"http"}, OPERATOR: {"metrics"}}
    assert one(docs, "PrometheusRule", "durapod")["spec"]["groups"][0]["rules"]


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar_only_when_enabled() -> None:
    assert not find(render(EXTERNAL), "ConfigMap")
    values = {"metrics": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "x"}}}}
    configmap = one(render(EXTERNAL, values), "ConfigMap", "durapod-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "x"}
    shipped = json.loads(configmap["data"]["durapod.json"])
    assert shipped == json.loads((CHART / chart.DASHBOARD_FILE).read_text())
    assert shipped["uid"] == "durapod" and shipped["panels"]


# -- NOTES --------------------------------------------------------------------------------


def test_notes_tell_how_to_trigger_a_first_run() -> None:
    """``helm install`` prints NOTES.txt: a TaskRun to apply, and the API's URL, path and
    token to trigger one over HTTP."""
    out = helm(
        "install", "durapod", str(CHART), "-n", NAMESPACE, "--dry-run=client",
        "--set", "postgres.bundled.enabled=true",
    ).stdout  # fmt: skip
    assert "kubectl apply -f -" in out and "kind: TaskRun" in out
    assert "kubectl wait --for=condition=Succeeded taskrun/first-run" in out
    assert f"http://{API}.{NAMESPACE}.svc:80" in out
    assert "/v1/namespaces/default/tasks/process-order/runs" in out
    assert "kubectl -n durapod-system get secret durapod-api-tokens" in out
    assert "TRIALS ONLY" in out
    quiet = helm(
        "install", "durapod", str(CHART), "-n", NAMESPACE, "--dry-run=client",
        "--set", "postgres.host=db", "--set", "postgres.existingSecret=db",
        "--set", "api.tokens.generate=false",
    ).stdout  # fmt: skip
    assert "TRIALS ONLY" not in quiet and "create token" in quiet
