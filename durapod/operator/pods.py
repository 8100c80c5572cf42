"""Build the Pod of one attempt of a run from its pinned TaskDefinition spec."""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

from durapod import auth
from durapod import traceparent as tracecontext
from durapod.operator.settings import Settings
from durapod.resources.machines import PRESETS
from durapod.resources.models import API_VERSION, Machine, TaskDefinitionSpec

LABEL_RUN = "durapod.io/run"
LABEL_TASK = "durapod.io/task"
LABEL_ATTEMPT = "durapod.io/attempt"
LABEL_QUEUE = "durapod.io/queue"


#: The run's full name, when its label value had to be shortened.
ANNOTATION_RUN = "durapod.io/run-name"


def _shortened(name: str, limit: int) -> str:
    """``name`` if it fits ``limit``, else its start and a hash of the whole (distinct
    names stay distinct, and the result stays a valid name or label value)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11]}-{digest}"


def run_label(run_name: str) -> str:
    """The ``durapod.io/run`` label value of a run's pods: label values hold 63 bytes."""
    return _shortened(run_name, 63)


def pod_name(run_name: str, index: int) -> str:
    """One name per pod index: creating it twice is a 409, never a second pod."""
    suffix = f"-{index}"
    return _shortened(run_name, 253 - len(suffix)) + suffix


def run_of(pod: dict[str, Any]) -> str | None:
    """The name of the run a pod belongs to (None: not a run's pod)."""
    meta = pod["metadata"]
    full = (meta.get("annotations") or {}).get(ANNOTATION_RUN)
    return full or (meta.get("labels") or {}).get(LABEL_RUN)


def build(
    run: dict[str, Any],
    definition: TaskDefinitionSpec,
    attempt: int,
    index: int,
    machine: str,
    remaining_seconds: float | None,
    settings: Settings,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The pod of one attempt; ``remaining_seconds`` of maxDuration become its deadline;
    with tracing on, the operator's ``OTEL_*`` and ``traceparent`` (its attempt span)."""
    meta = run["metadata"]
    cpu, memory = PRESETS[Machine(machine)]
    resources: dict[str, Any] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu, "memory": memory},
    }
    # Explicit resources hold on the definition's machine; an OOM upgrade replaces them.
    if definition.resources and machine == definition.machine:
        for part in ("requests", "limits"):
            given = getattr(definition.resources, part)
            if given:
                resources[part].update(given.model_dump(exclude_none=True))
    env = [{"name": e.name, "value": e.value} for e in definition.env] + [
        {"name": "DURAPOD_API_URL", "value": settings.api_url},
        {"name": "DURAPOD_RUN_ID", "value": meta["uid"]},
        {"name": "DURAPOD_TOKEN_FILE", "value": auth.TOKEN_FILE},
        {"name": "DURAPOD_ENTRYPOINT", "value": definition.entrypoint},
        {"name": "DURAPOD_ATTEMPT", "value": str(attempt)},
        {"name": "DURAPOD_POD_INDEX", "value": str(index)},
    ]
    task = run["spec"]["task"]
    env += tracecontext.pod_env(os.environ, [e.name for e in definition.env], task, traceparent)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                "name": "task",
                "image": definition.image,
                "command": definition.command,
                "env": env,
                "resources": resources,
                "volumeMounts": [
                    {"name": auth.TOKEN_VOLUME, "mountPath": auth.TOKEN_DIR, "readOnly": True}
                ],
            }
        ],
        # The runner needs no Kubernetes API token, only its durapod one.
        "automountServiceAccountToken": False,
        "volumes": [
            {
                "name": auth.TOKEN_VOLUME,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": auth.AUDIENCE,
                                "expirationSeconds": auth.TOKEN_SECONDS,
                                "path": auth.TOKEN_FILE.rsplit("/", 1)[1],
                            }
                        }
                    ]
                },
            }
        ],
    }
    if remaining_seconds is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(remaining_seconds))
    if definition.service_account_name:
        spec["serviceAccountName"] = definition.service_account_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(meta["name"], index),
            "namespace": meta["namespace"],
            "annotations": {ANNOTATION_RUN: meta["name"]},
            "labels": {
                LABEL_RUN: run_label(meta["name"]),
                LABEL_TASK: run["spec"]["task"],
                LABEL_ATTEMPT: str(attempt),
                LABEL_QUEUE: definition.queue.name,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "TaskRun",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
