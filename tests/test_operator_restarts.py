"""SIGKILLing the operator at moments set by its own progress loses no run, starts no
second pod for an attempt, and leaves every record and TaskRun status agreeing.

The kills are paced by committed transitions (the sum of the records' versions), never
by the clock: on a slow machine the operator still gets its work done between kills, and
a kill can land between any two of its writes."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import DevProcess, definition, operator_pid, running_dev, taskrun, wait_for

RUNS = 50


@pytest.fixture
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-restarts-") as process:
        yield process


def _runs(dev: DevProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = dev.get("/apis/durapod.io/v1/namespaces/default/taskruns")[
        "items"
    ]
    return items


def _all_succeeded(dev: DevProcess) -> bool:
    runs = _runs(dev)
    return len(runs) == RUNS and all(
        (r.get("status") or {}).get("phase") == "Succeeded" for r in runs
    )


def _progress(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(version), 0) FROM runs").fetchone()
    return int(row[0]) if row else 0


def test_killing_the_operator_between_its_writes_loses_nothing(dev: DevProcess) -> None:
    rng = random.Random(4)
    dsn = dev.env()["DATABASE_URL"]
    dev.apply(
        definition("quick", "tests.tasks:quick"),
        *(taskrun(f"run-{i:02d}", "quick", {"n": i, "pause": 0.3}) for i in range(RUNS)),
    )
    kills = 0
    while not _all_succeeded(dev) and kills < 12:
        pid = wait_for(lambda: operator_pid(dev), 60, "the operator to be running")
        start = _progress(dsn)
        step = rng.randint(3, 25)  # the kill lands after this many more transitions
        wait_for(
            lambda s=start, n=step: _progress(dsn) >= s + n or _all_succeeded(dev),
            300,
            f"{step} more transitions",
        )
        if _all_succeeded(dev):
            break
        os.kill(pid, signal.SIGKILL)
        kills += 1
        wait_for(lambda p=pid: operator_pid(dev) not in (None, p), 60, "a new operator")
    wait_for(lambda: _all_succeeded(dev), 300, "every run to succeed")
    assert kills >= 3
    with psycopg.connect(dsn) as conn:
        for run in _runs(dev):
            name, status = run["metadata"]["name"], run["status"]
            assert status["output"] == int(name.split("-")[1]) + 1
            record = conn.execute(
                "SELECT phase, attempt, resumes, pods FROM runs WHERE id = %s",
                (run["metadata"]["uid"],),
            ).fetchone()
            # The record and its projection agree; no disruption happened: one attempt,
            # one pod, however often the operator died.
            assert record == ("Succeeded", 1, 0, 1), (name, record)
            assert (status["attempt"], status["resumes"], status["pods"]) == (1, 0, 1)
            assert [p["metadata"]["name"] for p in dev.pods_of(name)] == [f"{name}-1"]
