"""All state lives in TaskRun status and PostgreSQL: SIGKILLing the operator at random
moments loses no run, starts no second pod for an attempt, and misses no transition."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for

RUNS = 50


@pytest.fixture
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-restarts-") as process:
        yield process


def _operator_pid(dev: DevProcess) -> int | None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            parent = int(Path(cmdline.parent, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == dev.process.pid and b"durapod.operator" in args:
            return int(cmdline.parent.name)
    return None


def _phases(dev: DevProcess) -> dict[str, str]:
    listing = dev.get("/apis/durapod.io/v1/namespaces/default/taskruns")
    return {
        r["metadata"]["name"]: (r.get("status") or {}).get("phase", "") for r in listing["items"]
    }


def test_killing_the_operator_at_random_moments_loses_nothing(dev: DevProcess) -> None:
    rng = random.Random(4)
    dev.apply(
        definition("quick", "tests.tasks:quick"),
        *(taskrun(f"run-{i:02d}", "quick", {"n": i, "pause": 0.3}) for i in range(RUNS)),
    )
    kills = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        phases = _phases(dev)
        if len(phases) == RUNS and all(p == "Succeeded" for p in phases.values()):
            break
        pid = wait_for(lambda: _operator_pid(dev), 30, "the operator to be running")
        time.sleep(rng.uniform(0.2, 1.5))  # a random moment in the operator's life
        os.kill(pid, signal.SIGKILL)
        kills += 1
        wait_for(lambda p=pid: _operator_pid(dev) not in (None, p), 30, "a new operator")
    phases = _phases(dev)
    assert sorted(phases.values()) == ["Succeeded"] * RUNS, phases
    assert kills >= 3
    for i in range(RUNS):
        run = dev.taskrun(f"run-{i:02d}")
        assert run["status"]["output"] == i + 1
        # No disruption happened: one attempt, one pod, however often the operator died.
        with psycopg.connect(dev.env()["DATABASE_URL"]) as conn:
            rows = conn.execute(
                "SELECT idx, attempt, outcome FROM pods WHERE run_id = %s ORDER BY idx",
                (run["metadata"]["uid"],),
            ).fetchall()
        assert (run["status"]["attempt"], run["status"]["pods"]) == (1, 1), (rows, run["status"])
        assert [p["metadata"]["name"] for p in dev.pods_of(f"run-{i:02d}")] == [f"run-{i:02d}-1"]
