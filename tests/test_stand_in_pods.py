"""A pod on the stand-in gets what a pod gets on a cluster: its environment from Secrets,
ConfigMaps and its own fields (``$(VAR)`` expanded), its volumes at their ``mountPath``
in a mount namespace of its own, and the automounted ServiceAccount token, CA and
namespace with which in-cluster clients (lightkube, kopf) reach the API server over
HTTPS and are held to their RBAC.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import ssl
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod.dev import podenv
from durapod.dev.apiserver import serviceaccounts
from tests.helpers import REPO, TOKEN, LocalCluster, wait_for

NS = "/api/v1/namespaces/default"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"


@pytest.fixture
def api(node_cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=node_cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _pod(name: str, script: str, **container: Any) -> dict[str, Any]:
    """A pod running ``python -c script``; ``spec`` holds pod-level fields, the rest are
    the container's."""
    spec = container.pop("spec", {})
    return {
        "metadata": {"name": name, "labels": {"app": "probe", "tier": "b"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "durapod:dev",
                    "command": ["python", "-c", textwrap.dedent(script)],
                    **container,
                }
            ],
            **spec,
        },
    }


def _finished(api: httpx.Client, name: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        pod: dict[str, Any] = api.get(f"{NS}/pods/{name}").json()
        return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return wait_for(done, timeout, f"pod {name} to finish")


def _output(node_cluster: LocalCluster, api: httpx.Client, name: str) -> Any:
    """What the pod printed last (a JSON line), read as a user does: ``kubectl logs``."""
    pod = _finished(api, name)
    logs = node_cluster.kubectl("logs", name).stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    return json.loads(logs.strip().splitlines()[-1])


def _secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"metadata": {"name": name}, "data": encoded}


def test_env_comes_from_secrets_configmaps_fields_and_expansion(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    _created(api.post(f"{NS}/secrets", json=_secret("db", password="s3cret", user="app")))
    _created(
        api.post(
            f"{NS}/configmaps",
            json={"metadata": {"name": "settings"}, "data": {"mode": "fast", "level": "3"}},
        )
    )
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {
            "name": "ABSENT",
            "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}},
        },
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
        {"name": "ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": "MEMORY_MI",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
        {"name": "DSN", "value": "$(CFG_level)://$(POD):$(PASSWORD)@$(MISSING)/$$(POD)"},
    ]
    script = """
        import json, os, sys
        print(json.dumps({"env": dict(os.environ), "argv": sys.argv[1:]}))
    """
    pod = _pod(
        "env",
        script,
        env=env,
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        args=["$(MODE)", "$(POD)-$(NOPE)"],
        resources={"limits": {"memory": "256Mi"}},
    )
    created = _created(api.post(f"{NS}/pods", json=pod))
    seen = _output(node_cluster, api, "env")
    got = seen["env"]
    assert got["PASSWORD"] == "s3cret" and got["MODE"] == "fast"
    assert "ABSENT" not in got
    assert got["CFG_mode"] == "fast" and got["CFG_level"] == "3"
    assert (got["POD"], got["WHERE"], got["TIER"]) == ("env", "default", "b")
    assert got["UID"] == created["metadata"]["uid"]
    assert (got["ACCOUNT"], got["NODE"], got["IP"]) == ("default", "durapod-dev", "127.0.0.1")
    assert got["MEMORY_MI"] == "256"
    assert got["DSN"] == "3://env:s3cret@$(MISSING)/$(POD)"
    assert seen["argv"] == ["fast", "env-$(NOPE)"]
    # The API server's service variables name its HTTPS address.
    assert f"https://{got['KUBERNETES_SERVICE_HOST']}:{got['KUBERNETES_SERVICE_PORT']}" == (
        node_cluster.cluster_url
    )
    assert got["KUBERNETES_PORT"] == (
        f"tcp://{got['KUBERNETES_SERVICE_HOST']}:{got['KUBERNETES_SERVICE_PORT']}"
    )


def test_a_missing_secret_holds_the_container_in_create_container_config_error(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    script = "import os, json; print(json.dumps(os.environ['TOKEN']))"
    _created(api.post(f"{NS}/pods", json=_pod("waits", script, env=env)))

    def waiting() -> dict[str, Any] | None:
        pod = api.get(f"{NS}/pods/waits").json()
        for status in pod.get("status", {}).get("containerStatuses") or []:
            if "waiting" in status["state"]:
                return dict(status["state"]["waiting"])
        return None

    state = wait_for(waiting, 30, "the container to wait")
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "late" not found'}
    assert api.get(f"{NS}/pods/waits").json()["status"]["phase"] == "Pending"
    events = api.get(f"{NS}/events", params={"fieldSelector": "involvedObject.name=waits"})
    assert 'Error: secret "late" not found' in [e["message"] for e in events.json()["items"]]

    # Tried again (as the pod worker does after a failed sync), it starts.
    _created(api.post(f"{NS}/secrets", json=_secret("late", token="t0k3n")))
    assert _output(node_cluster, api, "waits") == "t0k3n"


async def _never(plural: str, namespace: str, name: str) -> None:
    return None


async def _only_settings(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    if (plural, name) == ("secrets", "db"):
        return _secret("db", user="app")
    return None


@pytest.mark.parametrize(
    ("var", "words"),
    [
        (
            {"secretKeyRef": {"name": "db", "key": "password"}},
            "couldn't find key password in Secret default/db",
        ),
        ({"secretKeyRef": {"name": "gone", "key": "x"}}, 'secret "gone" not found'),
        ({"configMapKeyRef": {"name": "gone", "key": "x"}}, 'configmap "gone" not found'),
    ],
)
def test_the_kubelets_words_for_a_missing_source(var: dict[str, Any], words: str) -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}
    container = {"name": "main", "env": [{"name": "X", "valueFrom": var}]}
    with pytest.raises(podenv.ConfigError, match=re.escape(words)):
        asyncio.run(podenv.container_env(pod, container, _only_settings, {}, {}))
    optional = {k: {**v, "optional": True} for k, v in var.items()}
    container["env"] = [{"name": "X", "valueFrom": optional}]
    assert asyncio.run(podenv.container_env(pod, container, _only_settings, {}, {})) == {}


def test_envfrom_of_a_missing_source_fails_unless_optional() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}
    container: dict[str, Any] = {"name": "main", "envFrom": [{"secretRef": {"name": "nope"}}]}
    with pytest.raises(podenv.ConfigError, match='secret "nope" not found'):
        asyncio.run(podenv.container_env(pod, container, _never, {}, {}))
    container["envFrom"][0]["secretRef"]["optional"] = True
    assert asyncio.run(podenv.container_env(pod, container, _never, {}, {})) == {}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(A)-$(B)", "a-b"),
        ("$$(A)", "$(A)"),
        ("$(UNSET)", "$(UNSET)"),
        ("$(A", "$(A"),
        ("a$", "a$"),
        ("$x$(A)", "$xa"),
        ("$$$(A)", "$a"),
    ],
)
def test_variable_references_expand_as_the_kubelets_do(text: str, expanded: str) -> None:
    assert podenv.expand(text, {"A": "a"}, {"B": "b", "A": "not this"}) == expanded


def test_volumes_are_at_their_mount_paths(
    api: httpx.Client, node_cluster: LocalCluster, tmp_path: Path
) -> None:
    _created(api.post(f"{NS}/secrets", json=_secret("tls", **{"tls.key": "KEY", "other": "x"})))
    _created(
        api.post(
            f"{NS}/configmaps",
            json={"metadata": {"name": "conf"}, "data": {"app.yaml": "a: 1\n", "b.txt": "bee"}},
        )
    )
    volumes = [
        {
            "name": "certs",
            "secret": {
                "secretName": "tls",
                "items": [{"key": "tls.key", "path": "keys/server.key", "mode": 0o400}],
            },
        },
        {"name": "conf", "configMap": {"name": "conf", "defaultMode": 0o640}},
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                ]
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts = [
        {"name": "certs", "mountPath": "/etc/durapod-test/certs"},
        {"name": "conf", "mountPath": "/srv/durapod-test/conf"},
        {"name": "info", "mountPath": "/var/run/durapod-test/info"},
        {"name": "scratch", "mountPath": "/var/run/durapod-test/scratch"},
        {"name": "scratch", "mountPath": "/durapod-test-data/sub", "subPath": "sub"},
        {"name": "conf", "mountPath": "/opt/durapod-test-b.txt", "subPath": "b.txt"},
    ]
    script = """
        import json, os, stat
        def mode(p):
            return oct(stat.S_IMODE(os.stat(p).st_mode))
        def writable(p):
            try:
                open(p, "w").write("x")
                return True
            except OSError as exc:
                return exc.strerror
        base = "/var/run/durapod-test"
        print(json.dumps({
            "key": open("/etc/durapod-test/certs/keys/server.key").read(),
            "key_mode": mode("/etc/durapod-test/certs/keys/server.key"),
            "certs": sorted(os.listdir("/etc/durapod-test/certs")),
            "data": os.path.islink("/etc/durapod-test/certs/..data"),
            "yaml": open("/srv/durapod-test/conf/app.yaml").read(),
            "yaml_mode": mode("/srv/durapod-test/conf/app.yaml"),
            "b": open("/opt/durapod-test-b.txt").read(),
            "labels": open(f"{base}/info/labels").read(),
            "name": open(f"{base}/info/name").read(),
            "scratch": writable(f"{base}/scratch/file"),
            "top": sorted(os.listdir("/durapod-test-data/sub")),
            "home": os.path.isfile("pyproject.toml") and os.path.isdir("/proc/self"),
            "conf": writable("/srv/durapod-test/conf/new"),
            "token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            "run": os.path.isdir("/run/lock"),
        }))
    """
    pod = _pod("vols", script, volumeMounts=mounts, spec={"volumes": volumes})
    _created(api.post(f"{NS}/pods", json=pod))
    seen = _output(node_cluster, api, "vols")
    assert seen["key"] == "KEY" and seen["key_mode"] == "0o400"
    # Only the items asked for, laid out as the kubelet's atomic writer does.
    assert [n for n in seen["certs"] if not n.startswith("..")] == ["keys"]
    assert seen["data"] is True
    assert seen["yaml"] == "a: 1\n" and seen["yaml_mode"] == "0o640"
    assert seen["b"] == "bee"
    assert seen["labels"] == 'app="probe"\ntier="b"' and seen["name"] == "vols"
    assert seen["scratch"] is True
    # A mount point under a top-level directory this machine lacks: the pod gets a root
    # of its own that still holds everything else.
    assert seen["top"] == [] and seen["home"] is True
    assert seen["conf"] == "Read-only file system"  # configMap volumes are read-only
    assert seen["token"] is True and seen["run"] is True
    # The mount points were made in the pod's own namespace, not on the machine.
    for made in ("/etc/durapod-test", "/srv/durapod-test", "/var/run/durapod-test"):
        assert not Path(made).exists()
    assert not Path("/opt/durapod-test-b.txt").exists()
    assert not Path("/durapod-test-data").exists()


def test_a_read_only_root_filesystem_leaves_only_volumes_writable(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    script = """
        import json
        def writable(p):
            try:
                open(p, "w").write("x")
                return True
            except OSError as exc:
                return exc.strerror
        print(json.dumps([writable("/tmp/durapod-ro-probe"), writable("/cache/probe")]))
    """
    pod = _pod(
        "ro",
        script,
        securityContext={"readOnlyRootFilesystem": True},
        volumeMounts=[{"name": "cache", "mountPath": "/cache"}],
        spec={"volumes": [{"name": "cache", "emptyDir": {}}]},
    )
    _created(api.post(f"{NS}/pods", json=pod))
    assert _output(node_cluster, api, "ro") == ["Read-only file system", True]
    assert not Path("/tmp/durapod-ro-probe").exists() and not Path("/cache").exists()


def test_a_volume_over_the_images_directory_does_not_hide_the_image(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    """In a container, an emptyDir at /tmp hides the root filesystem's /tmp, never the
    image's program. Here the "image" is this machine's Python and code, which may live
    under such a directory (a clone in /tmp, as CI makes): they stay visible, and the rest
    of the directory is the volume."""
    covered = str(REPO.parent)
    script = f"""
        import json, os
        print(json.dumps([sorted(os.listdir({covered!r})), os.path.isdir({str(REPO)!r})]))
    """
    pod = _pod(
        "over-image",
        script,
        volumeMounts=[{"name": "scratch", "mountPath": covered}],
        spec={"volumes": [{"name": "scratch", "emptyDir": {}}]},
    )
    _created(api.post(f"{NS}/pods", json=pod))
    listing, code_seen = _output(node_cluster, api, "over-image")
    assert code_seen is True
    assert REPO.name in listing and len(listing) < len(os.listdir(covered))


def test_the_service_account_token_is_mounted_unless_declined(api: httpx.Client) -> None:
    pod = _pod("auto", "print(1)")
    pod["spec"]["initContainers"] = [
        {"name": "init", "image": "durapod:dev", "command": ["true"]},
    ]
    spec = _created(api.post(f"{NS}/pods", json=pod))["spec"]
    [volume] = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(volume["name"]) == len("kube-api-access-") + 5
    assert volume["projected"] == serviceaccounts.token_volume_source()
    for container in spec["containers"] + spec["initContainers"]:
        assert {
            "name": volume["name"],
            "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        } in container["volumeMounts"]

    declined = _pod("declined", "print(1)", spec={"automountServiceAccountToken": False})
    assert "volumes" not in _created(api.post(f"{NS}/pods", json=declined))["spec"]
    account = {"metadata": {"name": "quiet"}, "automountServiceAccountToken": False}
    _created(api.post(f"{NS}/serviceaccounts", json=account))
    quiet = _pod("quiet", "print(1)", spec={"serviceAccountName": "quiet"})
    assert "volumes" not in _created(api.post(f"{NS}/pods", json=quiet))["spec"]
    # The pod's word wins over its ServiceAccount's.
    insists = _pod(
        "insists",
        "print(1)",
        spec={"serviceAccountName": "quiet", "automountServiceAccountToken": True},
    )
    assert _created(api.post(f"{NS}/pods", json=insists))["spec"]["volumes"]
    # A container with its own mount at the path keeps it, and no volume is added.
    own = _pod(
        "own",
        "print(1)",
        volumeMounts=[
            {"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
        ],
        spec={"volumes": [{"name": "mine", "emptyDir": {}}]},
    )
    assert [v["name"] for v in _created(api.post(f"{NS}/pods", json=own))["spec"]["volumes"]] == [
        "mine"
    ]


def test_a_pod_uses_in_cluster_config_under_its_service_accounts_rbac(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    _created(api.post(f"{NS}/serviceaccounts", json={"metadata": {"name": "reader"}}))
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    _created(api.post(f"{RBAC}/roles", json={"metadata": {"name": "reader"}, "rules": rules}))
    binding = {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}],
    }
    _created(api.post(f"{RBAC}/rolebindings", json=binding))
    script = """
        import json, httpx
        from lightkube import Client, KubeConfig
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import ConfigMap, Secret

        config = KubeConfig.from_service_account()
        client = Client(config)
        context = config.get()
        names = [c.metadata.name for c in client.list(ConfigMap)]
        try:
            list(client.list(Secret))
            secrets = "allowed"
        except ApiError as exc:
            secrets = exc.status.code
        # kopf's in-cluster login dials https://kubernetes.default.svc (port 443).
        base = "/var/run/secrets/kubernetes.io/serviceaccount"
        token = open(f"{base}/token").read()
        answer = httpx.get(
            "https://kubernetes.default.svc/apis/authentication.k8s.io/v1",
            verify=f"{base}/ca.crt",
            headers={"Authorization": f"Bearer {token}"},
        )
        print(json.dumps({
            "server": context.cluster.server,
            "namespace": context.namespace,
            "configmaps": names,
            "secrets": secrets,
            "default_svc": answer.status_code,
        }))
    """
    pod = _pod("incluster", script, spec={"serviceAccountName": "reader"})
    _created(api.post(f"{NS}/pods", json=pod))
    seen = _output(node_cluster, api, "incluster")
    assert seen["server"] == node_cluster.cluster_url
    assert seen["namespace"] == "default"
    assert seen["configmaps"] == ["kube-root-ca.crt"]
    assert seen["secrets"] == 403
    if node_cluster.cluster_url.endswith(":443"):  # the service address could be had
        assert seen["default_svc"] == 200


def test_https_serves_the_cluster_ca_and_treats_no_token_as_anonymous(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    ca = node_cluster.read(lambda cluster: cluster.authority.cert_pem)
    context = ssl.create_default_context(cadata=ca.decode())
    with httpx.Client(base_url=node_cluster.secure_url, verify=context) as secure:
        anonymous = secure.get(f"{NS}/configmaps")
        assert anonymous.status_code == 403
        words = 'User "system:anonymous" cannot list resource "configmaps"'
        assert words in anonymous.json()["message"]
        assert secure.get("/version").status_code == 200  # public info
        admin = secure.get(f"{NS}/configmaps", headers={"Authorization": f"Bearer {TOKEN}"})
        assert admin.status_code == 200
        bad = secure.get(f"{NS}/configmaps", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401

    # The root-CA publisher: every namespace, new ones too, and put back when deleted.
    _created(api.post("/api/v1/namespaces", json={"metadata": {"name": "fresh"}}))
    published = api.get("/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt").json()
    assert published["data"] == {"ca.crt": ca.decode()}
    assert api.delete("/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt").status_code == 200
    again = api.get("/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt")
    assert again.status_code == 200 and again.json()["data"] == {"ca.crt": ca.decode()}


def test_a_command_that_cannot_start_fails_with_the_runtimes_words(
    api: httpx.Client, node_cluster: LocalCluster
) -> None:
    pod = _pod("nocmd", "")
    pod["spec"]["containers"][0]["command"] = ["durapod-no-such-command"]
    _created(api.post(f"{NS}/pods", json=pod))
    finished = _finished(api, "nocmd")
    terminated = finished["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    words = 'exec: "durapod-no-such-command": executable file not found in $PATH'
    assert words in terminated["message"]
    assert words in node_cluster.kubectl("logs", "nocmd").stdout
    events = api.get(f"{NS}/events", params={"fieldSelector": "involvedObject.name=nocmd"})
    assert any(words in e["message"] for e in events.json()["items"])
