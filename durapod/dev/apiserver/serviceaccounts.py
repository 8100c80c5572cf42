"""What gives a pod its API access: the ServiceAccount admission plugin's token volume,
and the root-CA publisher's ``kube-root-ca.crt`` ConfigMap in every namespace.

Follows ``plugin/pkg/admission/serviceaccount`` (admission.go) and
``pkg/controller/certificates/rootcacertpublisher`` in kubernetes/kubernetes: a pod that
does not opt out (``automountServiceAccountToken: false`` on the pod, else on its
ServiceAccount) gets a projected volume ``kube-api-access-<5 random>`` (a bound token, the
cluster's CA, the namespace) mounted read-only at
``/var/run/secrets/kubernetes.io/serviceaccount`` in every container that has nothing
mounted there already.
"""

from __future__ import annotations

import random
from typing import Any

Obj = dict[str, Any]
#: Where the automounted token, CA and namespace are (DefaultAPITokenMountPath).
API_TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The automounted volume's name prefix (ServiceAccountVolumeName).
VOLUME_PREFIX = "kube-api-access-"
#: A bound token's lifetime as the plugin asks for it
#: (serviceaccount.WarnOnlyBoundTokenExpirationSeconds: an hour and 7 seconds).
TOKEN_SECONDS = 3607
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using "
    "internal endpoints such as the internal service IP or kubernetes.default.svc. No "
    "other usage is guaranteed across distributions of Kubernetes clusters."
)
#: names.SimpleNameGenerator's alphabet, as ``generateName`` uses.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def should_automount(account: Obj, pod: Obj) -> bool:
    """The pod's preference wins, then the ServiceAccount's; true when neither says."""
    spec = pod.get("spec") or {}
    if spec.get("automountServiceAccountToken") is not None:
        return bool(spec["automountServiceAccountToken"])
    if account.get("automountServiceAccountToken") is not None:
        return bool(account["automountServiceAccountToken"])
    return True


def token_volume_source() -> Obj:
    """TokenVolumeSource: a bound token, the cluster's CA and the pod's namespace."""
    return {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
            {
                "configMap": {
                    "name": ROOT_CA_CONFIGMAP,
                    "items": [{"key": ROOT_CA_KEY, "path": ROOT_CA_KEY}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {
                            "path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                        }
                    ]
                }
            },
        ],
    }


def mount_token(pod: Obj) -> None:
    """mountServiceAccountToken: the volume (one already named ``kube-api-access-*`` is
    kept), and its mount in each init container and container without one at the path."""
    spec = pod.setdefault("spec", {})
    volumes = spec.get("volumes") or []
    existing = [v["name"] for v in volumes if str(v.get("name", "")).startswith(VOLUME_PREFIX)]
    name = existing[0] if existing else VOLUME_PREFIX + "".join(random.choices(_ALPHABET, k=5))
    needed = False
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            mounts = container.get("volumeMounts") or []
            if any(m.get("mountPath") == API_TOKEN_MOUNT_PATH for m in mounts):
                continue
            container["volumeMounts"] = [
                *mounts,
                {"name": name, "readOnly": True, "mountPath": API_TOKEN_MOUNT_PATH},
            ]
            needed = True
    if needed and not existing:
        spec["volumes"] = [*volumes, {"name": name, "projected": token_volume_source()}]


def root_ca_configmap(namespace: str, ca_pem: bytes) -> Obj:
    """The ConfigMap the root-CA publisher keeps in ``namespace``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CA_CONFIGMAP,
            "namespace": namespace,
            "annotations": {"kubernetes.io/description": _DESCRIPTION},
        },
        "data": {ROOT_CA_KEY: ca_pem.decode()},
    }
