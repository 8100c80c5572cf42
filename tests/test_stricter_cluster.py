"""durapod on a cluster that refuses to start a pod: no node can hold it, its image does
not exist, or an OOM upgrade asks for more than any node has. The run says why (its
Reason column, an Event, its message) and fails with that reason once its
TaskDefinition's ``startDeadline`` has passed, giving its queue slot back.

The node of this ``durapod dev`` offers 400Mi (300Mi allocatable after the kubelet's
eviction reserve): a micro run (256Mi) fits, a small-1x run (512Mi) never does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for
from tests.test_e2e_dev import columns

DEADLINE = "15s"
ONE_AT_A_TIME = {"name": "strict", "concurrencyLimit": 1}


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-strict-", "--node-memory", "400Mi") as process:
        yield process


def events_of(dev: DevProcess, run: str) -> list[dict[str, Any]]:
    listing = dev.get(
        "/api/v1/namespaces/default/events",
        fieldSelector=f"involvedObject.name={run},involvedObject.kind=TaskRun",
    )
    return list((listing or {}).get("items") or [])


def reason(dev: DevProcess, run: str) -> str | None:
    status = (dev.taskrun(run) or {}).get("status") or {}
    found: str | None = status.get("reason")
    return found


def test_an_unschedulable_run_says_so_then_fails_and_frees_its_slot(dev: DevProcess) -> None:
    dev.apply(
        definition(
            "too-big",
            "tests.tasks:quick",
            machine="small-1x",
            startDeadline=DEADLINE,
            queue=ONE_AT_A_TIME,
        ),
        definition("fits", "tests.tasks:quick", machine="micro", queue=ONE_AT_A_TIME),
        taskrun("too-big-1", "too-big", {"n": 1}),
    )
    wait_for(lambda: reason(dev, "too-big-1") == "Unschedulable", 60, "Reason Unschedulable")
    dev.apply(taskrun("fits-1", "fits", {"n": 1}))
    row = columns(dev.kubectl("get", "tr").stdout.splitlines(), "too-big-1")
    assert (row["PHASE"], row["REASON"]) == ("Starting", "Unschedulable")
    message = dev.taskrun("too-big-1")["status"]["conditions"][0]["message"]
    assert "0/1 nodes are available: 1 Insufficient memory" in message
    assert any(e["reason"] == "Unschedulable" for e in events_of(dev, "too-big-1"))
    # The slot is held meanwhile: the next run of the queue waits its turn.
    assert dev.taskrun("fits-1")["status"]["phase"] == "Queued"

    failed = dev.wait_phase("too-big-1", "Failed", timeout=120)
    error = failed["status"]["error"]
    assert (error["type"], error["reason"]) == ("StartDeadlineExceeded", "Unschedulable")
    assert f"did not start within its startDeadline of {DEADLINE}" in error["message"]
    assert failed["status"]["reason"] == "Unschedulable"
    wait_for(lambda: not dev.pods_of("too-big-1"), 60, "the unschedulable pod to be deleted")
    assert dev.wait_phase("fits-1", "Succeeded", "Failed", timeout=120)["status"]["phase"] == (
        "Succeeded"
    )


def test_an_image_that_cannot_be_pulled_fails_the_run_with_that_reason(dev: DevProcess) -> None:
    wrong = definition("no-image", "tests.tasks:quick", machine="micro", startDeadline=DEADLINE)
    wrong["spec"]["image"] = "nope:1"
    dev.apply(wrong, taskrun("no-image-1", "no-image", {"n": 1}))
    wait_for(
        lambda: reason(dev, "no-image-1") in ("ErrImagePull", "ImagePullBackOff"),
        60,
        "an image pull reason on the run",
    )
    failed = dev.wait_phase("no-image-1", "Failed", timeout=120)
    error = failed["status"]["error"]
    assert error["type"] == "StartDeadlineExceeded"
    assert error["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert "nope:1" in error["message"]


def test_an_oom_upgrade_no_node_can_hold_fails_as_unschedulable(dev: DevProcess) -> None:
    dev.apply(
        definition(
            "hungry-strict",
            "tests.tasks:hungry",
            machine="micro",
            startDeadline=DEADLINE,
            retry={"maxAttempts": 3, "minDelay": "1s", "onOOM": {"upgradeMachine": True}},
        ),
        taskrun("hungry-strict-1", "hungry-strict", {"mib": 300}),
    )
    failed = dev.wait_phase("hungry-strict-1", "Failed", timeout=180)
    status = failed["status"]
    assert status["machine"] == "small-1x"
    assert (status["error"]["type"], status["error"]["reason"]) == (
        "StartDeadlineExceeded",
        "Unschedulable",
    )
    first = dev.get("/api/v1/namespaces/default/pods/hungry-strict-1-1")
    terminated = first["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"
