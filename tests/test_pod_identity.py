"""A run's pod carries no secret: it proves which run it is with a projected
ServiceAccount token (audience ``durapod``, bound to the pod, renewed by the kubelet) that
the API checks by TokenReview. Anyone allowed to read pods learns nothing usable, and a
deleted pod's token is dead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod import auth
from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-identity-") as process:
        yield process


def token_file(dev: DevProcess, pod: dict[str, Any]) -> Path:
    """Where the subprocess kubelet put the pod's projected token (its volume)."""
    return dev.home / "kubelet-pods" / pod["metadata"]["uid"] / auth.TOKEN_VOLUME / "token"


def test_the_pod_spec_holds_no_token_and_a_deleted_pods_token_is_refused(
    dev: DevProcess,
) -> None:
    dev.apply(
        definition("holder", "tests.tasks:stuck"),
        taskrun("holder-1", "holder", {}),
        taskrun("holder-2", "holder", {}),
    )
    run = dev.wait_phase("holder-1", "Running")
    other = dev.wait_phase("holder-2", "Running")
    pod = dev.pods_of("holder-1")[0]
    path = wait_for(lambda: token_file(dev, pod) if token_file(dev, pod).exists() else None)
    token = path.read_text()
    assert token.count(".") == 2  # a JWT, as a projected ServiceAccount token is

    spec = pod["spec"]
    assert token not in json.dumps(pod)
    assert spec["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert not [n for n in env if "TOKEN" in n and n != "DURAPOD_TOKEN_FILE"]
    assert env["DURAPOD_TOKEN_FILE"] == auth.TOKEN_FILE
    [source] = spec["volumes"][0]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == auth.AUDIENCE

    api = dev.env()["DURAPOD_API_URL"]
    internal = f"{api}/internal/v1/runs"
    headers = {"Authorization": f"Bearer {token}"}
    mine = httpx.get(f"{internal}/{run['metadata']['uid']}/context", headers=headers)
    assert mine.status_code == 200 and mine.json()["name"] == "holder-1"
    theirs = httpx.get(f"{internal}/{other['metadata']['uid']}/context", headers=headers)
    assert theirs.status_code == 403

    dev.kubectl("delete", "tr", "holder-1", "holder-2")
    wait_for(
        lambda: dev.get(f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}") is None,
        60,
        "the pod to be gone",
    )

    def refused() -> bool:
        answer = httpx.get(f"{internal}/{run['metadata']['uid']}/context", headers=headers)
        return answer.status_code == 401

    wait_for(refused, 60, "the deleted pod's token to be refused")
