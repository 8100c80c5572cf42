"""The operator's work queue drops nothing: a failing handler is retried with backoff, an
add during handling runs the key again after, only the earliest timer of a key is kept,
and no key is handled by two workers at once. End to end: a reconcile that fails because
PostgreSQL dropped its connections is retried by the queue and the run finishes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise

import psycopg
import pytest

from durapod import store
from durapod.operator.handlers import Operator
from durapod.operator.kube import Kube
from durapod.operator.workqueue import Backoff, WorkQueue
from durapod.store import runs
from durapod.timestamps import parse_time
from tests.helpers import LocalCluster
from tests.operator_harness import (
    NS,
    Observer,
    Stack,
    new_client,
    run_id,
    running_stack,
    until,
)

# -- the queue on its own -----------------------------------------------------------------


def test_backoff_doubles_up_to_its_maximum_with_jitter_below() -> None:
    backoff = Backoff(base=0.1, max=1.0)
    for failures, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (40, 1.0)]:
        for _ in range(50):
            assert full * 0.5 <= backoff.delay(failures) <= full


def test_a_failing_handler_is_retried_until_it_succeeds() -> None:
    failures = [RuntimeError("boom"), psycopg.OperationalError("dropped"), KeyError("x")]

    async def scenario() -> None:
        calls: list[str] = []
        done = asyncio.Event()

        async def handler(key: str) -> None:
            calls.append(key)
            if len(calls) <= len(failures):
                raise failures[len(calls) - 1]
            done.set()

        queue: WorkQueue[str] = WorkQueue(handler, workers=2, backoff=Backoff(0.01, 0.05))
        queue.start()
        try:
            queue.add("k")  # once: every further call is a retry
            await until(done.is_set, "the handler to succeed")
            assert calls == ["k"] * (len(failures) + 1)
            # Succeeded: its failure count is reset and nothing is pending for it any more.
            await until(lambda: queue.idle, "the queue to be idle")
            assert not queue._timers and not queue._failures
        finally:
            await queue.stop()

    asyncio.run(scenario())


def test_a_retry_backs_off_longer_after_each_failure() -> None:
    async def scenario() -> None:
        times: list[float] = []

        async def handler(key: str) -> None:
            times.append(time.monotonic())
            if len(times) <= 4:
                raise RuntimeError("again")

        queue: WorkQueue[str] = WorkQueue(handler, workers=1, backoff=Backoff(0.05, 10.0))
        queue.start()
        try:
            queue.add("k")
            await until(lambda: len(times) == 5, "four retries")
        finally:
            await queue.stop()
        gaps = [b - a for a, b in pairwise(times)]
        for failures, gap in enumerate(gaps, 1):  # never sooner than the jittered minimum
            assert gap >= 0.05 * 2 ** (failures - 1) * 0.5 * 0.9, gaps

    asyncio.run(scenario())


def test_adds_while_queued_are_one_and_an_add_while_handled_runs_again_after() -> None:
    async def scenario() -> None:
        calls: list[str] = []
        inside = asyncio.Event()
        release = asyncio.Event()
        running: Counter[str] = Counter()
        most = 0

        async def handler(key: str) -> None:
            nonlocal most
            calls.append(key)
            running[key] += 1
            most = max(most, running[key])
            try:
                if len(calls) == 1:
                    inside.set()
                    await release.wait()
            finally:
                running[key] -= 1

        queue: WorkQueue[str] = WorkQueue(handler, workers=4)
        for _ in range(3):
            queue.add("k")  # before any worker runs: one call
        queue.start()
        try:
            await until(inside.is_set, "the first call")
            queue.add("k")  # while handled: after it, once
            queue.add("k")
            for _ in range(10):  # let idle workers look for work (there must be none)
                await asyncio.sleep(0)
            assert calls == ["k"] and running["k"] == 1
            release.set()
            await until(lambda: len(calls) == 2 and queue.idle, "the call after")
            assert calls == ["k", "k"] and most == 1
            assert not queue._timers  # nothing else can come
        finally:
            await queue.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "order", [(3600.0, 0.01), (0.01, 3600.0)], ids=["later-first", "earlier-first"]
)
def test_add_after_keeps_only_the_earliest_timer(order: tuple[float, float]) -> None:
    async def scenario() -> None:
        calls: list[str] = []

        async def handler(key: str) -> None:
            calls.append(key)

        queue: WorkQueue[str] = WorkQueue(handler, workers=2)
        queue.start()
        try:
            for seconds in order:
                queue.add_after("k", seconds)
            assert len(queue._timers) == 1
            # Due in 10 ms, not in an hour: if the hour-long timer had won, this times out.
            await until(lambda: calls == ["k"], "the earliest timer")
            await until(lambda: queue.idle, "the queue to be idle")
            assert not queue._timers  # the hour-long one is gone, not merely later
        finally:
            await queue.stop()

    asyncio.run(scenario())


def test_no_key_is_handled_by_two_workers_at_once() -> None:
    keys = ["a", "b", "c"]

    async def scenario() -> None:
        gate = asyncio.Event()
        running: Counter[str] = Counter()
        most: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        overall = 0

        async def handler(key: str) -> None:
            nonlocal overall
            calls[key] += 1
            running[key] += 1
            most[key] = max(most[key], running[key])
            overall = max(overall, sum(running.values()))
            try:
                await gate.wait()
                for _ in range(5):
                    await asyncio.sleep(0)
            finally:
                running[key] -= 1

        queue: WorkQueue[str] = WorkQueue(handler, workers=8)
        queue.start()
        try:
            for key in keys:
                queue.add(key)
            # Every key is in a worker at once (so the workers do run side by side) ...
            await until(lambda: all(running[k] == 1 for k in keys), "all keys handled at once")
            for _ in range(20):  # ... and adds now wait for their key, with 5 workers idle
                for key in keys:
                    queue.add(key)
                await asyncio.sleep(0)
            assert all(running[k] == 1 for k in keys), running
            gate.set()
            await until(lambda: queue.idle, "the queue to drain")
            # Each key once, then once more for all the adds made while it was handled.
            assert calls == Counter(dict.fromkeys(keys, 2)), calls
            assert most == Counter(dict.fromkeys(keys, 1)), most
            assert overall == len(keys)
        finally:
            await queue.stop()

    asyncio.run(scenario())


# -- a reconcile whose database connections are dropped ----------------------------------


@pytest.fixture
def stack(node_cluster: LocalCluster, database: str) -> Iterator[Stack]:
    with running_stack(node_cluster, database) as running:
        yield running


WAITING_ON_A_LOCK = (
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)
TERMINATE_THE_OTHERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.mark.parametrize("lock", ["table", "row"])
def test_a_reconcile_failing_on_dropped_connections_is_retried(stack: Stack, lock: str) -> None:
    """The reconcile blocks on a lock this test holds (``table``: its first query;
    ``row``: the transition's UPDATE, inside the transaction that already wrote the
    queue's row), then every other connection to the database is terminated. The
    reconcile fails; the work queue alone retries it (nothing else adds the run's key),
    and the run goes on to succeed."""

    async def scenario() -> None:
        seen = await Observer.open(stack)
        pool = await store.open_pool(stack.dsn)
        operator = Operator(stack.settings(), pool, Kube(new_client(stack.kubeconfig)))
        operator.ready.set()  # migrated by the stack
        errors: list[BaseException] = []
        handle = operator.queue.handler

        async def recording(key: tuple[str, str, str]) -> None:
            try:
                await handle(key)
            except Exception as exc:
                if key == ("run", NS, "r"):
                    errors.append(exc)
                raise

        operator.queue.handler = recording
        blocker = await psycopg.AsyncConnection.connect(stack.dsn)  # not autocommit
        try:
            await seen.define("quick", "tests.tasks:quick")
            run = await seen.trigger("r", "quick", {"n": 1})
            if lock == "table":
                await blocker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            else:
                meta = run["metadata"]
                await runs.ensure(
                    pool,
                    run_id=run_id(run),
                    namespace=NS,
                    name="r",
                    task="quick",
                    payload={"n": 1},
                    tags=[],
                    created_at=parse_time(meta["creationTimestamp"]),
                )
                await blocker.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id(run),))
            operator.queue.start()
            operator.queue.add(("run", NS, "r"))  # the TaskRun's ADDED event; the only add

            async def blocked() -> bool:
                async with seen.pool.connection() as conn:
                    row = await (await conn.execute(WAITING_ON_A_LOCK)).fetchone()
                return bool(row and row["n"] >= 1)

            await until(blocked, "the reconcile to wait for the lock")
            await blocker.execute(TERMINATE_THE_OTHERS)
            await until(lambda: errors, "the reconcile to fail")
            assert all(isinstance(e, store.UNAVAILABLE) for e in errors), errors
            await blocker.rollback()  # the lock is gone: the retry can go through

            async def started() -> bool:
                record = await seen.record("r")
                return record is not None and record.phase in ("Starting", "Running")

            # Only the queue's own retry (then its refill) can get the run this far.
            await until(started, "the retried reconcile to start the run")

            async def finished() -> bool:
                if await seen.finished("r"):
                    return True
                await operator.resync()  # in place of the pod events kopf would deliver
                return False

            await until(finished, "r to succeed", every=0.2)
            await seen.assert_succeeded_once("r", output=2)
        finally:
            await operator.queue.stop()
            await blocker.close()
            await pool.close()
            await operator.kube.client.close()
            await seen.close()

    asyncio.run(scenario())
