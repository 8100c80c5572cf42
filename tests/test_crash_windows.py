"""A crash between any two of a reconcile's writes heals by itself.

Each test stops the operator (``Crash``, which nothing in the operator catches) between
two writes of one reconcile, checks that the crash landed where it should (the state the
crash left behind), then starts a fresh replica (a new pool, a new API client, a new
``Reconciler``: a restart) and drives it until the run is finished. At the end the run
record and the TaskRun status agree (the status is the record's projection), and the run
had exactly one pod per attempt: in the database, in the cluster and on the node.

The last tests write the TaskRun status from outside (without ``definition``, with a
wrong phase): the next reconcile rewrites it from the record instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from durapod.operator.kube import Kube, PodRejected
from durapod.store import queues
from durapod.timestamps import now_stamp
from tests.helpers import LocalCluster
from tests.operator_harness import (
    NS,
    Crash,
    CrashingKube,
    Observer,
    Replica,
    Stack,
    running_stack,
    until,
)

TASK = "quick"


@pytest.fixture
def stack(node_cluster: LocalCluster, database: str) -> Iterator[Stack]:
    with running_stack(node_cluster, database) as running:
        yield running


@asynccontextmanager
async def observing(stack: Stack, **definition: Any) -> AsyncIterator[Observer]:
    seen = await Observer.open(stack)
    try:
        await seen.define(TASK, "tests.tasks:quick", **definition)
        yield seen
    finally:
        await seen.close()


async def never() -> bool:
    return False


async def crash(
    stack: Stack, names: list[str], point: str, match: Callable[[Any], bool] = lambda _: True
) -> None:
    """Run a replica whose process dies at ``point`` (where ``match`` holds); it must."""
    replica = await Replica.start(stack, lambda client: CrashingKube(client, point, match))
    try:
        with pytest.raises(Crash):
            await replica.drive(names, never, f"the crash {point}")
    finally:
        await replica.stop()


async def restart_until_finished(stack: Stack, seen: Observer, names: list[str]) -> None:
    replica = await Replica.start(stack)
    try:

        async def all_finished() -> bool:
            return all([await seen.finished(name) for name in names])

        await replica.drive(names, all_finished, f"{names} to succeed after the restart")
    finally:
        await replica.stop()


def test_a_crash_after_the_start_commit_before_the_pod_is_created(stack: Stack) -> None:
    async def scenario() -> None:
        async with observing(stack) as seen:
            await seen.trigger("r", TASK, {"n": 1})
            await crash(stack, ["r"], "before create_pod")

            record = await seen.record("r")
            assert record is not None
            assert (record.phase, record.attempt, record.pods) == ("Starting", 1, 1), record
            assert [(p.idx, p.in_cluster) for p in await seen.pod_records("r")] == [(1, False)]
            assert await seen.pods("r") == []
            assert (await seen.status("r"))["phase"] == "Queued"

            await restart_until_finished(stack, seen, ["r"])
            await seen.assert_succeeded_once("r", output=2)

    asyncio.run(scenario())


def test_a_crash_after_the_pod_is_created_before_it_is_recorded(stack: Stack) -> None:
    async def scenario() -> None:
        async with observing(stack) as seen:
            await seen.trigger("r", TASK, {"n": 1})
            await crash(stack, ["r"], "after create_pod")

            record = await seen.record("r")
            assert record is not None
            assert (record.phase, record.attempt, record.pods) == ("Starting", 1, 1), record
            assert [(p.idx, p.in_cluster) for p in await seen.pod_records("r")] == [(1, False)]
            assert [p["metadata"]["name"] for p in await seen.pods("r")] == ["r-1"]

            await restart_until_finished(stack, seen, ["r"])
            await seen.assert_succeeded_once("r", output=2)  # in_cluster recorded, one pod

    asyncio.run(scenario())


@pytest.mark.parametrize("phase", ["Queued", "Starting", "Running"])
def test_a_crash_after_a_commit_before_the_status_is_projected(stack: Stack, phase: str) -> None:
    async def scenario() -> None:
        async with observing(stack) as seen:
            # A pause keeps the pod running long enough for the operator to see it Running.
            await seen.trigger("r", TASK, {"n": 1, "pause": 2})
            await crash(
                stack,
                ["r"],
                "before patch_run_status",
                lambda patch: patch.get("phase") == phase,
            )

            record = await seen.record("r")
            assert record is not None and record.phase == phase, record
            assert (await seen.status("r")).get("phase") != phase  # stale
            assert not await seen.agrees("r")

            replica = await Replica.start(stack)
            try:
                await replica.reconcile_once("r")  # one reconcile rewrites the stale status
                assert await seen.agrees("r")
            finally:
                await replica.stop()
            await restart_until_finished(stack, seen, ["r"])
            await seen.assert_succeeded_once("r", output=2)

    asyncio.run(scenario())


def test_a_crash_after_the_final_commit_before_the_status_and_events(stack: Stack) -> None:
    async def scenario() -> None:
        # One slot: "b" waits in line for it while "a" runs.
        async with observing(stack, queue={"name": "one", "concurrencyLimit": 1}) as seen:
            await seen.trigger("a", TASK, {"n": 1})
            await seen.trigger("b", TASK, {"n": 10})
            await crash(stack, ["a", "b"], "before event", lambda reason: reason == "Succeeded")

            record = await seen.record("a")
            assert record is not None
            assert (record.phase, record.output) == ("Succeeded", 2), record
            assert not record.holds_slot  # released in the same transaction
            assert [p.outcome for p in await seen.pod_records("a")] == ["Succeeded"]
            status = await seen.status("a")
            assert status["phase"] in ("Starting", "Running") and status.get("output") is None
            assert "Succeeded" not in await seen.events("a")
            waiting = await seen.record("b")
            assert waiting is not None and waiting.phase == "Queued", waiting
            assert not waiting.holds_slot and waiting.pods == 0, waiting

            await restart_until_finished(stack, seen, ["a", "b"])
            await seen.assert_succeeded_once("a", output=2)
            await seen.assert_succeeded_once("b", output=11)
            [state] = await queues.states(seen.pool, NS)
            assert (state.name, state.running, state.waiting) == ("one", 0, 0)

    asyncio.run(scenario())


# -- a status written from outside ------------------------------------------------------


async def drive_until_phase(replica: Replica, seen: Observer, phase: str) -> None:
    async def reached() -> bool:
        record = await seen.record("r")
        return record is not None and record.phase == phase and await seen.agrees("r")

    await replica.drive(["r"], reached, f"r to be {phase}")


@pytest.mark.parametrize(
    ("when", "written"),
    [
        ("Running", {"definition": None}),
        ("Running", {"phase": "Failed", "definition": None}),
        ("Running", {"phase": "Pending", "attempt": 7, "podName": None}),
        ("Succeeded", {"phase": "Running", "definition": None, "output": None}),
    ],
    ids=["no-definition", "failed-no-definition", "pending-wrong-fields", "succeeded-to-running"],
)
def test_an_outside_status_write_is_repaired(stack: Stack, when: str, written: Any) -> None:
    async def scenario() -> None:
        async with observing(stack) as seen:
            await seen.trigger("r", TASK, {"n": 1, "pause": 2})
            replica = await Replica.start(stack, Kube)
            try:
                await drive_until_phase(replica, seen, when)
                await seen.write_status("r", written)
                assert not await seen.agrees("r")
                await replica.reconcile_once("r")  # no exception: the status is rewritten
                assert await seen.agrees("r")
                await replica.drive(["r"], lambda: seen.finished("r"), "r to succeed")
            finally:
                await replica.stop()
            await seen.assert_succeeded_once("r", output=2)

    asyncio.run(scenario())


def test_an_outside_status_before_the_operator_sees_the_run_is_overwritten(
    stack: Stack,
) -> None:
    """The record is the truth: a status claiming the run is over does not make it so."""

    async def scenario() -> None:
        async with observing(stack) as seen:
            await seen.trigger("r", TASK, {"n": 1})
            await seen.write_status("r", {"phase": "Succeeded", "output": 99})
            replica = await Replica.start(stack)
            try:
                await replica.drive(["r"], lambda: seen.finished("r"), "r to succeed")
            finally:
                await replica.stop()
            await seen.assert_succeeded_once("r", output=2)

    asyncio.run(scenario())


# -- found on the way ---------------------------------------------------------------------


def test_a_pod_deleted_while_the_operator_is_down_is_not_created_again(stack: Stack) -> None:
    """Window 2, then the pod, already running the task, is evicted (Eviction API) before
    the operator is back. Its record was never marked in the cluster, yet the pod existed:
    a new replica must not create a second pod of the same name for it (it resumes)."""

    async def scenario() -> None:
        async with observing(stack) as seen:
            await seen.trigger("r", TASK, {"n": 1, "pause": 3})
            await crash(stack, ["r"], "after create_pod")

            async def in_the_task() -> bool:  # step "one" is done; it pauses after it
                return "one" in await seen.checkpoints("r")

            await until(in_the_task, "pod r-1 to run the task")
            await seen.evict("r-1")
            await until(lambda: _no_pods(seen, "r"), "pod r-1 to be gone")

            await restart_until_finished(stack, seen, ["r"])
            assert await seen.agrees("r")
            started = [p.name.split("_")[1] for p in stack.pod_logs("r")]
            assert len(started) == len(set(started)), f"a pod name started twice: {started}"
            record = await seen.record("r")
            assert record is not None and record.pods == len(started), (record, started)

    asyncio.run(scenario())


async def _no_pods(seen: Observer, name: str) -> bool:
    return await seen.pods(name) == []


class ConflictingKube(Kube):
    """Before the status write that finishes a run, ``lastCheckpoint`` is merged into the
    TaskRun (as ``show_checkpoint`` does at any time): the guarded write meets a Conflict."""

    conflicted = False

    async def patch_run_status(self, run: dict[str, Any], status: dict[str, Any]) -> Any:
        if not self.conflicted and status.get("phase") == "Succeeded":
            self.conflicted = True
            meta = run["metadata"]
            checkpoint = {"step": "two", "at": now_stamp()}
            await self.merge_status(
                "taskruns", meta["namespace"], meta["name"], {"lastCheckpoint": checkpoint}
            )
        return await super().patch_run_status(run, status)


@pytest.mark.parametrize("conflict", [False, True], ids=["no-conflict", "conflict"])
def test_a_finishing_run_hands_its_slot_on(stack: Stack, conflict: bool) -> None:
    """The slot a finishing run gives back is handed on at once (a refill is asked for),
    even when its status write meets a Conflict: the refill must not wait for the resync."""

    async def scenario() -> None:
        async with observing(stack, queue={"name": "one", "concurrencyLimit": 1}) as seen:
            await seen.trigger("a", TASK, {"n": 1, "pause": 3})
            await seen.trigger("b", TASK, {"n": 10})
            replica = await Replica.start(stack, ConflictingKube if conflict else Kube)
            try:

                async def in_line() -> bool:
                    a, b = await seen.record("a"), await seen.record("b")
                    return bool(a and b and a.phase == "Running" and b.phase == "Queued")

                await replica.drive(["a", "b"], in_line, "a to run and b to wait")
                mark = len(replica.added)
                # Only "a" is reconciled now, as only its pod's events would bring it back.
                await replica.drive(["a"], lambda: seen.finished("a"), "a to succeed")
                assert isinstance(replica.kube, Kube)
                if conflict:
                    assert getattr(replica.kube, "conflicted", False)
                assert ("queue", NS, "one") in replica.added[mark:], replica.added[mark:]
            finally:
                await replica.stop()

    asyncio.run(scenario())


class RefusingKube(Kube):
    """An API server that refuses every pod as invalid (422), as a real one refuses a pod
    whose spec it cannot accept."""

    async def create_pod(self, manifest: Any) -> bool:
        name = manifest["metadata"]["name"]
        raise PodRejected(f'Pod "{name}" is invalid: spec.containers[0].image: Required value')


def test_a_pod_the_api_server_refuses_fails_the_run_with_the_reason(stack: Stack) -> None:
    """A 422 on the pod is permanent: the run ends Failed saying so, with its slot given
    back, rather than retrying forever."""

    async def scenario() -> None:
        async with observing(stack) as seen:
            await seen.trigger("r", TASK, {"n": 1})
            replica = await Replica.start(stack, RefusingKube)
            try:
                await replica.drive(["r"], lambda: seen.finished("r", "Failed"), "the run to fail")
            finally:
                await replica.stop()
            error = (await seen.status("r"))["error"]
            assert error["type"] == "PodRejected"
            assert "the API server refused pod r-1" in error["message"]
            assert "spec.containers[0].image: Required value" in error["message"]
            record = await seen.record("r")
            assert record is not None and not record.holds_slot and record.phase == "Failed"

    asyncio.run(scenario())
