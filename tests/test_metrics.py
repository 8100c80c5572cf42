"""Prometheus metrics of the operator and the API.

- what a committed transition counts (``observe.samples``), as a table, and that the
  counts reach the registry;
- the operator's metrics address (``DURAPOD_OPERATOR_METRICS_ADDR``) and its server;
- the API's request metrics: labelled by route template (never a run's name), method and
  status, through the real middleware on a small Starlette app;
- the runner measures each step and hands the duration to its journal;
- the gauges' SQL on a real PostgreSQL: queues, unfinished runs, top-10 keys + ``_other``;
- end to end with ``durapod dev``: ``promtool check metrics`` is clean on both live
  ``/metrics``, and after a succeeded and a failed run the counters say so; the queue gauges
  follow runs holding and waiting for a slot, and vanish with them.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from durapod import store
from durapod.api import metrics as api_metrics
from durapod.dev.postgres import free_port
from durapod.operator import metrics, observe
from durapod.operator.observe import Sample
from durapod.resources.models import Phase
from durapod.runner.context import Context
from durapod.store import migrate, stats
from durapod.store.pods import PodRecord
from durapod.store.runs import Change, Run
from durapod.testing import MemoryJournal
from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for
from tests.test_decide import CREATED, NOW, admitted, pod_record, record
from tests.test_decide import observe as observe_run

PROMTOOL = "/usr/bin/promtool"

# -- what a transition counts ---------------------------------------------------------------

RUN = (("namespace", "team-a"), ("task", "report"), ("queue", "default"))


def ended(outcome: str) -> tuple[tuple[str, str], ...]:
    return (*RUN, ("outcome", outcome))


def final(phase: str) -> tuple[tuple[str, str], ...]:
    return (*RUN, ("phase", phase))


MINUTE = NOW - timedelta(minutes=1)
RUNNING = admitted(Phase.RUNNING, version=7, started_at=MINUTE)
STARTING = admitted(Phase.STARTING, version=6, started_at=None)
#: (what, before, after, change, pod records read before, what is counted)
TRANSITIONS: list[tuple[str, Run, Run, Change, tuple[PodRecord, ...], list[Sample]]] = [
    (
        "a record's first transition counts it created",
        record(version=0),
        record(version=1, phase=Phase.QUEUED.value),
        Change(set={"phase": Phase.QUEUED.value}),
        (),
        [Sample("durapod_runs_created_total", RUN[:2])],
    ),
    (
        "a first attempt's pod is no retry",
        admitted(Phase.QUEUED, version=4, attempt=0, pods=0, started_at=None),
        replace(STARTING, version=5),
        Change(set={"phase": Phase.STARTING.value, "attempt": 1, "pods": 1}),
        (),
        [],
    ),
    (
        "the first Running: trigger to start",
        STARTING,
        replace(STARTING, version=7, phase=Phase.RUNNING.value, started_at=NOW),
        Change(set={"phase": Phase.RUNNING.value, "started_at": NOW}, pod_started=1),
        (pod_record(1, started_at=None),),
        [Sample("durapod_run_start_latency_seconds", RUN, (NOW - CREATED).total_seconds())],
    ),
    (
        "a pod that succeeded: its ending and time, and the run's",
        RUNNING,
        replace(RUNNING, version=8, phase=Phase.SUCCEEDED.value, finished_at=NOW),
        Change(set={"phase": Phase.SUCCEEDED.value}, pod_outcome=(1, "Succeeded")),
        (pod_record(1),),
        [
            Sample("durapod_pod_endings_total", ended("Succeeded")),
            Sample("durapod_attempt_duration_seconds", ended("Succeeded"), 60.0),
            Sample("durapod_runs_finished_total", final("Succeeded")),
            Sample("durapod_run_duration_seconds", final("Succeeded"), 60.0),
        ],
    ),
    (
        "an eviction: the pod's ending and a resume",
        RUNNING,
        replace(RUNNING, version=8, phase=Phase.RESUMING.value, pods=2, resumes=1),
        Change(set={"phase": Phase.RESUMING.value}, pod_outcome=(1, "Evicted")),
        (pod_record(1),),
        [
            Sample("durapod_pod_endings_total", ended("Evicted")),
            Sample("durapod_attempt_duration_seconds", ended("Evicted"), 60.0),
            Sample("durapod_resumes_total", RUN),
        ],
    ),
    (
        "an OOM kill: the ending now, the retry with the next attempt",
        RUNNING,
        replace(RUNNING, version=8, phase=Phase.RETRYING.value),
        Change(set={"phase": Phase.RETRYING.value}, pod_outcome=(1, "OOMKilled")),
        (pod_record(1),),
        [
            Sample("durapod_pod_endings_total", ended("OOMKilled")),
            Sample("durapod_attempt_duration_seconds", ended("OOMKilled"), 60.0),
        ],
    ),
    (
        "a retry's new attempt",
        admitted(Phase.QUEUED, version=9, attempt=1, pods=1),
        admitted(Phase.STARTING, version=10, attempt=2, pods=2),
        Change(set={"phase": Phase.STARTING.value, "attempt": 2, "pods": 2}),
        (pod_record(1, outcome="TaskError", finished_at=MINUTE),),
        [Sample("durapod_retries_total", RUN)],
    ),
    (
        "a new pod after a sleep is neither a retry nor a resume",
        admitted(Phase.QUEUED, version=9, attempt=1, pods=1),
        admitted(Phase.RESUMING, version=10, attempt=1, pods=2),
        Change(set={"phase": Phase.RESUMING.value, "pods": 2}),
        (pod_record(1, outcome="Suspended", finished_at=MINUTE),),
        [],
    ),
    (
        "a pod judged before keeps its first outcome: a cancel counts only the run",
        admitted(Phase.RETRYING, version=9, started_at=MINUTE),
        admitted(Phase.CANCELLED, version=10, started_at=MINUTE, finished_at=NOW),
        Change(set={"phase": Phase.CANCELLED.value}, pod_outcome=(1, "Cancelled")),
        (pod_record(1, outcome="TaskError", finished_at=MINUTE),),
        [
            Sample("durapod_runs_finished_total", final("Cancelled")),
            Sample("durapod_run_duration_seconds", final("Cancelled"), 60.0),
        ],
    ),
    (
        "a pod that never started: no attempt time; the run's from its creation",
        STARTING,
        replace(STARTING, version=7, phase=Phase.FAILED.value, finished_at=NOW),
        Change(set={"phase": Phase.FAILED.value}, pod_outcome=(1, "NotStarted")),
        (pod_record(1, started_at=None),),
        [
            Sample("durapod_pod_endings_total", ended("NotStarted")),
            Sample("durapod_runs_finished_total", final("Failed")),
            Sample(
                "durapod_run_duration_seconds", final("Failed"), (NOW - CREATED).total_seconds()
            ),
        ],
    ),
    (
        "a pod that ended before it was seen running: its start still counts",
        STARTING,
        replace(
            STARTING,
            version=7,
            phase=Phase.SUCCEEDED.value,
            started_at=NOW - timedelta(seconds=30),
            finished_at=NOW,
        ),
        Change(set={"phase": Phase.SUCCEEDED.value}, pod_outcome=(1, "Succeeded")),
        (pod_record(1, started_at=NOW - timedelta(seconds=30)),),
        [
            Sample("durapod_run_start_latency_seconds", RUN, 270.0),
            Sample("durapod_pod_endings_total", ended("Succeeded")),
            Sample("durapod_attempt_duration_seconds", ended("Succeeded"), 30.0),
            Sample("durapod_runs_finished_total", final("Succeeded")),
            Sample("durapod_run_duration_seconds", final("Succeeded"), 30.0),
        ],
    ),
    (
        "a pod the API server refused (not among the records read) ends Crashed",
        admitted(Phase.STARTING, version=7, pods=2, started_at=MINUTE),
        admitted(Phase.FAILED, version=8, pods=2, started_at=MINUTE, finished_at=NOW),
        Change(set={"phase": Phase.FAILED.value}, pod_outcome=(2, "Crashed")),
        (pod_record(1, outcome="Evicted", finished_at=MINUTE),),
        [
            Sample("durapod_pod_endings_total", ended("Crashed")),
            Sample("durapod_runs_finished_total", final("Failed")),
            Sample("durapod_run_duration_seconds", final("Failed"), 60.0),
        ],
    ),
    (
        "a finished run's later transitions count nothing",
        admitted(Phase.SUCCEEDED, version=8, finished_at=MINUTE),
        admitted(Phase.SUCCEEDED, version=9, finished_at=MINUTE, holds_slot=False),
        Change(release=True),
        (pod_record(1, outcome="Succeeded", finished_at=MINUTE),),
        [],
    ),
]


@pytest.mark.parametrize(
    ("recorded", "triggered", "expected"),
    [
        (CREATED, None, CREATED),  # no TaskRun time known
        # Triggered over HTTP: the record comes first, the TaskRun's second is cut down.
        (CREATED, CREATED.replace(microsecond=0), CREATED),
        (CREATED + timedelta(microseconds=900_000), CREATED, CREATED + timedelta(seconds=0.9)),
        # Applied with kubectl and seen a minute later: the TaskRun's second, at its latest.
        (CREATED + timedelta(minutes=1), CREATED, CREATED + timedelta(seconds=1)),
    ],
)
def test_a_runs_trigger_time(
    recorded: datetime, triggered: datetime | None, expected: datetime
) -> None:
    assert observe.trigger_time(recorded, triggered) == expected


@pytest.mark.parametrize(
    ("before", "after", "change", "pods", "counted"),
    [row[1:] for row in TRANSITIONS],
    ids=[row[0] for row in TRANSITIONS],
)
def test_a_transition_counts(
    before: Run, after: Run, change: Change, pods: tuple[PodRecord, ...], counted: list[Sample]
) -> None:
    assert observe.samples(before, after, change, pods, NOW) == counted


def test_every_sample_names_a_metric_the_operator_exposes() -> None:
    named = {s.metric for row in TRANSITIONS for s in row[-1]}
    assert named == set(observe.METRICS)


def test_applied_samples_reach_the_registry() -> None:
    task = f"t-{uuid.uuid4().hex[:8]}"  # series of its own in this process's registry
    labels = {"namespace": "ns", "task": task, "queue": "q", "phase": "Failed"}
    get = metrics.REGISTRY.get_sample_value
    assert get("durapod_runs_finished_total", labels) is None
    pairs = tuple(labels.items())
    observe.apply(
        [
            Sample("durapod_runs_finished_total", pairs),
            Sample("durapod_run_duration_seconds", pairs, 42.0),
            Sample("durapod_runs_finished_total", pairs),
        ]
    )
    assert get("durapod_runs_finished_total", labels) == 2
    assert get("durapod_run_duration_seconds_count", labels) == 1
    assert get("durapod_run_duration_seconds_sum", labels) == 42.0


def test_an_admitted_runs_counters_exist_at_zero_a_misspelt_tasks_never() -> None:
    get = metrics.REGISTRY.get_sample_value
    known, misspelt = (f"t-{uuid.uuid4().hex[:8]}" for _ in range(2))
    failed = Change(set={"phase": Phase.FAILED.value})
    for task, after in (
        (known, admitted(Phase.QUEUED, task=known, queue="q")),
        (misspelt, record(task=misspelt, queue="q", phase=Phase.FAILED.value)),
    ):
        observe.transition(observe_run(record(task=task, queue="q")), after, failed)
    labels = {"namespace": record().namespace, "queue": "q"}
    assert get("durapod_retries_total", {**labels, "task": known}) == 0
    assert get("durapod_pod_endings_total", {**labels, "task": known, "outcome": "Evicted"}) == 0
    assert get("durapod_retries_total", {**labels, "task": misspelt}) is None


# -- the operator's metrics server ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0.0.0.0:9090", ("0.0.0.0", 9090)),
        ("127.0.0.1:19090", ("127.0.0.1", 19090)),
        ("[::]:9090", ("::", 9090)),
        (":9100", ("0.0.0.0", 9100)),
        ("", None),
        ("off", None),
        ("OFF", None),
    ],
)
def test_metrics_address(text: str, address: tuple[str, int] | None) -> None:
    assert metrics.parse_address(text) == address


@pytest.mark.parametrize("text", ["9090", "host:", "host:port", "host:0", "host:70000"])
def test_a_bad_metrics_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not host:port"):
        metrics.parse_address(text)


def test_the_server_serves_the_registry_and_a_taken_port_only_costs_the_metrics() -> None:
    port = free_port()
    served = metrics.serve(f"127.0.0.1:{port}")
    assert served is not None
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "# TYPE durapod_resyncs_total counter" in body
        assert "process_cpu_seconds_total" in body
        assert metrics.serve(f"127.0.0.1:{port}") is None  # in use: logged, not raised
    finally:
        served[0].shutdown()
        served[0].server_close()
    assert metrics.serve("nonsense") is None
    assert metrics.serve("off") is None


# -- the API's request metrics --------------------------------------------------------------


def _routed_app(framework: str) -> Starlette:
    """An app with a route ``/v1/things/{name}`` and a route that raises: plain Starlette
    (which puts the matched route in the scope), or FastAPI (which does so only for its
    own routes) with one of each kind, as the API has."""

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["name"])

    async def boom(_: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    if framework == "starlette":
        app = Starlette(routes=[Route("/v1/things/{name}", ok), Route("/boom", boom)])
    else:
        app = FastAPI()
        router = APIRouter(prefix="/v1")

        @router.get("/things/{name}")
        async def thing(name: str) -> str:
            return name

        app.include_router(router)
        app.add_route("/boom", boom)
    app.add_middleware(api_metrics.RequestMetrics)
    return app


def _requests(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    found = api_metrics.REGISTRY.get_sample_value(
        "durapod_http_request_duration_seconds_count", labels
    )
    return found or 0.0


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
@pytest.mark.parametrize(
    ("method", "path", "route", "label", "status"),
    [
        ("GET", "/v1/things/run-secret-1", "/v1/things/{name}", "GET", "200"),
        ("GET", "/nowhere/run-secret-2", api_metrics.UNMATCHED, "GET", "404"),
        ("GET", "/boom", "/boom", "GET", "500"),
        ("BREW", "/v1/things/run-secret-3", "/v1/things/{name}", "other", "405"),
    ],
)
def test_requests_are_timed_by_route_template_method_and_status(
    framework: str, method: str, path: str, route: str, label: str, status: str
) -> None:
    client = TestClient(_routed_app(framework), raise_server_exceptions=False)
    before = _requests(route, label, status)
    assert client.request(method, path).status_code == int(status)
    assert _requests(route, label, status) == before + 1
    exposed = api_metrics.REGISTRY.collect()
    values = {v for m in exposed for s in m.samples for v in s.labels.values()}
    assert not any("run-secret" in v for v in values)


@pytest.mark.parametrize(
    ("duration", "observed"),
    [
        (0.25, True),
        (0, True),
        (3, True),
        (-1.0, False),
        ("1.5", False),
        (True, False),
        (None, False),
    ],
)
def test_only_a_step_duration_in_seconds_is_observed(duration: Any, observed: bool) -> None:
    task = f"t-{uuid.uuid4().hex[:8]}"
    api_metrics.step_measured("ns", task, duration)
    count = api_metrics.REGISTRY.get_sample_value(
        "durapod_step_duration_seconds_count", {"namespace": "ns", "task": task}
    )
    assert count == (1 if observed else None)


# -- the runner measures its steps ----------------------------------------------------------


def test_the_runner_hands_each_steps_duration_to_its_journal() -> None:
    journal = MemoryJournal()
    ctx = Context(run_id="r", name="n", namespace="ns", attempt=1, journal=journal)

    async def task() -> None:
        await ctx.step("quick", lambda: 1)
        await ctx.step("slow", asyncio.sleep, 0.05)
        ctx.checkpoint({"state": 1})
        await ctx.trigger("child-task", {})

    began = time.monotonic()
    asyncio.run(task())
    took = time.monotonic() - began
    # Only steps that ran have a duration (not states, nor a trigger's bookkeeping).
    assert set(journal.durations) == {"quick", "slow"}
    assert 0.05 <= journal.durations["slow"] <= took
    assert 0 <= journal.durations["quick"] <= took


# -- the gauges' SQL ------------------------------------------------------------------------


def test_the_gauges_read_queues_unfinished_runs_and_the_top_keys(database: str) -> None:
    migrate(database)
    rows: list[tuple[Any, ...]] = []

    def add(task: str, phase: str, queue: str, key: str | None, holds: bool, **more: Any) -> None:
        queued = None if holds or phase != "Queued" else NOW
        removed = more.get("removed")
        rows.append(
            (uuid.uuid4(), f"r{len(rows)}", task, phase, queue, key, holds, queued, removed)
        )

    for i in range(12):  # key-00 has 1 waiting run ... key-11 has 12
        for _ in range(i + 1):
            add("mail", "Queued", "mail", f"key-{i:02}", holds=False)
    add("mail", "Running", "mail", "key-00", holds=True)
    add("mail", "Running", "mail", None, holds=True)
    add("mail", "Succeeded", "mail", "key-05", holds=False)
    add("mail", "Cancelled", "mail", "key-05", holds=False, removed=NOW)  # its TaskRun is gone
    add("report", "Waiting", "default", None, holds=False)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO queues (namespace, name, concurrency_limit) "
            "VALUES ('ns', 'mail', 2), ('ns', 'default', NULL)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO runs (id, namespace, name, task, phase, queue, concurrency_key, "
                "holds_slot, queued_at, removed_at) VALUES (%s, 'ns', %s, %s, %s, %s, %s, %s, "
                "%s, %s)",
                rows,
            )

    async def read() -> stats.Snapshot:
        pool = await store.open_pool(database)
        try:
            return await stats.snapshot(pool, top=10)
        finally:
            await pool.close()

    snapshot = asyncio.run(read())
    assert sorted(snapshot.queues, key=lambda q: q.queue) == [
        stats.QueueStat("ns", "default", None, 0, 0),
        stats.QueueStat("ns", "mail", 2, 2, sum(range(1, 13))),
    ]
    assert snapshot.active == {
        ("ns", "mail", "Queued"): sum(range(1, 13)),
        ("ns", "mail", "Running"): 2,
        ("ns", "report", "Waiting"): 1,
    }
    keys = {k.key: (k.running, k.waiting) for k in snapshot.keys}
    # key-00 (1 waiting + 1 running) and key-01 (2 waiting) are not in the top 10.
    assert keys == {
        **{f"key-{i:02}": (0, i + 1) for i in range(2, 12)},
        stats.OTHER: (1, 1 + 2),
    }


def _scans_of_runs(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(node type, index) of every node of ``plan`` that reads the table ``runs``."""
    found = (
        [(plan["Node Type"], plan.get("Index Name"))] if plan.get("Relation Name") == "runs" else []
    )
    for child in plan.get("Plans", []):
        found += _scans_of_runs(child)
    return found


def test_the_gauges_read_only_the_live_runs_indexes_not_the_history(database: str) -> None:
    """Every replica reads the gauges every few seconds: finished runs, kept for their
    TTL, must not make that read scan the whole table."""
    migrate(database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO queues (namespace, name, concurrency_limit) VALUES ('ns', 'q', 3)"
        )
        conn.execute(
            "INSERT INTO runs (id, namespace, name, task, phase, queue, concurrency_key) "
            "SELECT gen_random_uuid(), 'ns', 'done-' || i, 't', 'Succeeded', 'q', 'k' || i % 7 "
            "FROM generate_series(1, 20000) i"
        )
        conn.execute(
            "INSERT INTO runs (id, namespace, name, task, phase, queue, concurrency_key, "
            "holds_slot, queued_at) SELECT gen_random_uuid(), 'ns', 'live-' || i, 't', "
            "'Queued', 'q', 'k' || i % 7, i <= 3, CASE WHEN i > 3 THEN now() END "
            "FROM generate_series(1, 20) i"
        )
        conn.execute("ANALYZE runs")
        partial = {"runs_holding_slot", "runs_waiting_for_slot", "runs_unfinished"}
        for query in (stats._QUEUES, stats._ACTIVE, stats._KEYS):
            row = conn.execute(
                "EXPLAIN (FORMAT JSON) " + query, {"top": 10, "other": stats.OTHER}
            ).fetchone()
            assert row is not None
            scans = _scans_of_runs(row[0][0]["Plan"])
            assert scans and all(index in partial for _, index in scans), (query, scans)


# -- end to end: `durapod dev` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    """One ``durapod dev``: a run of ``ok`` triggered over HTTP has succeeded, a run of
    ``fails`` applied with kubectl has failed (one attempt)."""
    with running_dev("durapod-metrics-") as process:
        process.apply(
            definition("ok", "tests.light_tasks:nap"),
            definition("fails", "tests.tasks:failing", retry={"maxAttempts": 1}),
            taskrun("fails-1", "fails", {"kind": "error"}),
        )
        process.wait_phase(process.trigger("ok", {"n": 7}), "Succeeded")
        process.wait_phase("fails-1", "Failed")
        yield process


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    body = httpx.get(url, timeout=30).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` with (at least) these labels; None if none."""
    found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= ls]
    return sum(found) if found else None


def test_promtool_finds_both_live_endpoints_clean(dev: DevProcess) -> None:
    env = dev.env()
    for url in (env["DURAPOD_API_METRICS_URL"], env["DURAPOD_OPERATOR_METRICS_URL"]):
        body = httpx.get(url, timeout=30)
        assert body.status_code == 200 and "process_cpu_seconds_total" in body.text
        checked = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=body.text, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout + checked.stderr == "", url


def test_the_operator_counts_what_its_runs_did(dev: DevProcess) -> None:
    samples = scrape(dev.env()["DURAPOD_OPERATOR_METRICS_URL"])
    ok = {"namespace": "default", "task": "ok", "queue": "default"}
    fails = {**ok, "task": "fails"}
    assert value(samples, "durapod_runs_created_total", task="ok") == 1
    assert value(samples, "durapod_runs_created_total", task="fails") == 1
    assert value(samples, "durapod_runs_finished_total", **ok, phase="Succeeded") == 1
    assert value(samples, "durapod_runs_finished_total", **fails, phase="Failed") == 1
    assert value(samples, "durapod_runs_finished_total", task="fails") == 1  # nothing else
    assert value(samples, "durapod_run_duration_seconds_count", **fails, phase="Failed") == 1
    assert value(samples, "durapod_pod_endings_total", **ok, outcome="Succeeded") == 1
    assert value(samples, "durapod_pod_endings_total", **fails, outcome="TaskError") == 1
    assert value(samples, "durapod_attempt_duration_seconds_count", **ok) == 1
    assert value(samples, "durapod_run_start_latency_seconds_count", **ok) == 1
    # One attempt only, yet the series exists at 0 from the run's admission: rate() and
    # increase() see a task's first retry, eviction or failure.
    assert value(samples, "durapod_retries_total", **fails) == 0
    assert value(samples, "durapod_pod_endings_total", **ok, outcome="Evicted") == 0
    assert value(samples, "durapod_runs_finished_total", **ok, phase="Failed") == 0
    assert (value(samples, "durapod_reconcile_duration_seconds_count", kind="run") or 0) > 0
    assert (value(samples, "durapod_resyncs_total") or 0) >= 1
    assert value(samples, "durapod_workqueue_depth") is not None


def test_the_api_counts_triggers_checkpoints_steps_and_requests(dev: DevProcess) -> None:
    samples = scrape(dev.env()["DURAPOD_API_METRICS_URL"])
    ok = {"namespace": "default", "task": "ok"}
    assert value(samples, "durapod_triggers_total", **ok, source="http") == 1
    assert value(samples, "durapod_triggers_total", task="fails") is None  # kubectl's
    # nap writes one step ("done"); the failing task none.
    assert value(samples, "durapod_checkpoint_bytes_count", **ok) == 1
    assert (value(samples, "durapod_checkpoint_bytes_sum", **ok) or 0) > 0
    assert value(samples, "durapod_checkpoint_write_seconds_count", **ok) == 1
    assert value(samples, "durapod_step_duration_seconds_count", **ok) == 1
    assert value(samples, "durapod_checkpoint_bytes_count", task="fails") is None
    requests = "durapod_http_request_duration_seconds_count"
    trigger = "/v1/namespaces/{namespace}/tasks/{task}/runs"
    assert value(samples, requests, route=trigger, method="POST", status="202") == 1
    checkpoint = "/internal/v1/runs/{run_id}/checkpoints"
    assert value(samples, requests, route=checkpoint, method="POST", status="204") == 1
    # Never a run's name or id in a label, on either process.
    names = [
        r["metadata"] for r in dev.get("/apis/durapod.io/v1/namespaces/default/taskruns")["items"]
    ]
    secrets = {m["name"] for m in names} | {m["uid"] for m in names}
    operator = scrape(dev.env()["DURAPOD_OPERATOR_METRICS_URL"])
    labels = {v for (_, ls) in [*samples, *operator] for _, v in ls}
    assert not any(secret in label for secret in secrets for label in labels)


def test_the_queue_gauges_follow_runs_in_line_and_vanish_with_them(dev: DevProcess) -> None:
    """Two runs in a queue of one slot, with two keys: one holds the slot, one waits; a
    delayed run is Pending. Once they are cancelled, their queue shows none and their keys
    and phase are no longer reported."""
    narrow = {"name": "narrow", "concurrencyLimit": 1}
    dev.apply(
        definition("held", "tests.light_tasks:nap", queue=narrow),
        definition("later", "tests.light_tasks:nap"),
        taskrun("held-1", "held", {"pause": 600}, concurrencyKey="tenant-a"),
        taskrun("held-2", "held", {"pause": 600}, concurrencyKey="tenant-b"),
        taskrun("later-1", "later", {}, delay="1h"),
    )
    url = dev.env()["DURAPOD_OPERATOR_METRICS_URL"]
    queue = {"namespace": "default", "queue": "narrow"}

    def in_line() -> Samples | None:
        samples = scrape(url)
        wanted = (
            value(samples, "durapod_queue_slots", **queue) == 1
            and value(samples, "durapod_queue_running", **queue) == 1
            and value(samples, "durapod_queue_waiting", **queue) == 1
            and value(samples, "durapod_runs_active", task="later", phase="Pending") == 1
        )
        return samples if wanted else None

    samples = wait_for(in_line, 60, "the gauges to show one run holding, one waiting")
    running = {
        dict(ls)["key"]
        for (n, ls), v in samples.items()
        if n == "durapod_concurrency_key_running" and v == 1
    }
    waiting = {
        dict(ls)["key"]
        for (n, ls), v in samples.items()
        if n == "durapod_concurrency_key_waiting" and v == 1
    }
    assert len(running) == len(waiting) == 1 and running | waiting == {"tenant-a", "tenant-b"}

    for name in ("held-1", "held-2", "later-1"):
        dev.kubectl("patch", "tr", name, "--type=merge", "-p", '{"spec":{"cancel":true}}')

    def emptied() -> Samples | None:
        samples = scrape(url)
        wanted = (
            value(samples, "durapod_queue_running", **queue) == 0
            and value(samples, "durapod_queue_waiting", **queue) == 0
            and value(samples, "durapod_concurrency_key_running", **queue) is None
            and value(samples, "durapod_runs_active", task="later") is None
            and value(samples, "durapod_runs_active", task="held") is None
        )
        return samples if wanted else None

    samples = wait_for(emptied, 60, "the gauges to show the cancelled runs gone")
    assert value(samples, "durapod_queue_slots", **queue) == 1  # the queue itself stays
    assert value(samples, "durapod_runs_finished_total", task="held", phase="Cancelled") == 2
