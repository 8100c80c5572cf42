"""TaskSchedules with two operator replicas: one run per tick, Forbid, suspend, bad specs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from durapod.operator.schedules import next_tick, ticks_between
from tests.helpers import DevProcess, definition, running_dev, wait_for


def _schedule(name: str, cron: str, task: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "durapod.io/v1",
        "kind": "TaskSchedule",
        "metadata": {"name": name},
        "spec": {"cron": cron, "task": task, **spec},
    }


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-schedules-", "--operators", "2") as process:
        process.apply(
            definition("double", "tests.tasks:double"), definition("stuck", "tests.tasks:stuck")
        )
        yield process


def _runs(dev: DevProcess, schedule: str) -> list[dict[str, Any]]:
    listing = dev.get(
        "/apis/durapod.io/v1/namespaces/default/taskruns",
        labelSelector=f"durapod.io/schedule={schedule}",
    )
    return list(listing["items"])


def test_every_second_one_run_per_tick_with_two_replicas(dev: DevProcess) -> None:
    # catchUp covers a tick whose timer fires late on a busy machine.
    dev.apply(_schedule("every-second", "* * * * * *", "double", payload={"n": 1}, catchUp=10))
    wait_for(lambda: len(_runs(dev, "every-second")) >= 4, 30, "four ticks")
    dev.kubectl("patch", "ts", "every-second", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    runs = _runs(dev, "every-second")
    ticks = [int(r["metadata"]["name"].rsplit("-", 1)[1]) for r in runs]
    assert max(Counter(ticks).values()) == 1  # one run per tick
    keys = [r["spec"]["idempotencyKey"] for r in runs]
    assert len(set(keys)) == len(keys)
    ordered = sorted(ticks)
    assert ordered == list(range(ordered[0], ordered[0] + len(ordered)))  # no tick missed
    status = dev.get("/apis/durapod.io/v1/namespaces/default/taskschedules/every-second")["status"]
    assert status["lastScheduleTime"] and status["lastRun"].startswith("every-second-")
    for run in runs:
        dev.wait_phase(run["metadata"]["name"], "Succeeded")


def test_forbid_skips_ticks_while_a_run_is_running(dev: DevProcess) -> None:
    dev.apply(_schedule("one-at-a-time", "* * * * * *", "stuck", concurrencyPolicy="Forbid"))
    first = wait_for(lambda: _runs(dev, "one-at-a-time"), 30, "the first run")[0]
    dev.wait_phase(first["metadata"]["name"], "Running")
    started = datetime.now(UTC)
    wait_for(
        lambda: (
            (datetime.now(UTC) - started).total_seconds() > 3
            and dev.get("/apis/durapod.io/v1/namespaces/default/taskschedules/one-at-a-time")[
                "status"
            ].get("nextScheduleTime", "")
            > started.isoformat()
        ),
        30,
        "ticks to pass",
    )
    assert [r["metadata"]["name"] for r in _runs(dev, "one-at-a-time")] == [
        first["metadata"]["name"]
    ]
    dev.kubectl("delete", "ts", "one-at-a-time")


def test_a_bad_cron_or_timezone_is_reported_in_status(dev: DevProcess) -> None:
    dev.apply(_schedule("bad-zone", "0 3 * * *", "double", timezone="Mars/Olympus"))
    status = wait_for(
        lambda: (
            dev.get("/apis/durapod.io/v1/namespaces/default/taskschedules/bad-zone") or {}
        ).get("status"),
        30,
        "the schedule's status",
    )
    assert status["error"] == "unknown timezone 'Mars/Olympus'"


def test_tick_arithmetic_across_dst_and_catch_up() -> None:
    zone = "Europe/Berlin"
    before = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    # 02:30 does not exist on the spring-forward night; the tick moves to 03:00 local.
    assert next_tick("30 2 * * *", zone, before).isoformat() == "2026-03-29T03:00:00+02:00"
    missed = ticks_between(
        "0 * * * *",
        "UTC",
        datetime(2026, 1, 1, 0, 30, tzinfo=UTC),
        datetime(2026, 1, 1, 5, 0, tzinfo=UTC),
    )
    assert [t.hour for t in missed] == [1, 2, 3, 4, 5]
