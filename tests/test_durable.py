"""Durable execution end to end (durapod dev, real PostgreSQL, real kubectl): runs carry
on from their last checkpoint after a crash, an eviction or an OOM kill; errors follow
the retry policy; sleeps and child runs hold no pod."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for

FAST_RETRY = {"minDelay": "100ms", "maxDelay": "1s", "jitter": False}


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-durable-") as process:
        yield process


@pytest.fixture
def effects(database: str) -> str:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE effects (run text, step text, kind text, "
            "at timestamptz DEFAULT clock_timestamp())"
        )
    return database


def _count(dsn: str, run: str, kind: str = "done") -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT step, count(*) FROM effects WHERE run = %s AND kind = %s GROUP BY step",
            (run, kind),
        ).fetchall()
    return dict(rows)


def _started(dsn: str, run: str, step: str) -> bool:
    return _count(dsn, run, "start").get(step, 0) >= 1


def _pid(dev: DevProcess, pod: str) -> int:
    found = dev.get(f"/api/v1/namespaces/default/pods/{pod}")
    container = found["status"]["containerStatuses"][0]
    return int(container["containerID"].split("//")[1])


def _pod_rows(dsn_of_dev: str, run_uid: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn_of_dev, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT * FROM pods WHERE run_id = %s ORDER BY idx", (run_uid,)
        ).fetchall()


def test_a_pod_killed_mid_step_resumes_and_no_completed_step_runs_again(
    dev: DevProcess, effects: str
) -> None:
    dev.apply(
        definition("steps", "tests.tasks:steps", retry=FAST_RETRY),
        taskrun("crash-1", "steps", {"dsn": effects, "seconds": 0.3}),
    )
    wait_for(lambda: _started(effects, "crash-1", "step-3"), 60, "step 3 to start")
    os.kill(_pid(dev, "crash-1-1"), signal.SIGKILL)
    run = dev.wait_phase("crash-1", "Succeeded", "Failed")
    assert run["status"]["phase"] == "Succeeded"
    assert run["status"]["output"] == {"total": 15, "attempt": 2}
    assert _count(effects, "crash-1") == {f"step-{i}": 1 for i in range(1, 6)}
    starts = _count(effects, "crash-1", "start")
    assert starts["step-3"] == 2 and starts["step-1"] == 1 and starts["step-2"] == 1
    pods = _pod_rows(dev.env()["DATABASE_URL"], run["metadata"]["uid"])
    assert [p["outcome"] for p in pods] == ["Crashed", "Succeeded"]


def test_an_evicted_pod_resumes_without_spending_an_attempt(dev: DevProcess, effects: str) -> None:
    dev.apply(
        definition("steps", "tests.tasks:steps", retry=FAST_RETRY),
        taskrun("evict-1", "steps", {"dsn": effects, "seconds": 0.3}),
    )
    wait_for(lambda: _started(effects, "evict-1", "step-2"), 60, "step 2 to start")
    response = httpx.post(
        f"{dev.kube_url}/api/v1/namespaces/default/pods/evict-1-1/eviction",
        json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "evict-1-1"}},
    )
    assert response.status_code == 201
    run = dev.wait_phase("evict-1", "Succeeded", "Failed")
    status = run["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 1 and status["resumes"] == 1
    assert _count(effects, "evict-1") == {f"step-{i}": 1 for i in range(1, 6)}
    pods = _pod_rows(dev.env()["DATABASE_URL"], run["metadata"]["uid"])
    assert [(p["attempt"], p["outcome"]) for p in pods] == [(1, "Evicted"), (1, "Succeeded")]
    # Events are best-effort (posted after the transition): wait for it, within a bound.
    described = wait_for(
        lambda: (
            (out := dev.kubectl("describe", "tr", "evict-1").stdout) and "Evicted" in out and out
        ),
        30,
        "the Evicted event",
    )
    assert "EvictionByEvictionAPI" in described


def test_an_oom_kill_retries_on_the_next_larger_machine(dev: DevProcess) -> None:
    dev.apply(
        definition(
            "hungry",
            "tests.tasks:hungry",
            machine="micro",
            retry={**FAST_RETRY, "onOOM": {"upgradeMachine": True}},
        ),
        taskrun("oom-1", "hungry", {"mib": 300}),
    )
    run = dev.wait_phase("oom-1", "Succeeded", "Failed")
    status = run["status"]
    assert status["phase"] == "Succeeded" and status["output"] == "held 300 MiB"
    assert status["attempt"] == 2 and status["machine"] == "small-1x" and status["resumes"] == 0
    pods = _pod_rows(dev.env()["DATABASE_URL"], run["metadata"]["uid"])
    assert [(p["machine"], p["outcome"]) for p in pods] == [
        ("micro", "OOMKilled"),
        ("small-1x", "Succeeded"),
    ]
    second = dev.get("/api/v1/namespaces/default/pods/oom-1-2")
    assert second["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"


def test_task_errors_retry_with_the_policy_backoff_then_fail(dev: DevProcess) -> None:
    retry = {"maxAttempts": 3, "minDelay": "500ms", "maxDelay": "10s", "factor": 2, "jitter": False}
    dev.apply(
        definition("failing", "tests.tasks:failing", retry=retry),
        taskrun("fail-1", "failing", {"kind": "error"}),
    )
    run = dev.wait_phase("fail-1", "Failed")
    error = run["status"]["error"]
    assert error["type"] == "ValueError" and error["message"] == "attempt 3 failed"
    assert "raise ValueError" in error["traceback"] and run["status"]["attempt"] == 3
    pods = _pod_rows(dev.env()["DATABASE_URL"], run["metadata"]["uid"])
    assert [p["outcome"] for p in pods] == ["TaskError"] * 3
    gaps = [
        (later["created_at"] - earlier["finished_at"]).total_seconds()
        for earlier, later in itertools.pairwise(pods)
    ]
    assert 0.5 <= gaps[0] < 1.5 and 1.0 <= gaps[1] < 2.0, gaps


def test_abort_run_fails_at_once(dev: DevProcess) -> None:
    dev.apply(
        definition("failing", "tests.tasks:failing", retry=FAST_RETRY),
        taskrun("abort-1", "failing", {"kind": "abort"}),
    )
    run = dev.wait_phase("abort-1", "Failed")
    assert run["status"]["attempt"] == 1 and run["status"]["error"]["type"] == "AbortRun"
    assert run["status"]["error"]["message"] == "the order is gone"


def test_retry_after_sets_the_delay(dev: DevProcess) -> None:
    dev.apply(
        definition("failing", "tests.tasks:failing", retry=FAST_RETRY),
        taskrun("later-1", "failing", {"kind": "retry-after"}),
    )
    run = dev.wait_phase("later-1", "Succeeded", "Failed")
    assert run["status"]["phase"] == "Succeeded" and run["status"]["attempt"] == 2
    pods = _pod_rows(dev.env()["DATABASE_URL"], run["metadata"]["uid"])
    gap = (pods[1]["created_at"] - pods[0]["finished_at"]).total_seconds()
    assert 1.5 <= gap < 3.0, gap  # RetryAfter("1500ms") beat the policy's 100ms


def test_an_oversized_checkpoint_fails_the_run_naming_step_and_size(dev: DevProcess) -> None:
    dev.apply(
        definition("big", "tests.tasks:big_step", checkpointSizeLimit=1000),
        taskrun("big-1", "big", {"size": 5000}),
    )
    run = dev.wait_phase("big-1", "Failed")
    error = run["status"]["error"]
    assert error["type"] == "CheckpointTooLargeError" and run["status"]["attempt"] == 1
    assert error["message"] == (
        "step 'huge' output is 5002 bytes, over the checkpoint limit of 1000 bytes"
    )


def test_a_durable_sleep_holds_no_pod_and_resumes_after_the_time(
    dev: DevProcess, effects: str
) -> None:
    dev.apply(
        definition("sleeper", "tests.tasks:sleeper"),
        taskrun("nap-1", "sleeper", {"dsn": effects, "sleep": "2s"}),
    )
    waiting = dev.wait_phase("nap-1", "Waiting")
    # No pod runs while Waiting: the one that exited to sleep is kept, for its log.
    assert [p["status"]["phase"] for p in dev.pods_of("nap-1")] == ["Succeeded"]
    resume_at = datetime.fromisoformat(waiting["status"]["resumeAt"].replace("Z", "+00:00"))
    run = dev.wait_phase("nap-1", "Succeeded", "Failed")
    assert run["status"]["output"] == "awake" and run["status"]["attempt"] == 1
    assert _count(effects, "nap-1") == {"before": 1, "after": 1}
    second = dev.get("/api/v1/namespaces/default/pods/nap-1-2")
    created = datetime.fromisoformat(second["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert created >= resume_at.replace(microsecond=0)


def test_trigger_and_wait_resumes_the_parent_with_the_child_output(dev: DevProcess) -> None:
    dev.apply(
        definition("slow-double", "tests.tasks:slow_double"),
        definition("parent", "tests.tasks:parent"),
        taskrun("parent-1", "parent", {"n": 21, "child": "slow-double"}),
    )
    waiting = dev.wait_phase("parent-1", "Waiting")
    child = waiting["status"]["waitingFor"]
    assert child.startswith("parent-1-")
    assert [p["status"]["phase"] for p in dev.pods_of("parent-1")] == ["Succeeded"]
    run = dev.wait_phase("parent-1", "Succeeded", "Failed")
    assert run["status"]["output"] == {"child said": 42}
    child_run = dev.taskrun(child)
    assert child_run["spec"]["parent"]["name"] == "parent-1"
    assert child_run["status"]["output"] == 42


def test_cancel_terminates_the_pod(dev: DevProcess) -> None:
    dev.apply(definition("stuck", "tests.tasks:stuck"), taskrun("cancel-1", "stuck", {}))
    wait_for(
        lambda: ((dev.taskrun("cancel-1") or {}).get("status") or {}).get("lastCheckpoint"),
        60,
        "the first checkpoint",
    )
    dev.kubectl("patch", "tr", "cancel-1", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    run = dev.wait_phase("cancel-1", "Cancelled")
    assert run["status"]["error"]["message"] == "cancelled by spec.cancel"
    wait_for(lambda: dev.pods_of("cancel-1") == [], 30, "the pod to go")


def test_max_duration_times_the_run_out(dev: DevProcess) -> None:
    dev.apply(
        definition("stuck-1s", "tests.tasks:stuck", maxDuration="1s"),
        taskrun("slow-1", "stuck-1s", {}),
    )
    run = dev.wait_phase("slow-1", "TimedOut", "Failed", "Succeeded")
    assert run["status"]["phase"] == "TimedOut"
    assert "maxDuration of 1s" in run["status"]["error"]["message"]


def test_finished_runs_are_deleted_after_their_ttl(dev: DevProcess) -> None:
    dev.apply(
        definition("double", "tests.tasks:double"),
        taskrun("short-lived", "double", {"n": 1}, ttl="1s"),
    )
    dev.wait_phase("short-lived", "Succeeded")
    wait_for(lambda: dev.taskrun("short-lived") is None, 30, "the run to expire")


def test_a_run_keeps_the_definition_it_was_admitted_with(dev: DevProcess, effects: str) -> None:
    dev.apply(
        definition("pinned", "tests.tasks:steps", retry=FAST_RETRY),
        taskrun("pinned-1", "pinned", {"dsn": effects, "seconds": 0.3}),
    )
    wait_for(lambda: _started(effects, "pinned-1", "step-2"), 60, "step 2 to start")
    dev.apply(definition("pinned", "tests.tasks:explode", retry=FAST_RETRY))  # a new deploy
    dev.kubectl("delete", "pod", "pinned-1-1")
    run = dev.wait_phase("pinned-1", "Succeeded", "Failed")
    assert run["status"]["phase"] == "Succeeded" and run["status"]["resumes"] == 1
    env = dev.get("/api/v1/namespaces/default/pods/pinned-1-2")["spec"]["containers"][0]["env"]
    assert {"name": "DURAPOD_ENTRYPOINT", "value": "tests.tasks:steps"} in env
    assert run["status"]["definition"]["entrypoint"] == "tests.tasks:steps"


def test_deleting_a_running_taskrun_stops_its_pod_and_records_it_cancelled_and_removed(
    dev: DevProcess,
) -> None:
    dev.apply(definition("stuck", "tests.tasks:stuck"), taskrun("doomed-1", "stuck", {}))
    run = dev.wait_phase("doomed-1", "Running")
    pid = wait_for(
        lambda: _pid(dev, "doomed-1-1") if dev.pods_of("doomed-1") else None, 30, "the pod process"
    )
    dev.kubectl("delete", "tr", "doomed-1")
    wait_for(lambda: dev.pods_of("doomed-1") == [], 60, "the pod to be collected")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    def recorded() -> str | None:
        with psycopg.connect(dev.env()["DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT phase, removed_at IS NOT NULL FROM runs WHERE id = %s",
                (run["metadata"]["uid"],),
            ).fetchone()
        return row[0] if row and row == ("Cancelled", True) else None

    # The record stays (removed: it no longer answers for the name) until it is purged.
    assert wait_for(recorded, 30, "the run record to say Cancelled") == "Cancelled"
