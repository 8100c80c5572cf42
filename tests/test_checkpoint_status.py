"""``status.lastCheckpoint`` costs the same at any replica count: one replica writes it,
at most once per run per interval (1 s), the last step is always shown in the end, and a
TaskRun event whose only change is ``lastCheckpoint`` starts no reconcile."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import httpx
import psycopg

from durapod.operator.handlers import Operator
from durapod.operator.settings import Settings
from durapod.timestamps import parse_time
from tests.helpers import definition, running_dev, taskrun, wait_for


def test_three_replicas_write_last_checkpoint_at_most_once_a_second_and_show_the_last() -> None:
    with running_dev("durapod-ckpt-", "--operators", "3") as dev:
        dev.apply(definition("many", "tests.tasks:steps"))
        with psycopg.connect(dev.env()["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE effects (run text, step text, kind text)")
        seen: list[dict[str, Any]] = []
        url = f"{dev.kube_url}/apis/durapod.io/v1/namespaces/default/taskruns"
        payload = {"dsn": dev.env()["DATABASE_URL"], "count": 30, "seconds": 0.05}
        dev.apply(taskrun("many-1", "many", payload))
        with httpx.stream(
            "GET",
            url,
            params={"watch": "true", "fieldSelector": "metadata.name=many-1"},
            timeout=httpx.Timeout(30, read=120),
        ) as stream:
            for line in stream.iter_lines():
                obj = json.loads(line)["object"]
                status = obj.get("status") or {}
                if status.get("lastCheckpoint") and (
                    not seen or seen[-1] != status["lastCheckpoint"]
                ):
                    seen.append(status["lastCheckpoint"])
                if status.get("phase") == "Succeeded" and seen and seen[-1]["step"] == "step-30":
                    break
        assert seen[-1]["step"] == "step-30"  # the trailing write: the last step is shown
        stamps = [parse_time(c["at"]) for c in seen]
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        # Every write is a new, later step, a second or more after the one before: one
        # writer at a time across the three replicas (30 steps gave far fewer writes).
        assert all(gap >= timedelta(seconds=0.99) for gap in gaps), seen
        steps = [int(c["step"].split("-")[1]) for c in seen]
        assert steps == sorted(set(steps)) and len(seen) < 30, seen
        wait_for(lambda: dev.taskrun("many-1")["status"]["output"]["total"] == 465, 30, "output")


def test_an_event_changing_only_the_status_starts_no_reconcile() -> None:
    """The status is written from the record (lastCheckpoint by one replica, the rest by
    any): an event that changed only it is no news. Spec and metadata changes are."""
    settings = Settings("postgresql://unused", "http://unused")
    operator = Operator(settings, None, None)  # type: ignore[arg-type]
    added: list[tuple[str, str, str]] = []
    operator.queue.add = added.append  # type: ignore[method-assign]
    run = {
        "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "1", "uid": "u"},
        "spec": {"task": "t"},
        "status": {"phase": "Running", "lastCheckpoint": {"step": "a", "at": "x"}},
    }
    operator.taskrun_seen("ADDED", run)
    assert added == [("run", "ns", "r")]
    checkpointed = {
        **run,
        "metadata": {**run["metadata"], "resourceVersion": "2"},
        "status": {"phase": "Running", "lastCheckpoint": {"step": "b", "at": "y"}},
    }
    operator.taskrun_seen("MODIFIED", checkpointed)
    projected = {**checkpointed, "status": {"phase": "Succeeded"}}
    operator.taskrun_seen("MODIFIED", projected)
    assert added == [("run", "ns", "r")]  # nothing new to decide
    cancelled = {**projected, "spec": {"task": "t", "cancel": True}}
    operator.taskrun_seen("MODIFIED", cancelled)
    assert added == [("run", "ns", "r")] * 2
    labelled = {**cancelled, "metadata": {**cancelled["metadata"], "labels": {"a": "b"}}}
    operator.taskrun_seen("MODIFIED", labelled)
    assert len(added) == 3
    operator.taskrun_seen("DELETED", labelled)
    assert len(added) == 4
