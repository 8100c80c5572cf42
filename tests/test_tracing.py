"""OpenTelemetry traces, one per run, received as real OTLP/HTTP protobuf by a loopback
receiver: the trigger is the root (continuing the caller's trace), the operator adds the
admission and one span per attempt (with why it ended), the runner one span per step
that runs and one per checkpoint write, children of their attempt's span.

Also the pure parts (``traceparent`` values, derived span ids, what configures tracing,
what a pod's env gets, which spans a transition ends), and that with tracing off a pod
gets no ``OTEL_*`` and the runner never imports OpenTelemetry.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from durapod import traceparent
from durapod.operator import pods, traces
from durapod.operator.decide import Observed, decide
from durapod.operator.settings import Settings
from durapod.resources.models import Phase, TaskDefinitionSpec
from durapod.traceparent import TraceParent
from tests.helpers import REPO, DevProcess, definition, running_dev, taskrun, wait_for
from tests.otlp import Receiver, Span
from tests.test_decide import (
    ENDED_POD,
    NOW,
    RUN_ID,
    admitted,
    live,
    observe,
    pod,
    retrying,
    spec,
)

ROOT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}

# -- traceparent values and ids ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ROOT, TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)),
        (ROOT[:-2] + "00", TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, 0)),
        (f" {ROOT} ", TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, 1)),
        # A later version may append fields; version 00 may not.
        (
            "01" + ROOT[2:] + "-later",
            TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, 1),
        ),
        (ROOT + "-later", None),
        ("ff" + ROOT[2:], None),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", None),
        (ROOT.upper(), None),
        (ROOT[:-1], None),
        ("", None),
        (None, None),
    ],
)
def test_a_traceparent_is_parsed_as_w3c_trace_context_says(
    value: str | None, expected: TraceParent | None
) -> None:
    assert traceparent.parse(value) == expected


def test_a_traceparent_formats_back_to_its_header() -> None:
    parsed = traceparent.parse(ROOT)
    assert parsed is not None and str(parsed) == ROOT
    assert str(TraceParent(1, 2, 0)) == "00-" + "0" * 31 + "1-" + "0" * 15 + "2-00"


def test_attempt_span_ids_are_the_same_everywhere_and_distinct_per_pod() -> None:
    run = "9a3e0c52-6f7e-4a0e-9d61-0c1c3c1f3a11"
    ids = {traceparent.attempt_span_id(run, index) for index in range(1, 200)}
    assert len(ids) == 199 and 0 not in ids
    assert traceparent.attempt_span_id(run, 1) == traceparent.attempt_span_id(run, 1)
    assert traceparent.attempt_span_id(run, 1) != traceparent.attempt_span_id(run[::-1], 1)
    root = traceparent.parse(ROOT)
    assert root is not None
    first = traceparent.attempt(root, run, 1)
    assert (first.trace_id, first.flags) == (root.trace_id, root.flags)
    assert first.span_id == traceparent.attempt_span_id(run, 1) != root.span_id


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp_proto_http"}, True),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ],
)
def test_only_an_otlp_endpoint_in_the_otel_variables_turns_tracing_on(
    env: dict[str, str], on: bool
) -> None:
    assert traceparent.configured(env) is on


@pytest.mark.parametrize(
    ("env", "given", "parent", "expected"),
    [
        ({"PATH": "/bin", "OTEL_SERVICE_NAME": "durapod-operator"}, [], ROOT, {}),
        (
            {
                **ENDPOINT,
                "OTEL_SERVICE_NAME": "durapod-operator",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
                "OTEL_EXPORTER_OTLP_HEADERS": "authorization=secret",
                "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/operator/ca.pem",
                "PATH": "/bin",
            },
            [],
            ROOT,
            {
                **ENDPOINT,
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
                "OTEL_SERVICE_NAME": "report",
                "TRACEPARENT": ROOT,
            },
        ),
        (
            {**ENDPOINT, "OTEL_BSP_SCHEDULE_DELAY": "500"},
            ["OTEL_SERVICE_NAME", "OTEL_BSP_SCHEDULE_DELAY"],
            None,
            ENDPOINT,
        ),
    ],
    ids=["tracing off", "forwarded, task's service name", "the definition's own win"],
)
def test_a_task_pod_gets_the_operators_otel_variables_only_with_tracing_on(
    env: dict[str, str], given: list[str], parent: str | None, expected: dict[str, str]
) -> None:
    found = traceparent.pod_env(env, given, "report", parent)
    assert {e["name"]: e["value"] for e in found} == expected
    assert len(found) == len(expected)  # no name twice


def _pod_env(monkeypatch: pytest.MonkeyPatch, otel: dict[str, str]) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "TRACEPARENT":
            monkeypatch.delenv(name)
    for name, value in otel.items():
        monkeypatch.setenv(name, value)
    run = {"metadata": {"name": "r", "namespace": "default", "uid": str(RUN_ID)}}
    run["spec"] = {"task": "report"}
    spec = TaskDefinitionSpec.model_validate(
        {"image": "i", "entrypoint": "m:f", "env": [{"name": "OTEL_SERVICE_NAME", "value": "rp"}]}
    )
    settings = Settings("postgresql://", "http://api")
    manifest = pods.build(run, spec, 1, 1, "small-1x", None, settings, traceparent=ROOT)
    env = manifest["spec"]["containers"][0]["env"]
    assert len({e["name"] for e in env}) == len(env)
    return {e["name"]: e["value"] for e in env}


def test_without_otel_variables_a_pod_gets_no_tracing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _pod_env(monkeypatch, {})
    assert not [n for n in env if n.startswith("OTEL_") and n != "OTEL_SERVICE_NAME"]
    assert env["OTEL_SERVICE_NAME"] == "rp" and "TRACEPARENT" not in env  # the definition's
    with_tracing = _pod_env(monkeypatch, ENDPOINT)
    assert with_tracing["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert with_tracing["TRACEPARENT"] == ROOT and with_tracing["OTEL_SERVICE_NAME"] == "rp"


# -- the operator's spans of a transition ------------------------------------------------

TASK_ERROR = {"type": "ValueError", "message": "no such order", "reason": "TaskError"}


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (
            live(
                Phase.RUNNING,
                pod("Failed", exit_code=143, disruption="EvictionByEvictionAPI"),
                run={"traceparent": ROOT},
            ),
            [("attempt", "Evicted", "EvictionByEvictionAPI", ["running", "Evicted"], False)],
        ),
        (
            live(Phase.RUNNING, None, run={"traceparent": ROOT}, pod_deleted=True),
            [("attempt", "Evicted", "PodDeleted", ["running", "Evicted"], False)],
        ),
        (
            live(
                Phase.RUNNING,
                pod("Failed", exit_code=137, terminated_reason="OOMKilled"),
                run={"traceparent": ROOT},
            ),
            [("attempt", "OOMKilled", "OOMKilled", ["running", "Retrying"], True)],
        ),
        (
            live(
                Phase.RUNNING,
                pod("Failed", exit_code=1),
                run={"traceparent": ROOT},
                pod_rec={"error": TASK_ERROR},
            ),
            [("attempt", "TaskError", "TaskError", ["running", "Retrying"], True)],
        ),
        (
            live(
                Phase.RUNNING,
                pod("Succeeded", exit_code=0),
                run={"traceparent": ROOT},
                pod_rec={"output": 7},
            ),
            [("attempt", "Succeeded", "Succeeded", ["running", "Succeeded"], False)],
        ),
        (
            observe(
                admitted(
                    Phase.QUEUED,
                    attempt=0,
                    pods=0,
                    admit_as="start",
                    transitioned_at=NOW - timedelta(seconds=30),
                    traceparent=ROOT,
                )
            ),
            [("admission", None, None, [], False)],
        ),
        (live(Phase.STARTING, pod("Running"), run={"traceparent": ROOT}), []),
        (  # its pod's span went out when the pod was judged; the cancel adds none
            observe(
                retrying(traceparent=ROOT),
                spec=spec(cancel=True),
                pod_records=(ENDED_POD,),
                pod=pod("Failed", exit_code=1),
            ),
            [],
        ),
    ],
    ids=[
        "evicted",
        "deleted",
        "oom-killed",
        "task error",
        "succeeded",
        "admitted",
        "started",
        "cancelled while it waits to retry",
    ],
)
def test_a_committed_transition_ends_the_spans_it_judges(
    observed: Observed, expected: list[tuple[str, str | None, str | None, list[str], bool]]
) -> None:
    plan = decide(observed)
    found = traces.spans(observed, plan)
    assert [
        (
            s.name,
            s.attributes.get("durapod.outcome"),
            s.attributes.get("durapod.reason"),
            [e.name for e in s.events],
            s.error is not None,
        )
        for s in found
    ] == expected
    for span in found:
        assert span.end == NOW and span.start < span.end
        if span.name == "attempt":  # the id its pod was given before it started
            assert span.span_id == traceparent.attempt_span_id(RUN_ID, 1)
            assert span.attributes["k8s.pod.name"] == "report-1"
        else:
            assert span.span_id is None and span.attributes["durapod.queue"] == "default"


# -- the runner, in a process of its own ---------------------------------------------------

RUNNER = """
import json, os, sys
from durapod.runner import entrypoint, tracing
from durapod.testing import TaskHarness
from tests import traced_tasks

on = tracing.setup(dict(os.environ))
harness = TaskHarness(traced_tasks.paused, {"n": 1})
plays = [harness.run(crash_after="one").status, harness.run().status]
plays.append(TaskHarness(traced_tasks.failing_step, {}).run().status)
tracing.flush()
loaded = sorted(m for m, v in sys.modules.items() if m.partition(".")[0] == "opentelemetry" and v)
print(json.dumps({"on": on, "plays": plays, "loaded": loaded}))
"""


def _runner(env: dict[str, str], prelude: str = "") -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.pop("TRACEPARENT", None)
    done = subprocess.run(
        [sys.executable, "-c", prelude + RUNNER],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert found["plays"] == ["crashed", "succeeded", "failed"]
    return found


@pytest.mark.parametrize(
    "env",
    [{}, {"TRACEPARENT": ROOT}, ENDPOINT, {**ENDPOINT, "OTEL_SDK_DISABLED": "true"}],
    ids=["nothing", "traceparent only", "endpoint only", "sdk disabled"],
)
def test_with_tracing_off_the_runner_never_imports_opentelemetry(env: dict[str, str]) -> None:
    found = _runner(env)
    assert found["on"] is False and found["loaded"] == []


def test_a_task_image_without_opentelemetry_runs_untraced() -> None:
    found = _runner(
        {**ENDPOINT, "TRACEPARENT": ROOT},
        prelude="import sys; sys.modules['opentelemetry'] = None  # not installed\n",
    )
    assert found["on"] is False and found["loaded"] == []


def test_otel_settings_the_sdk_refuses_leave_the_task_untraced() -> None:
    # A TaskDefinition's own OTEL_* win over the operator's: they may be wrong.
    found = _runner({**ENDPOINT, "TRACEPARENT": ROOT, "OTEL_BSP_MAX_QUEUE_SIZE": "0"})
    assert found["on"] is False


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


def test_the_runner_makes_one_span_per_step_that_runs_under_its_attempt(
    receiver: Receiver,
) -> None:
    trace_id, attempt = secrets.token_hex(16), secrets.token_hex(8)
    found = _runner(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "paused",
            "TRACEPARENT": f"00-{trace_id}-{attempt}-01",
        }
    )
    assert found["on"] is True and "opentelemetry.sdk.trace" in found["loaded"]
    spans = receiver.trace(trace_id)  # flushed before the process printed
    steps = [s for s in spans if s.name == "step"]
    # "one" ran on the first play; the second replayed it from its checkpoint.
    assert sorted(s.attributes["durapod.step"] for s in steps) == ["boom", "one", "three", "two"]
    assert all(s.parent == attempt and s.service == "paused" for s in steps)
    boom = next(s for s in steps if s.attributes["durapod.step"] == "boom")
    assert boom.status == 2 and "no such order" in boom.status_message
    assert "exception" in boom.event_names
    writes = [s for s in spans if s.name == "checkpoint write"]
    by_id = {s.span_id: s for s in steps}
    assert sorted(by_id[w.parent].attributes["durapod.step"] for w in writes) == [
        "one",
        "three",
        "two",
    ]
    assert all(w.attributes["durapod.checkpoint.bytes"] >= 1 for w in writes)
    assert len(spans) == len(steps) + len(writes)


ROOTS = """
import json, os
from datetime import UTC, datetime, timedelta
from durapod import traceparent, tracing

assert tracing.setup("roots")
shown = {}
def run(root):
    return {"metadata": {"name": "r", "uid": "u", "annotations": root.annotations}}

with tracing.root("schedule", "ns", "t") as root:
    root.keep(run(root))  # the TaskRun made holds this root: exported
    shown["kept"] = root.traceparent
with tracing.root("schedule", "ns", "t") as root:
    root.keep(run(root), made=False)  # a retried tick found its run: dropped
    shown["found"] = root.traceparent
with tracing.root("http", "ns", "t") as root:
    root.keep({"metadata": {"name": "r", "uid": "u"}})  # someone else's TaskRun: dropped
    shown["other"] = root.traceparent
parent = traceparent.parse(os.environ["PARENT"])
try:
    with tracing.root("child", "ns", "t", parent=parent) as root:
        shown["failed"] = root.traceparent
        raise RuntimeError("the API server is away")
except RuntimeError:
    pass
for name, stored in (("settled", None), ("lost", "00-" + "1" * 32 + "-" + "1" * 16 + "-01")):
    root = tracing.begin_root("taskrun", "ns", "t", start=datetime.now(UTC) - timedelta(seconds=3))
    shown[name] = root.traceparent
    root.settle(stored or root.traceparent)  # exported only if the record holds it
done = tracing.Done("attempt", datetime.now(UTC), datetime.now(UTC), span_id=0xABC)
tracing.emit(parent, done)
tracing.flush()
print(json.dumps(shown))
"""


def test_a_root_span_is_exported_only_when_the_run_made_holds_it(receiver: Receiver) -> None:
    parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", ROOTS],
        cwd=REPO,
        env={**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "PARENT": parent},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = {k: traceparent.parse(v) for k, v in json.loads(done.stdout).items()}
    received = {(s.trace_id, s.span_id): s for s in receiver.spans()}

    def exported(name: str) -> Span | None:
        made = shown[name]
        assert made is not None
        return received.get((f"{made.trace_id:032x}", f"{made.span_id:016x}"))

    assert exported("found") is None and exported("other") is None and exported("lost") is None
    kept, settled, failed = exported("kept"), exported("settled"), exported("failed")
    assert kept is not None and kept.parent == "" and kept.attributes["durapod.run.id"] == "u"
    assert kept.service == "roots" and kept.attributes["durapod.trigger.source"] == "schedule"
    assert settled is not None and settled.attributes["durapod.trigger.source"] == "taskrun"
    assert failed is not None
    assert (failed.trace_id, failed.parent) == (parent[3:35], parent[36:52])
    assert failed.status == 2 and "the API server is away" in failed.status_message
    attempt = received.get((parent[3:35], f"{0xABC:016x}"))
    assert attempt is not None and attempt.name == "attempt" and attempt.parent == parent[36:52]


# -- end to end: durapod dev exporting to the receiver ------------------------------------


@pytest.fixture(scope="module")
def dev(receiver: Receiver) -> Iterator[DevProcess]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # spans arrive within the tests' waits
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    with running_dev("durapod-tracing-", env=env) as process:
        process.apply(
            definition("paused", "tests.traced_tasks:paused"),
            definition("parent", "tests.tasks:parent"),
            definition("double", "tests.tasks:double"),
        )
        yield process


def _one(spans: list[Span], name: str, **attributes: Any) -> Span:
    found = [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, found)
    return found[0]


def _above_request(spans: list[Span], span: Span) -> str:
    """The nearest ancestor of a span the API made outside the API's handling of the
    request it made it in (FastAPI's own telemetry, from 0.165 on, puts an HTTP server
    span and operation spans around the handler, under the caller's span)."""
    by_id = {s.span_id: s for s in spans}
    parent = span.parent
    while parent in by_id and by_id[parent].service == "durapod-api":
        assert by_id[parent].name != "trigger"
        parent = by_id[parent].parent
    return parent


def _attempts(spans: list[Span], run: str) -> list[Span]:
    found = [s for s in spans if s.name == "attempt" and s.attributes["durapod.run.name"] == run]
    return sorted(found, key=lambda s: int(s.attributes["durapod.pod.index"]))


def _has_checkpoint(dsn: str, run_id: str, step: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT 1 FROM checkpoints WHERE run_id = %s AND step = %s", (run_id, step)
        ).fetchone()
    return row is not None


def test_a_resumed_runs_trace_hangs_from_its_trigger(dev: DevProcess, receiver: Receiver) -> None:
    env = dev.env()
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    answer = httpx.post(
        f"{env['DURAPOD_API_URL']}/v1/namespaces/default/tasks/paused/runs",
        json={"payload": {"n": 1, "pause": 120}},
        headers={
            "Authorization": f"Bearer {env['DURAPOD_TOKEN']}",
            "traceparent": f"00-{trace_id}-{caller}-01",
        },
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    name, uid = answer.json()["name"], answer.json()["id"]
    wait_for(lambda: _has_checkpoint(env["DATABASE_URL"], uid, "one"), 60, "step one")
    evicted = httpx.post(
        f"{dev.kube_url}/api/v1/namespaces/default/pods/{name}-1/eviction",
        json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": f"{name}-1"}},
    )
    assert evicted.status_code == 201, evicted.text
    run = dev.wait_phase(name, "Succeeded", "Failed", timeout=90)
    assert run["status"]["phase"] == "Succeeded" and run["status"]["output"] == 3
    assert run["status"]["resumes"] == 1

    def arrived() -> list[Span] | None:
        spans = receiver.trace(trace_id)
        names = Counter(s.name for s in spans)
        whole = names["trigger"] and names["admission"] and names["attempt"] >= 2
        return spans if whole and names["step"] >= 3 else None

    spans = wait_for(arrived, 60, "the run's spans")
    # Every span of the run, from the API, the operator and both pods, is in the trace.
    of_run = [
        s
        for s in receiver.spans()
        if s.attributes.get("durapod.run.name") == name or s.resource.get("durapod.run.id") == uid
    ]
    assert {s.trace_id for s in of_run} == {trace_id}
    assert {s.service for s in of_run} == {"durapod-api", "durapod-operator", "paused"}
    assert all(s.resource.get("deployment.environment") == "test" for s in of_run)

    root = _one(spans, "trigger")
    assert _above_request(spans, root) == caller  # the caller's trace goes on
    assert root.service == "durapod-api"
    assert root.attributes["durapod.trigger.source"] == "http"
    assert root.attributes["durapod.run.id"] == uid
    admission = _one(spans, "admission")
    assert admission.parent == root.span_id and admission.service == "durapod-operator"

    first, second = _attempts(spans, name)
    assert first.parent == root.span_id and second.parent == root.span_id
    assert first.span_id == f"{traceparent.attempt_span_id(uid, 1):016x}"
    assert first.attributes["durapod.outcome"] == "Evicted"
    assert first.attributes["durapod.reason"] == "EvictionByEvictionAPI"
    assert "Evicted" in first.event_names and first.status != 2
    assert second.attributes["durapod.outcome"] == "Succeeded"
    assert [a.attributes["durapod.attempt"] for a in (first, second)] == [1, 1]
    assert [a.attributes["k8s.pod.name"] for a in (first, second)] == [f"{name}-1", f"{name}-2"]

    steps = [s for s in spans if s.name == "step"]
    assert Counter(s.attributes["durapod.step"] for s in steps) == {"one": 1, "two": 1, "three": 1}
    parents = {s.attributes["durapod.step"]: s.parent for s in steps}
    assert parents == {"one": first.span_id, "two": second.span_id, "three": second.span_id}
    assert {s.resource["durapod.pod.index"] for s in steps} == {"1", "2"}
    writes = [s for s in spans if s.name == "checkpoint write"]
    assert sorted(w.parent for w in writes) == sorted(s.span_id for s in steps)
    # The runner's calls carry its span: the API's handling of each write is its child.
    served = [s for s in spans if s.attributes.get("http.route", "").endswith("/checkpoints")]
    assert sorted(s.parent for s in served) == sorted(w.span_id for w in writes)


def test_probes_and_scrapes_make_no_traces(dev: DevProcess, receiver: Receiver) -> None:
    url = dev.env()["DURAPOD_API_URL"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path, timeout=30).status_code == 200
    # A request made after them, traced: once its spans are in, theirs would be too.
    trace_id = secrets.token_hex(16)
    httpx.get(
        f"{url}/v1/namespaces/default/runs",
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        timeout=30,
    )
    wait_for(lambda: receiver.trace(trace_id), 60, "the traced request's span")
    routes = {
        s.attributes.get("http.route") for s in receiver.spans() if s.service == "durapod-api"
    }
    assert "/v1/namespaces/{namespace}/runs" in routes
    assert not routes & {"/healthz", "/readyz", "/metrics"}


def test_a_run_applied_with_kubectl_and_its_child_share_one_trace(
    dev: DevProcess, receiver: Receiver
) -> None:
    dev.apply(taskrun("traced-parent", "parent", {"n": 4}))
    run = dev.wait_phase("traced-parent", "Succeeded", "Failed", timeout=90)
    assert run["status"]["output"] == {"child said": 8}
    uid = run["metadata"]["uid"]

    def arrived() -> list[Span] | None:
        roots = [
            s
            for s in receiver.spans()
            if s.name == "trigger" and s.attributes.get("durapod.run.name") == "traced-parent"
        ]
        if not roots:
            return None
        spans = receiver.trace(roots[0].trace_id)
        names = Counter(s.name for s in spans)
        return spans if names["trigger"] >= 2 and names["attempt"] >= 3 else None

    spans = wait_for(arrived, 60, "the spans of the parent and its child")
    root = _one(spans, "trigger", **{"durapod.trigger.source": "taskrun"})
    assert root.parent == "" and root.service == "durapod-operator"
    assert root.attributes["durapod.run.id"] == uid
    suspended, resumed = _attempts(spans, "traced-parent")
    assert suspended.attributes["durapod.outcome"] == "Suspended"
    assert resumed.attributes["durapod.outcome"] == "Succeeded"
    # The child's root hangs from the attempt that triggered it, in the parent's trace.
    child_root = _one(spans, "trigger", **{"durapod.trigger.source": "child"})
    assert _above_request(spans, child_root) == suspended.span_id
    assert child_root.service == "durapod-api"
    child = child_root.attributes["durapod.run.name"]
    (child_attempt,) = _attempts(spans, child)
    assert child_attempt.parent == child_root.span_id
    assert child_attempt.attributes["durapod.outcome"] == "Succeeded"
