"""Table tests of the operator's pure decision ``decide(observed) -> Plan``.

No database, no cluster, no I/O: each row builds the run record (``Run``), its pod
records (``PodRecord``), the pod as the API server has it and the TaskRun spec, and
states the whole plan it must lead to (``Expect``: every field of ``Plan`` is compared,
and the parts of the ``Change`` a row names).

What is covered, section by section:

- cancel: every phase x ``spec.cancel`` true/false; an unfinished run is Cancelled (slot
  released, a live pod deleted), a finished run never changes;
- Pending: delays (``delay``/``notBefore``), unknown and invalid TaskDefinitions, payload
  size, idempotency keys, and the Queued transition (definition pinned, enqueued, refill);
- Queued: without a slot, and admitted as start / retry / resume / pod; maxDuration;
- live phases (Starting, Resuming, Running) x every way a pod goes on or ends;
- Retrying and Waiting (sleeps and child runs), finished runs (TTL, stray slots and pods);
- crash windows: a crash between any two writes of ``reconcile._apply`` heals;
- retry delays: with jitter only ranges are asserted, never exact values;
- a pod that reported (or ran) exists, though a crash kept ``in_cluster`` unset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from durapod.durations import parse_duration
from durapod.operator.decide import Child, Observed, Plan, decide
from durapod.resources.models import (
    MAX_PAYLOAD_BYTES,
    Phase,
    TaskDefinitionSpec,
    TaskRunSpec,
)
from durapod.store.pods import PodRecord
from durapod.store.runs import Enqueue, NewPod, Run
from durapod.timestamps import format_time

Obj = dict[str, Any]

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
CREATED = NOW - timedelta(minutes=5)
RUN = "report"
NAMESPACE = "team-a"
RUN_ID = UUID("00000000-0000-4000-8000-000000000001")
#: The TTL of a finished run when neither the spec nor the definition says.
TTL = timedelta(days=7)
FINISHED = [p for p in Phase if p.finished]
LIVE = [Phase.STARTING, Phase.RESUMING, Phase.RUNNING]
#: The queue entry of a run of the default definition and spec.
DEFAULT_ENQUEUE = Enqueue("default", None, None, None, 0)
CANCELLED = {"type": "Cancelled", "reason": "Cancelled", "message": "cancelled by spec.cancel"}


# -- factories ------------------------------------------------------------------------------


def definition(**fields: Any) -> TaskDefinitionSpec:
    """A valid TaskDefinition spec; ``fields`` as on the wire (camelCase)."""
    base: Obj = {"image": "registry.example/tasks:1", "entrypoint": "tasks.report:run"}
    return TaskDefinitionSpec.model_validate({**base, **fields})


def pinned(**fields: Any) -> Obj:
    """A TaskDefinition spec as a run record pins it at admission."""
    return definition(**fields).model_dump(by_alias=True, exclude_none=True, mode="json")


def spec(**fields: Any) -> TaskRunSpec:
    return TaskRunSpec.model_validate({"task": "report", **fields})


_PENDING = Run(
    id=RUN_ID,
    namespace=NAMESPACE,
    name=RUN,
    task="report",
    payload={},
    phase=Phase.PENDING.value,
    version=1,
    attempt=0,
    resumes=0,
    pods=0,
    machine=None,
    definition=None,
    output=None,
    error=None,
    tags=[],
    queue="default",
    holds_slot=False,
    queued_at=None,
    admit_as=None,
    resume_at=None,
    waiting_for=None,
    message="",
    reason=None,
    transitioned_at=CREATED,
    duplicate_of=None,
    created_at=CREATED,
    started_at=None,
    finished_at=None,
    expires_at=None,
    removed_at=None,
    shown_step=None,
    shown_at=None,
)


def record(**overrides: Any) -> Run:
    """A run record: a fresh Pending one unless ``overrides`` say otherwise."""
    return replace(_PENDING, **overrides)


def admitted(phase: Phase, **overrides: Any) -> Run:
    """A run past admission: definition pinned, first attempt on pod 1, slot held."""
    base: Obj = {
        "phase": phase.value,
        "attempt": 1,
        "pods": 1,
        "machine": "small-1x",
        "definition": pinned(),
        "holds_slot": True,
        "started_at": NOW - timedelta(minutes=1),
    }
    return record(**{**base, **overrides})


def pod_record(idx: int = 1, **overrides: Any) -> PodRecord:
    """The record of pod ``idx``: in the cluster and started a minute ago, no report."""
    base = PodRecord(
        run_id=RUN_ID,
        idx=idx,
        attempt=1,
        name=f"{RUN}-{idx}",
        machine="small-1x",
        created_at=NOW - timedelta(minutes=2),
        in_cluster=True,
        started_at=NOW - timedelta(minutes=1),
        finished_at=None,
        outcome=None,
        output=None,
        error=None,
        suspend=None,
    )
    return replace(base, **overrides)


def pod(
    phase: str = "Running",
    *,
    idx: int = 1,
    terminated_reason: str | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    deletion: bool = False,
    disruption: str | None = None,
) -> Obj:
    """Pod ``<run>-<idx>`` as the API server returns it."""
    status: Obj = {"phase": phase, "conditions": []}
    if reason is not None:
        status["reason"] = reason
    if disruption is not None:
        status["conditions"] = [
            {"type": "DisruptionTarget", "status": "True", "reason": disruption}
        ]
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": terminated_reason or "Error"}
        status["containerStatuses"] = [{"name": "task", "state": {"terminated": terminated}}]
    meta: Obj = {"name": f"{RUN}-{idx}", "namespace": NAMESPACE}
    if deletion:
        meta["deletionTimestamp"] = format_time(NOW - timedelta(seconds=5))
    return {"metadata": meta, "status": status}


def observe(rec: Run, **fields: Any) -> Observed:
    """What ``reconcile`` would gather for ``rec``, now."""
    base: Obj = {
        "now": NOW,
        "namespace": NAMESPACE,
        "name": RUN,
        "created": CREATED,
        "spec": spec(),
        "record": rec,
    }
    return Observed(**{**base, **fields})


def live(
    phase: Phase,
    current: Obj | None,
    *,
    run: Obj | None = None,
    pod_rec: Obj | None = None,
    **fields: Any,
) -> Observed:
    """A run in a live phase on pod 1, with ``current`` as its pod."""
    return observe(
        admitted(phase, **(run or {})),
        pod_records=(pod_record(**(pod_rec or {})),),
        pod=current,
        **fields,
    )


# -- expectations ---------------------------------------------------------------------------


class Between:
    """Equal to any datetime in [low, high]: for jittered times."""

    def __init__(self, low: datetime, high: datetime) -> None:
        self.low, self.high = low, high

    def __eq__(self, other: object) -> bool:
        return isinstance(other, datetime) and self.low <= other <= self.high

    def __repr__(self) -> str:
        return f"Between({format_time(self.low)}, {format_time(self.high)})"


@dataclass(frozen=True)
class Expect:
    """The plan a row must lead to. Every ``Plan`` field is compared; of the change,
    ``phase``, ``values`` (a subset of ``Change.set``) and every other ``Change`` field."""

    phase: Phase | None = None
    values: Obj = field(default_factory=dict)
    #: ``Change.set`` columns that must not be set.
    unset: tuple[str, ...] = ()
    error_type: str | None = None
    release: bool = False
    enqueue: Enqueue | None = None
    new_pod: NewPod | None = None
    pod_outcome: tuple[int, str] | None = None
    pod_started: int | None = None
    checkpoint: tuple[str, Any] | None = None
    create_pod: bool = False
    remaining: float | None = None
    mark_in_cluster: bool = False
    delete_pod: str | None = None
    delete_taskrun: bool = False
    refill: str | None = None
    notify_parent: bool = False
    wake_at: datetime | Between | None = None
    #: Reasons of the Events, in order; None: not checked.
    events: tuple[str, ...] | None = None

    @property
    def changes(self) -> bool:
        return bool(
            self.phase
            or self.values
            or self.error_type
            or self.release
            or self.enqueue
            or self.new_pod
            or self.pod_outcome
            or self.pod_started
            or self.checkpoint
        )


def check(plan: Plan, want: Expect) -> None:
    change = plan.change
    if want.changes:
        assert change is not None, "expected a transition"
        assert change.set.get("phase") == (want.phase.value if want.phase else None)
        for column, value in want.values.items():
            assert column in change.set, f"{column} not set"
            assert value == change.set[column], column
        for column in want.unset:
            assert column not in change.set, f"{column} set"
        if want.error_type is not None:
            assert change.set["error"]["type"] == want.error_type
        assert change.release == want.release
        assert change.enqueue == want.enqueue
        assert change.new_pod == want.new_pod
        assert change.pod_outcome == want.pod_outcome
        assert change.pod_started == want.pod_started
        assert change.checkpoint == want.checkpoint
        if change.set.get("resume_at") is not None:  # whatever sets a time wakes then
            assert plan.wake_at == change.set["resume_at"]
    else:
        assert change is None, f"unexpected transition {change}"
    assert plan.create_pod == want.create_pod
    assert plan.remaining_seconds == want.remaining
    assert plan.mark_in_cluster == want.mark_in_cluster
    assert plan.delete_pod == want.delete_pod
    assert plan.delete_taskrun == want.delete_taskrun
    assert plan.refill == want.refill
    assert plan.notify_parent == want.notify_parent
    assert want.wake_at == plan.wake_at
    if want.events is not None:
        assert tuple(e.reason for e in plan.events) == want.events


def ended(phase: Phase, error_type: str | None = None, **also: Any) -> Expect:
    """A run finished now by ``_finish``: slot released, TTL from now."""
    values: Obj = {
        "finished_at": NOW,
        "expires_at": NOW + TTL,
        "resume_at": None,
        "waiting_for": None,
        "admit_as": None,
    }
    if phase != Phase.SUCCEEDED:
        values["output"] = None
    values.update(also.pop("values", {}))
    return Expect(
        phase=phase,
        values=values,
        error_type=error_type,
        release=also.pop("release", True),
        events=(phase.value,),
        **also,
    )


def requeued(admit_as: str, **also: Any) -> Expect:
    """Back in line for a slot of the default queue."""
    values: Obj = {"admit_as": admit_as, "resume_at": None, "waiting_for": None}
    values.update(also.pop("values", {}))
    return Expect(
        phase=Phase.QUEUED,
        values=values,
        enqueue=also.pop("enqueue", DEFAULT_ENQUEUE),
        refill=also.pop("refill", "default"),
        events=("Queued",),
        **also,
    )


def retry_window(low: timedelta, high: timedelta) -> Between:
    return Between(NOW + low, NOW + high)


#: A first retry under the default policy (1s, factor 2, up to 5m, jitter): 1s to 2s.
FIRST_RETRY = retry_window(timedelta(seconds=1), timedelta(seconds=2))


# -- cancel x every phase -------------------------------------------------------------------


def typical(phase: Phase, **spec_fields: Any) -> Observed:
    """A run resting in ``phase`` as the operator usually finds it; live ones have a pod."""
    s = spec(**spec_fields)
    if phase == Phase.PENDING:
        return observe(record(), spec=s, definition=definition())
    if phase == Phase.QUEUED:
        queued = record(
            phase=phase.value,
            definition=pinned(),
            machine="small-1x",
            admit_as="start",
            queued_at=NOW - timedelta(seconds=30),
        )
        return observe(queued, spec=s)
    if phase in LIVE:
        return live(phase, pod("Running"), spec=s)
    ended_pod = pod_record(outcome="TaskError", finished_at=NOW - timedelta(seconds=10))
    if phase == Phase.RETRYING:
        rec = admitted(phase, holds_slot=False, resume_at=NOW + timedelta(seconds=30))
        return observe(rec, spec=s, pod_records=(ended_pod,), pod=pod("Failed", exit_code=1))
    if phase == Phase.WAITING:
        rec = admitted(phase, holds_slot=False, resume_at=NOW + timedelta(hours=1))
        return observe(rec, spec=s, pod_records=(ended_pod,), pod=pod("Succeeded", exit_code=0))
    rec = admitted(
        phase,
        holds_slot=False,
        finished_at=NOW - timedelta(hours=1),
        expires_at=NOW - timedelta(hours=1) + TTL,
    )
    return observe(rec, spec=s, pod_records=(ended_pod,), pod=pod("Succeeded", exit_code=0))


def _cancel_rows() -> list[Any]:
    rows = []
    for phase in Phase:
        for cancel in (True, False):
            if phase.finished:
                what = "stays as it is" if cancel else "rests until it expires"
            else:
                what = "is Cancelled" if cancel else "is not Cancelled"
            with_ = "with spec.cancel" if cancel else "without spec.cancel"
            rows.append(pytest.param(phase, cancel, id=f"a {phase} run {with_} {what}"))
    return rows


@pytest.mark.parametrize(("phase", "cancel"), _cancel_rows())
def test_cancel_in_every_phase(phase: Phase, cancel: bool) -> None:
    o = typical(phase, cancel=cancel)
    plan = decide(o)
    if phase.finished:
        assert plan == Plan(wake_at=o.record.expires_at)
        assert plan == decide(typical(phase, cancel=not cancel))
    elif cancel:
        r = o.record
        check(
            plan,
            ended(
                Phase.CANCELLED,
                "Cancelled",
                values={"error": CANCELLED},
                pod_outcome=(r.pods, "Cancelled") if r.pods else None,
                delete_pod=o.pod_name if phase in LIVE else None,
                # A live pod keeps the slot until it has ended (its end comes back).
                release=phase not in LIVE,
                refill=r.queue if r.holds_slot and phase not in LIVE else None,
            ),
        )
    else:
        assert plan.change is None or plan.change.set.get("phase") != Phase.CANCELLED.value


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            live(Phase.RUNNING, pod("Running", deletion=True), spec=spec(cancel=True)),
            ended(Phase.CANCELLED, "Cancelled", pod_outcome=(1, "Cancelled"), release=False),
            id="a cancelled run whose pod is already being deleted does not delete it again",
        ),
        pytest.param(
            live(
                Phase.RUNNING,
                pod("Running"),
                spec=spec(cancel=True, parent={"name": "batch"}),
            ),
            ended(
                Phase.CANCELLED,
                "Cancelled",
                pod_outcome=(1, "Cancelled"),
                delete_pod="report-1",
                release=False,
                notify_parent=True,
            ),
            id="a cancelled child run tells its parent",
        ),
        pytest.param(
            observe(record(), spec=spec(cancel=True, ttl="1h"), definition=definition()),
            ended(Phase.CANCELLED, "Cancelled", values={"expires_at": NOW + timedelta(hours=1)}),
            id="a cancelled run expires after spec.ttl",
        ),
        pytest.param(
            observe(record(), spec=spec(cancel=True, delay="1h")),
            ended(Phase.CANCELLED, "Cancelled"),
            id="a delayed run with an unknown task is cancelled at once",
        ),
    ],
)
def test_cancel_details(o: Observed, want: Expect) -> None:
    check(decide(o), want)


# -- Pending --------------------------------------------------------------------------------

UNKNOWN = f'TaskDefinition "report" not found in namespace "{NAMESPACE}"'
WAITING_FOR_DEFINITION = f"{UNKNOWN}; waiting for it"
GRACE = timedelta(seconds=10)
#: A payload of exactly ``MAX_PAYLOAD_BYTES`` bytes of compact JSON: {"b":"xx...x"}.
LARGEST_PAYLOAD = {"b": "x" * (MAX_PAYLOAD_BYTES - len('{"b":""}'))}
QUEUE_DEF = definition(
    queue={"name": "reports", "concurrencyLimit": 2, "concurrencyKeyLimit": 1},
    machine="medium-1x",
)


def queued_from_pending(d: TaskDefinitionSpec = QUEUE_DEF, **also: Any) -> Expect:
    values: Obj = {
        "definition": d.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "attempt": 0,
        "pods": 0,
        "machine": d.machine,
        "admit_as": "start",
        "resume_at": None,
        "message": f"waiting for a slot in queue {d.queue.name}",
    }
    values.update(also.pop("values", {}))
    return Expect(
        phase=Phase.QUEUED,
        values=values,
        enqueue=also.pop("enqueue", Enqueue(d.queue.name, 2, 1, None, 0)),
        refill=d.queue.name,
        events=("Queued",),
        **also,
    )


def test_largest_payload_is_exactly_the_limit() -> None:
    assert len(json.dumps(LARGEST_PAYLOAD, separators=(",", ":"))) == MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            observe(record(), spec=spec(delay="10m"), definition=QUEUE_DEF),
            Expect(
                values={"resume_at": CREATED + timedelta(minutes=10)},
                wake_at=CREATED + timedelta(minutes=10),
                events=("Delayed",),
            ),
            id="a run delayed by spec.delay records when it may start and sleeps until then",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(notBefore=format_time(NOW + timedelta(hours=2))),
                definition=QUEUE_DEF,
            ),
            Expect(
                values={"resume_at": NOW + timedelta(hours=2)},
                wake_at=NOW + timedelta(hours=2),
                events=("Delayed",),
            ),
            id="a run with notBefore in the future records it and sleeps until then",
        ),
        pytest.param(
            observe(
                record(resume_at=CREATED + timedelta(minutes=10)),
                spec=spec(delay="10m"),
                definition=QUEUE_DEF,
            ),
            Expect(wake_at=CREATED + timedelta(minutes=10), events=()),
            id="a delayed run already recorded only sleeps on",
        ),
        pytest.param(
            observe(record(), spec=spec(delay="10m")),
            Expect(
                values={"resume_at": CREATED + timedelta(minutes=10)},
                wake_at=CREATED + timedelta(minutes=10),
            ),
            id="a delayed run is not failed for an unknown task before its time",
        ),
        pytest.param(
            observe(record(), spec=spec(delay="1m"), definition=QUEUE_DEF),
            queued_from_pending(),
            id="a run whose delay has passed is queued",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(notBefore=format_time(NOW - timedelta(seconds=1))),
                definition=QUEUE_DEF,
            ),
            queued_from_pending(),
            id="a run whose notBefore has passed is queued",
        ),
        pytest.param(
            observe(record(), created=NOW - timedelta(seconds=3)),
            Expect(
                values={"message": WAITING_FOR_DEFINITION},
                wake_at=NOW - timedelta(seconds=3) + GRACE,
            ),
            id="an unknown TaskDefinition within the grace is waited for until its end",
        ),
        pytest.param(
            observe(record(message=WAITING_FOR_DEFINITION), created=NOW - timedelta(seconds=3)),
            Expect(wake_at=NOW - timedelta(seconds=3) + GRACE, events=()),
            id="an unknown TaskDefinition already noted only wakes at the grace's end",
        ),
        pytest.param(
            observe(record(), created=NOW - GRACE),
            ended(Phase.FAILED, "UnknownTask", values={"message": f"UnknownTask: {UNKNOWN}"}),
            id="an unknown TaskDefinition at the grace's end fails the run UnknownTask",
        ),
        pytest.param(
            observe(record(), created=NOW - timedelta(seconds=3), unknown_task_grace=GRACE / 10),
            ended(Phase.FAILED, "UnknownTask"),
            id="the grace for an unknown TaskDefinition is the observed setting",
        ),
        pytest.param(
            observe(record(), definition="spec.image: Field required"),
            ended(
                Phase.FAILED,
                "InvalidTaskDefinition",
                values={
                    "error": {
                        "type": "InvalidTaskDefinition",
                        "reason": "UnknownTask",
                        "message": "TaskDefinition 'report' is invalid: spec.image: Field required",
                    }
                },
            ),
            id="an invalid TaskDefinition fails the run",
        ),
        pytest.param(
            observe(
                record(payload={"b": LARGEST_PAYLOAD["b"] + "x"}),
                spec=spec(payload={"b": LARGEST_PAYLOAD["b"] + "x"}),
                definition=QUEUE_DEF,
            ),
            ended(Phase.FAILED, "PayloadTooLarge"),
            id="a payload one byte over the limit fails the run PayloadTooLarge",
        ),
        pytest.param(
            observe(
                record(payload=LARGEST_PAYLOAD),
                spec=spec(payload=LARGEST_PAYLOAD),
                definition=QUEUE_DEF,
            ),
            queued_from_pending(),
            id="a payload exactly at the limit is queued",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(idempotencyKey="order-7"),
                definition=QUEUE_DEF,
                key_holder="report-first",
            ),
            ended(
                Phase.CANCELLED,
                "Duplicate",
                values={"duplicate_of": "report-first"},
            ),
            id="an idempotency key held by another run cancels this one as its duplicate",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(idempotencyKey="order-7", parent={"name": "batch"}),
                definition=QUEUE_DEF,
                key_holder="report-first",
            ),
            ended(
                Phase.CANCELLED,
                "Duplicate",
                values={"duplicate_of": "report-first"},
                notify_parent=True,
            ),
            id="a duplicate child run tells its parent",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(idempotencyKey="order-7"),
                definition=QUEUE_DEF,
                key_holder=RUN,
            ),
            queued_from_pending(),
            id="an idempotency key held by the run itself queues it",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(idempotencyKey="order-7"),
                definition=QUEUE_DEF,
                key_holder=None,
            ),
            queued_from_pending(),
            id="an idempotency key without a holder queues the run",
        ),
        pytest.param(
            observe(
                record(),
                spec=spec(concurrencyKey="tenant-a", priority=5),
                definition=QUEUE_DEF,
            ),
            queued_from_pending(enqueue=Enqueue("reports", 2, 1, "tenant-a", 5)),
            id="a run is queued with its concurrency key and priority",
        ),
        pytest.param(
            observe(record(), definition=definition()),
            queued_from_pending(definition(), enqueue=DEFAULT_ENQUEUE),
            id="a run of a plain definition is queued in the default queue on small-1x",
        ),
        pytest.param(
            observe(
                record(resume_at=NOW - timedelta(minutes=1), attempt=4, pods=2),
                spec=spec(delay="1m"),
                definition=QUEUE_DEF,
            ),
            queued_from_pending(),
            id="an admitted run starts from attempt 0 and pod 0 with its delay cleared",
        ),
    ],
)
def test_pending(o: Observed, want: Expect) -> None:
    check(decide(o), want)


# -- Queued ---------------------------------------------------------------------------------


def queued(**overrides: Any) -> Run:
    base: Obj = {
        "phase": Phase.QUEUED.value,
        "definition": pinned(),
        "machine": "small-1x",
        "admit_as": "start",
        "queued_at": NOW - timedelta(seconds=30),
    }
    return record(**{**base, **overrides})


def slot(**overrides: Any) -> Run:
    """A Queued run just admitted: it holds a slot and has left the line."""
    return queued(**{"holds_slot": True, "queued_at": None, **overrides})


PREVIOUS_POD = pod_record(outcome="TaskError", finished_at=NOW - timedelta(minutes=1))


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            observe(queued()),
            Expect(refill="default"),
            id="a queued run without a slot only asks its queue for a refill",
        ),
        pytest.param(
            observe(queued(queue="reports", definition=pinned(queue={"name": "reports"}))),
            Expect(refill="reports"),
            id="a queued run refills the queue it waits in",
        ),
        pytest.param(
            observe(queued(queued_at=None)),
            Expect(enqueue=DEFAULT_ENQUEUE, unset=("phase",), refill="default"),
            id="a queued run out of line gets back in line",
        ),
        pytest.param(
            observe(slot()),
            Expect(
                phase=Phase.STARTING,
                values={"attempt": 1, "pods": 1, "resumes": 0, "admit_as": None},
                new_pod=NewPod(1, 1, "report-1", "small-1x"),
                create_pod=True,
            ),
            id="a run admitted to start gets attempt 1 on pod report-1",
        ),
        pytest.param(
            observe(slot(admit_as=None)),
            Expect(
                phase=Phase.STARTING,
                values={"attempt": 1, "pods": 1},
                new_pod=NewPod(1, 1, "report-1", "small-1x"),
                create_pod=True,
            ),
            id="a run admitted without admit_as starts",
        ),
        pytest.param(
            observe(
                slot(admit_as="retry", attempt=1, pods=1, machine="small-2x"),
                pod_records=(PREVIOUS_POD,),
            ),
            Expect(
                phase=Phase.STARTING,
                values={"attempt": 2, "pods": 2, "machine": "small-2x", "resume_at": None},
                new_pod=NewPod(2, 2, "report-2", "small-2x"),
                create_pod=True,
            ),
            id="a run admitted to retry gets the next attempt on the next pod and its machine",
        ),
        pytest.param(
            observe(
                slot(admit_as="resume", attempt=2, pods=3, resumes=1),
                pod_records=(PREVIOUS_POD,),
            ),
            Expect(
                phase=Phase.RESUMING,
                values={"attempt": 2, "pods": 4, "resumes": 1},
                new_pod=NewPod(4, 2, "report-4", "small-1x"),
                create_pod=True,
            ),
            id="a run admitted to resume keeps its attempt and resume count on the next pod",
        ),
        pytest.param(
            observe(
                slot(admit_as="pod", attempt=1, pods=1),
                pod_records=(pod_record(in_cluster=False, started_at=None),),
            ),
            Expect(
                phase=Phase.STARTING,
                values={"message": "creating pod report-1"},
                unset=("attempt", "pods"),
                create_pod=True,
            ),
            id="a run whose pod a ResourceQuota refused creates the same pod again",
        ),
        pytest.param(
            observe(
                slot(admit_as="pod", attempt=1, pods=1, resume_at=NOW + timedelta(seconds=5)),
                pod_records=(pod_record(in_cluster=False, started_at=None),),
            ),
            Expect(wake_at=NOW + timedelta(seconds=5)),
            id="a run whose pod a ResourceQuota just refused waits before trying again",
        ),
        pytest.param(
            observe(
                slot(admit_as="pod", attempt=1, pods=1, resume_at=NOW + timedelta(seconds=5)),
                pod_records=(pod_record(in_cluster=False, started_at=None),),
                unblocked=True,
            ),
            Expect(
                phase=Phase.STARTING,
                values={"admit_as": None, "resume_at": None},
                create_pod=True,
            ),
            id="a run whose pod a ResourceQuota refused tries at once when a pod has ended",
        ),
        pytest.param(
            observe(
                slot(admit_as="pod", attempt=1, pods=2, definition=pinned(maxDuration="10m")),
                pod_records=(
                    pod_record(
                        started_at=NOW - timedelta(minutes=5),
                        finished_at=NOW - timedelta(minutes=3),
                    ),
                    pod_record(2, in_cluster=False, started_at=None),
                ),
            ),
            Expect(phase=Phase.STARTING, create_pod=True, remaining=8 * 60),
            id="a re-created pod gets what is left of maxDuration",
        ),
        pytest.param(
            observe(
                slot(admit_as="retry", attempt=1, pods=1, definition=pinned(maxDuration="10m")),
                pod_records=(
                    pod_record(
                        started_at=NOW - timedelta(minutes=5),
                        finished_at=NOW - timedelta(minutes=2),
                    ),
                ),
            ),
            Expect(
                phase=Phase.STARTING,
                values={"attempt": 2, "pods": 2},
                new_pod=NewPod(2, 2, "report-2", "small-1x"),
                create_pod=True,
                remaining=7 * 60,
            ),
            id="a retry's pod gets what is left of maxDuration",
        ),
        pytest.param(
            observe(
                slot(admit_as="retry", attempt=1, pods=1, definition=pinned(maxDuration="2m")),
                pod_records=(
                    pod_record(
                        started_at=NOW - timedelta(minutes=5),
                        finished_at=NOW - timedelta(minutes=3),
                    ),
                ),
            ),
            ended(Phase.TIMED_OUT, "TimedOut", pod_outcome=(1, "TimedOut"), refill="default"),
            id="a run admitted after using up its maxDuration is TimedOut without a pod",
        ),
    ],
)
def test_queued(o: Observed, want: Expect) -> None:
    check(decide(o), want)


# -- live phases x pod outcomes -------------------------------------------------------------

#: What happens to a live run's pod 1, the same in Starting, Resuming and Running.
RESUME = Expect(
    phase=Phase.RESUMING,
    values={"attempt": 1, "resumes": 1, "pods": 2, "admit_as": None},
    new_pod=NewPod(2, 1, "report-2", "small-1x"),
    pod_outcome=(1, "Evicted"),
    create_pod=True,
    events=("Evicted",),
)
RETRY = Expect(
    phase=Phase.RETRYING,
    values={"machine": "small-1x", "resume_at": FIRST_RETRY},
    release=True,
    refill="default",
    wake_at=FIRST_RETRY,
    events=("Retrying",),
)
TASK_ERROR = {"type": "ValueError", "message": "bad row", "traceback": "Traceback ..."}
OOM: Obj = {"terminated_reason": "OOMKilled", "exit_code": 137}


def ending(outcome: str, phase: Phase, error_type: str | None = None, **also: Any) -> Expect:
    """The run ends with pod 1's outcome recorded and its slot handed on."""
    return ended(phase, error_type, pod_outcome=(1, outcome), refill="default", **also)


LIVE_ROWS = [
    pytest.param(
        {"current": None, "pod_rec": {"in_cluster": False, "started_at": None}},
        Expect(create_pod=True),
        id="its pod was never created: create it, no transition",
    ),
    pytest.param(
        {"current": pod("Pending"), "pod_rec": {"in_cluster": False, "started_at": None}},
        Expect(mark_in_cluster=True),
        id="its pod exists but is not recorded in the cluster: record it",
    ),
    pytest.param(
        {"current": pod("Pending")},
        Expect(),
        id="its pod is Pending: nothing to do",
    ),
    pytest.param(
        {"current": pod("Pending", deletion=True)},
        Expect(),
        id="its pod is terminating: wait for its end",
    ),
    pytest.param(
        {"current": pod("Succeeded", exit_code=0), "pod_rec": {"output": {"rows": 3}}},
        ending("Succeeded", Phase.SUCCEEDED, values={"output": {"rows": 3}, "error": None}),
        id="its pod Succeeded with the output reported: Succeeded with that output",
    ),
    pytest.param(
        {"current": None, "pod_rec": {"output": {"rows": 3}}},
        ending("Succeeded", Phase.SUCCEEDED, values={"output": {"rows": 3}}),
        id="its pod is gone after reporting an output: Succeeded",
    ),
    pytest.param(
        {
            "current": pod("Succeeded", exit_code=0),
            "pod_rec": {"suspend": {"until": format_time(NOW + timedelta(hours=1))}},
        },
        Expect(
            phase=Phase.WAITING,
            values={"resume_at": NOW + timedelta(hours=1)},
            unset=("waiting_for",),
            release=True,
            pod_outcome=(1, "Suspended"),
            refill="default",
            wake_at=NOW + timedelta(hours=1),
            events=("Waiting",),
        ),
        id="its pod exited to sleep: Waiting until then, slot released, pod kept for its log",
    ),
    pytest.param(
        {"current": pod("Succeeded", exit_code=0), "pod_rec": {"suspend": {"child": "kid"}}},
        Expect(
            phase=Phase.WAITING,
            values={"waiting_for": "kid"},
            unset=("resume_at",),
            release=True,
            pod_outcome=(1, "Suspended"),
            refill="default",
            events=("Waiting",),
        ),
        id="its pod exited to wait for a child run: Waiting for it, no timer, pod kept",
    ),
    pytest.param(
        {"current": None, "pod_deleted": False, "pod_rec": {"suspend": {"child": "kid"}}},
        Expect(
            phase=Phase.WAITING,
            values={"waiting_for": "kid"},
            release=True,
            pod_outcome=(1, "Suspended"),
            refill="default",
        ),
        id="its pod is gone after exiting to wait: Waiting, nothing to delete",
    ),
    pytest.param(
        {"current": pod("Failed", **OOM)},
        replace(RETRY, error_type="OOMKilled", pod_outcome=(1, "OOMKilled")),
        id="its pod was OOM-killed with attempts left: Retrying on the same machine",
    ),
    pytest.param(
        {
            "current": pod("Failed", **OOM),
            "run": {"definition": pinned(retry={"onOOM": {"upgradeMachine": True}})},
        },
        replace(
            RETRY,
            values={"machine": "small-2x", "resume_at": FIRST_RETRY},
            error_type="OOMKilled",
            pod_outcome=(1, "OOMKilled"),
        ),
        id="its pod was OOM-killed under onOOM.upgradeMachine: Retrying on the next machine",
    ),
    pytest.param(
        {
            "current": pod("Failed", **OOM),
            "run": {
                "machine": "large-2x",
                "definition": pinned(retry={"onOOM": {"upgradeMachine": True}}),
            },
        },
        replace(
            RETRY,
            values={"machine": "large-2x", "resume_at": FIRST_RETRY},
            error_type="OOMKilled",
            pod_outcome=(1, "OOMKilled"),
        ),
        id="its pod was OOM-killed on the largest machine: Retrying on the same one",
    ),
    pytest.param(
        {"current": pod("Failed", **OOM), "run": {"attempt": 3}},
        ending("OOMKilled", Phase.FAILED, "OOMKilled"),
        id="its pod was OOM-killed on the last attempt: Failed",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=1),
            "pod_rec": {"error": {**TASK_ERROR, "retryable": True}},
        },
        replace(
            RETRY,
            values={"error": TASK_ERROR, "machine": "small-1x", "resume_at": FIRST_RETRY},
            pod_outcome=(1, "TaskError"),
        ),
        id="its task raised a retryable error: Retrying with the error recorded",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=1),
            "pod_rec": {"error": {**TASK_ERROR, "retryable": True}},
            "run": {"attempt": 3},
        },
        ending("TaskError", Phase.FAILED, "ValueError", values={"error": TASK_ERROR}),
        id="its task raised on the last attempt: Failed with the error",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=1),
            "pod_rec": {"error": {**TASK_ERROR, "retryable": False}},
        },
        ending("TaskError", Phase.FAILED, "ValueError", values={"error": TASK_ERROR}),
        id="its task raised a non-retryable error: Failed at once",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=1),
            "pod_rec": {"error": TASK_ERROR},
            "run": {"definition": pinned(retry={"nonRetryableErrors": ["ValueError"]})},
        },
        ending("TaskError", Phase.FAILED, "ValueError"),
        id="its task raised an error listed in nonRetryableErrors: Failed at once",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=1),
            "pod_rec": {"error": {**TASK_ERROR, "retryAfter": 42}},
        },
        replace(
            RETRY,
            values={"resume_at": NOW + timedelta(seconds=42)},
            pod_outcome=(1, "TaskError"),
            wake_at=NOW + timedelta(seconds=42),
        ),
        id="its task asked to retry after 42s: Retrying exactly then",
    ),
    pytest.param(
        {"current": pod("Failed", exit_code=137)},
        replace(RETRY, error_type="Crashed", pod_outcome=(1, "Crashed")),
        id="its pod crashed without reporting: Retrying",
    ),
    pytest.param(
        {"current": pod("Failed", exit_code=143, disruption="PreemptionByScheduler")},
        RESUME,
        id="its pod was disrupted (DisruptionTarget): Resuming on a new pod, slot kept",
    ),
    pytest.param(
        {"current": pod("Failed", exit_code=143, reason="Evicted")},
        RESUME,
        id="its pod was Evicted by the kubelet: Resuming",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=143, deletion=True),
            "pod_rec": {"error": {**TASK_ERROR, "retryable": True}},
        },
        RESUME,
        id="its pod failed while being deleted: Resuming, not retrying",
    ),
    pytest.param(
        {"current": None},
        RESUME,
        id="its pod vanished after it was in the cluster: Resuming",
    ),
    pytest.param(
        {"current": pod("Running"), "pod_deleted": True},
        RESUME,
        id="its pod was seen deleted while running: Resuming",
    ),
    pytest.param(
        {"current": None, "pod_deleted": True, "pod_rec": {"in_cluster": False}},
        RESUME,
        id="its pod was deleted before it was recorded in the cluster: Resuming",
    ),
    pytest.param(
        {"current": pod("Failed", exit_code=143, reason="Evicted"), "run": {"resumes": 10}},
        ending("Evicted", Phase.FAILED, "TooManyResumes"),
        id="its pod was evicted after maxResumes resumes: Failed TooManyResumes",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=143, reason="Evicted"),
            "run": {"definition": pinned(maxResumes=0)},
        },
        ending("Evicted", Phase.FAILED, "TooManyResumes"),
        id="its pod was evicted under maxResumes 0: Failed TooManyResumes",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=143, reason="Evicted"),
            "run": {"resumes": 9},
        },
        replace(RESUME, values={"resumes": 10, "pods": 2}),
        id="its pod was evicted with one resume left: Resuming for the last time",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=143, reason="DeadlineExceeded"),
            "run": {"definition": pinned(maxDuration="10m")},
        },
        ending("TimedOut", Phase.TIMED_OUT, "TimedOut"),
        id="its pod ran past its deadline (DeadlineExceeded): TimedOut",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=143, reason="Evicted"),
            "run": {"definition": pinned(maxDuration="1m")},
            "pod_rec": {"started_at": NOW - timedelta(minutes=2)},
        },
        ending("Evicted", Phase.TIMED_OUT, "TimedOut"),
        id="its pod was evicted after maxDuration was used up: TimedOut, no new pod",
    ),
    pytest.param(
        {
            "current": pod("Failed", exit_code=143, reason="Evicted"),
            "run": {"definition": pinned(maxDuration="10m")},
            "pod_rec": {"started_at": NOW - timedelta(minutes=4)},
        },
        replace(RESUME, remaining=6 * 60),
        id="its pod was evicted with maxDuration left: the new pod gets the rest",
    ),
    pytest.param(
        {
            "current": pod("Succeeded", exit_code=0),
            "pod_rec": {"output": 1},
            "spec": spec(parent={"name": "batch"}),
        },
        ending("Succeeded", Phase.SUCCEEDED, values={"output": 1}, notify_parent=True),
        id="its pod Succeeded in a child run: the parent is told",
    ),
]


@pytest.mark.parametrize(("situation", "want"), LIVE_ROWS)
@pytest.mark.parametrize("phase", LIVE, ids=lambda p: f"a {p} run")
def test_live_run(phase: Phase, situation: Obj, want: Expect) -> None:
    check(decide(live(phase, **situation)), want)


def test_live_run_without_its_pod_record_adds_it() -> None:
    o = observe(admitted(Phase.STARTING), pod_records=(), pod=None)
    check(decide(o), Expect(new_pod=NewPod(1, 1, "report-1", "small-1x"), unset=("phase",)))


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            live(Phase.STARTING, pod("Running"), run={"started_at": None}),
            Expect(
                phase=Phase.RUNNING,
                values={"started_at": NOW, "message": "attempt 1 is running in pod report-1"},
                pod_started=1,
                events=("Running",),
            ),
            id="a Starting run whose pod runs is Running from now",
        ),
        pytest.param(
            observe(
                admitted(Phase.RESUMING, pods=2, resumes=1),
                pod_records=(PREVIOUS_POD, pod_record(2)),
                pod=pod("Running", idx=2),
            ),
            Expect(
                phase=Phase.RUNNING,
                values={"started_at": NOW - timedelta(minutes=1)},
                pod_started=2,
                events=("Running",),
            ),
            id="a Resuming run whose new pod runs is Running again, its start kept",
        ),
        pytest.param(
            live(Phase.STARTING, pod("Running"), pod_rec={"in_cluster": False}),
            Expect(phase=Phase.RUNNING, pod_started=1, mark_in_cluster=True),
            id="a Starting run whose unrecorded pod runs is Running and records the pod",
        ),
        pytest.param(
            live(Phase.RUNNING, pod("Running")),
            Expect(events=()),
            id="a Running run whose pod runs rests",
        ),
    ],
)
def test_pod_running(o: Observed, want: Expect) -> None:
    check(decide(o), want)


# -- a pod that cannot start ------------------------------------------------------------------

UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient memory."


def stuck(condition: str | None = None, waiting: str | None = None) -> Obj:
    """A Pending pod 1 that the scheduler cannot place, or whose container waits."""
    current = pod("Pending")
    if condition is not None:
        current["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": condition,
                "message": UNSCHEDULABLE,
            }
        ]
    if waiting is not None:
        state = {"waiting": {"reason": waiting, "message": 'Back-off pulling image "nope:1"'}}
        current["status"]["containerStatuses"] = [{"name": "task", "state": state}]
    return current


#: Pod 1's record was made two minutes ago; the default startDeadline is 10m.
START_DEADLINE = NOW + timedelta(minutes=8)


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            live(Phase.STARTING, stuck("Unschedulable")),
            Expect(
                values={"reason": "Unschedulable"},
                events=("Unschedulable",),
                wake_at=START_DEADLINE,
            ),
            id="a pod no node can hold: the run says so and wakes at its start deadline",
        ),
        pytest.param(
            live(Phase.STARTING, stuck("Unschedulable"), run={"reason": "Unschedulable"}),
            Expect(wake_at=START_DEADLINE, events=()),
            id="said once: no second transition or Event",
        ),
        pytest.param(
            live(Phase.RESUMING, stuck(waiting="ImagePullBackOff"), run={"reason": "ErrImagePull"}),
            Expect(
                values={"reason": "ImagePullBackOff"},
                events=("ImagePullBackOff",),
                wake_at=START_DEADLINE,
            ),
            id="an image that cannot be pulled: ErrImagePull, then ImagePullBackOff",
        ),
        pytest.param(
            live(
                Phase.STARTING,
                stuck("Unschedulable"),
                pod_rec={"created_at": NOW - timedelta(minutes=10)},
            ),
            ended(
                Phase.FAILED,
                "StartDeadlineExceeded",
                values={"reason": "Unschedulable"},
                pod_outcome=(1, "NotStarted"),
                release=False,
                delete_pod="report-1",
            ),
            id="still unschedulable at the deadline: Failed, its pod deleted, the slot "
            "kept until the pod is gone",
        ),
        pytest.param(
            live(
                Phase.STARTING,
                stuck(waiting="ErrImagePull"),
                run={"definition": pinned(startDeadline="1m")},
            ),
            ended(
                Phase.FAILED,
                "StartDeadlineExceeded",
                values={"reason": "ErrImagePull"},
                pod_outcome=(1, "NotStarted"),
                release=False,
                delete_pod="report-1",
            ),
            id="the TaskDefinition's startDeadline counts, not the default",
        ),
        pytest.param(
            live(Phase.STARTING, stuck(waiting="ContainerCreating")),
            Expect(events=()),
            id="a pod on its way (ContainerCreating) rests",
        ),
        pytest.param(
            live(
                Phase.STARTING, pod("Running"), run={"reason": "Unschedulable", "started_at": None}
            ),
            Expect(
                phase=Phase.RUNNING,
                values={"reason": None, "started_at": NOW},
                pod_started=1,
                events=("Running",),
            ),
            id="a pod that gets a node after all runs and the reason goes",
        ),
    ],
)
def test_pod_cannot_start(o: Observed, want: Expect) -> None:
    check(decide(o), want)


def test_cannot_start_says_why_and_when() -> None:
    plan = decide(live(Phase.STARTING, stuck("Unschedulable")))
    assert plan.change is not None
    message = plan.change.set["message"]
    assert UNSCHEDULABLE in message
    assert format_time(START_DEADLINE) in message
    failed = decide(
        live(
            Phase.STARTING, stuck("Unschedulable"), pod_rec={"created_at": NOW - timedelta(hours=1)}
        )
    )
    assert failed.change is not None
    error = failed.change.set["error"]
    assert error["reason"] == "Unschedulable"
    assert "did not start within its startDeadline of 10m" in error["message"]
    assert UNSCHEDULABLE in error["message"]


# -- Retrying -------------------------------------------------------------------------------


def retrying(**overrides: Any) -> Run:
    base: Obj = {"holds_slot": False, "resume_at": NOW + timedelta(seconds=30)}
    return admitted(Phase.RETRYING, **{**base, **overrides})


ENDED_POD = pod_record(outcome="TaskError", finished_at=NOW - timedelta(seconds=10))


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            observe(retrying(), pod_records=(ENDED_POD,), pod=pod("Failed", exit_code=1)),
            Expect(wake_at=NOW + timedelta(seconds=30), events=()),
            id="a Retrying run before its resume_at only sleeps",
        ),
        pytest.param(
            observe(retrying(resume_at=NOW), pod_records=(ENDED_POD,), pod=pod("Failed")),
            requeued("retry", values={"message": "retry due; waiting for a slot in queue default"}),
            id="a Retrying run at its resume_at is Queued to retry",
        ),
        pytest.param(
            observe(retrying(resume_at=None), pod_records=(ENDED_POD,)),
            requeued("retry"),
            id="a Retrying run without resume_at is Queued at once",
        ),
        pytest.param(
            observe(
                retrying(
                    resume_at=NOW - timedelta(seconds=1),
                    definition=pinned(queue={"name": "reports", "concurrencyLimit": 3}),
                ),
                spec=spec(concurrencyKey="tenant-a", priority=7),
                pod_records=(ENDED_POD,),
            ),
            requeued(
                "retry",
                enqueue=Enqueue("reports", 3, None, "tenant-a", 7),
                refill="reports",
            ),
            id="a due retry is queued with its queue's limits, key and priority",
        ),
        pytest.param(
            observe(retrying(), pod_records=(ENDED_POD,), pod=pod("Running")),
            Expect(delete_pod="report-1", wake_at=NOW + timedelta(seconds=30)),
            id="a Retrying run whose old pod still runs deletes it while it sleeps",
        ),
        pytest.param(
            observe(retrying(resume_at=NOW), pod_records=(ENDED_POD,), pod=pod("Running")),
            requeued("retry", delete_pod="report-1"),
            id="a due retry whose old pod still runs deletes it and is Queued",
        ),
    ],
)
def test_retrying(o: Observed, want: Expect) -> None:
    check(decide(o), want)


# -- Waiting --------------------------------------------------------------------------------

SUSPENDED_POD = pod_record(outcome="Suspended", finished_at=NOW - timedelta(minutes=1))


def waiting(*, child: Child | None = None, current: Obj | None = None, **run: Any) -> Observed:
    base: Obj = {"holds_slot": False}
    if child is not None:
        base["waiting_for"] = child.name
    return observe(
        admitted(Phase.WAITING, **{**base, **run}),
        pod_records=(SUSPENDED_POD,),
        pod=current,
        child=child,
    )


def child_ended(step_output: Obj, **also: Any) -> Expect:
    return requeued(
        "resume",
        values={"message": "child run kid ended; waiting for a slot in queue default"},
        checkpoint=("$wait:kid", step_output),
        **also,
    )


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            waiting(resume_at=NOW + timedelta(hours=1)),
            Expect(wake_at=NOW + timedelta(hours=1), events=()),
            id="a run sleeping until later only sleeps",
        ),
        pytest.param(
            waiting(resume_at=NOW),
            requeued(
                "resume", values={"message": "sleep over; waiting for a slot in queue default"}
            ),
            id="a run whose sleep is over is Queued to resume",
        ),
        pytest.param(
            waiting(resume_at=NOW + timedelta(hours=1), current=pod("Running")),
            Expect(delete_pod="report-1", wake_at=NOW + timedelta(hours=1)),
            id="a sleeping run whose pod still runs deletes it",
        ),
        pytest.param(
            waiting(child=Child("kid", None)),
            Expect(events=()),
            id="a run waiting for an unfinished child rests",
        ),
        pytest.param(
            waiting(child=None, waiting_for="kid"),
            Expect(events=()),
            id="a run waiting for a child not yet seen rests",
        ),
        pytest.param(
            waiting(child=Child("kid", None), current=pod("Running")),
            Expect(delete_pod="report-1"),
            id="a run waiting for a child whose pod still runs deletes it",
        ),
        pytest.param(
            waiting(child=Child("kid", None), current=pod("Running", deletion=True)),
            Expect(),
            id="a run waiting for a child whose pod is terminating leaves it be",
        ),
        pytest.param(
            waiting(child=Child("kid", Phase.SUCCEEDED, output={"n": 1})),
            child_ended({"output": {"n": 1}}),
            id="a run whose child Succeeded is Queued to resume with the child's output",
        ),
        pytest.param(
            waiting(child=Child("kid", Phase.SUCCEEDED, output=None)),
            child_ended({"output": None}),
            id="a run whose child returned None gets that None",
        ),
        pytest.param(
            waiting(
                child=Child("kid", Phase.FAILED, error={"type": "KeyError", "message": "'id'"})
            ),
            child_ended({"error": {"type": "KeyError", "message": "'id'"}}),
            id="a run whose child Failed gets the child's error",
        ),
        pytest.param(
            waiting(child=Child("kid", Phase.TIMED_OUT)),
            child_ended({"error": {"type": "TimedOut", "message": "child run ended TimedOut"}}),
            id="a run whose child ended without an error gets the child's phase as the error",
        ),
        pytest.param(
            waiting(child=Child("kid", None, lost=True)),
            child_ended(
                {"error": {"type": "ChildRunLost", "message": "child run kid was deleted"}}
            ),
            id="a run whose child was deleted gets ChildRunLost",
        ),
        pytest.param(
            waiting(child=Child("kid", Phase.SUCCEEDED, output=2), current=pod("Running")),
            child_ended({"output": 2}, delete_pod="report-1"),
            id="a run whose child ended while its own pod still runs deletes it",
        ),
        pytest.param(
            waiting(),
            requeued("resume"),
            id="a Waiting run with neither a time nor a child is Queued to resume",
        ),
    ],
)
def test_waiting(o: Observed, want: Expect) -> None:
    check(decide(o), want)


# -- finished runs --------------------------------------------------------------------------

FINISHED_AT = NOW - timedelta(hours=1)


def finished(phase: Phase, current: Obj | None = None, **overrides: Any) -> Observed:
    base: Obj = {
        "holds_slot": False,
        "finished_at": FINISHED_AT,
        "expires_at": FINISHED_AT + TTL,
    }
    rec = admitted(phase, **{**base, **overrides.pop("run", {})})
    return observe(rec, pod_records=(ENDED_POD,), pod=current, **overrides)


FINISHED_ROWS = [
    pytest.param({}, Expect(wake_at=FINISHED_AT + TTL, events=()), id="before it expires: sleeps"),
    pytest.param(
        {"run": {"expires_at": None}, "spec": spec(ttl="2h")},
        Expect(wake_at=FINISHED_AT + timedelta(hours=2)),
        id="without expires_at: expires spec.ttl after it finished",
    ),
    pytest.param(
        {"run": {"expires_at": None, "definition": pinned(ttl="3h")}},
        Expect(wake_at=FINISHED_AT + timedelta(hours=3)),
        id="without expires_at nor spec.ttl: expires after the pinned ttl",
    ),
    pytest.param(
        {"run": {"expires_at": NOW}},
        Expect(delete_taskrun=True),
        id="once expired: its TaskRun is deleted",
    ),
    pytest.param(
        {"run": {"expires_at": None, "finished_at": NOW - TTL}},
        Expect(delete_taskrun=True),
        id="without expires_at, finished a TTL ago: its TaskRun is deleted",
    ),
    pytest.param(
        {"run": {"expires_at": NOW}, "deleting": True},
        Expect(),
        id="once expired but already being deleted (a finalizer holds it): left alone",
    ),
    pytest.param(
        {"run": {"holds_slot": True}},
        Expect(release=True, refill="default"),
        id="still holding a slot: releases it to the next in line",
    ),
    pytest.param(
        {"run": {"queued_at": NOW - timedelta(minutes=2)}},
        Expect(release=True, refill="default"),
        id="still in a queue's line: leaves it",
    ),
    pytest.param(
        {"current": pod("Running")},
        Expect(delete_pod="report-1", wake_at=FINISHED_AT + TTL),
        id="with its pod still running: deletes it",
    ),
    pytest.param(
        {"current": pod("Running"), "run": {"expires_at": NOW - timedelta(seconds=1)}},
        Expect(delete_pod="report-1", delete_taskrun=True),
        id="expired with its pod still running: deletes both",
    ),
    pytest.param(
        {"current": pod("Running", deletion=True)},
        Expect(wake_at=FINISHED_AT + TTL),
        id="with its pod terminating: leaves it be",
    ),
    pytest.param(
        {"current": pod("Running"), "pod_deleted": True},
        Expect(wake_at=FINISHED_AT + TTL),
        id="with its pod seen deleted: leaves it be",
    ),
    pytest.param(
        {"spec": spec(cancel=True), "run": {"holds_slot": True}},
        Expect(release=True, unset=("phase",), refill="default"),
        id="cancelled afterwards while holding a slot: only releases it",
    ),
]


@pytest.mark.parametrize(("situation", "want"), FINISHED_ROWS)
@pytest.mark.parametrize("phase", FINISHED, ids=lambda p: f"a {p} run")
def test_finished(phase: Phase, situation: Obj, want: Expect) -> None:
    check(decide(finished(phase, **situation)), want)


# -- crash windows --------------------------------------------------------------------------
# ``reconcile._apply`` commits the transition, then records the pod in the cluster, deletes
# a pod, creates a pod. A crash between any two of these leaves what each row observes;
# the next decision must finish the job.


@pytest.mark.parametrize(
    ("o", "want"),
    [
        pytest.param(
            live(Phase.STARTING, None, pod_rec={"in_cluster": False, "started_at": None}),
            Expect(create_pod=True),
            id="after committing Starting, before creating the pod: the pod is created",
        ),
        pytest.param(
            observe(
                admitted(Phase.RESUMING, pods=2, resumes=1),
                pod_records=(
                    pod_record(outcome="Evicted", finished_at=NOW - timedelta(seconds=5)),
                    pod_record(2, in_cluster=False, started_at=None),
                ),
                pod=None,
            ),
            Expect(create_pod=True),
            id="after committing Resuming, before creating the next pod: the pod is created",
        ),
        pytest.param(
            observe(
                admitted(Phase.RESUMING, pods=2, resumes=1, definition=pinned(maxDuration="5m")),
                pod_records=(
                    pod_record(
                        started_at=NOW - timedelta(minutes=3),
                        outcome="Evicted",
                        finished_at=NOW - timedelta(minutes=1),
                    ),
                    pod_record(2, in_cluster=False, started_at=None),
                ),
                pod=None,
            ),
            Expect(create_pod=True, remaining=3 * 60),
            id="a pod created after a crash still gets only what is left of maxDuration",
        ),
        pytest.param(
            live(Phase.STARTING, pod("Pending"), pod_rec={"in_cluster": False}),
            Expect(mark_in_cluster=True),
            id="after creating the pod, before recording it in the cluster: it is recorded",
        ),
        pytest.param(
            live(Phase.RUNNING, pod("Running"), pod_rec={"in_cluster": False}),
            Expect(mark_in_cluster=True),
            id="after committing Running, before recording the pod: it is recorded",
        ),
        pytest.param(
            observe(
                slot(admit_as="pod", attempt=1, pods=1),
                pod_records=(pod_record(in_cluster=False, started_at=None),),
            ),
            Expect(phase=Phase.STARTING, create_pod=True),
            id="after a refused pod put the run back in Queued: the same pod is created",
        ),
        pytest.param(
            finished(Phase.CANCELLED, pod("Running")),
            Expect(delete_pod="report-1", wake_at=FINISHED_AT + TTL),
            id="after committing Cancelled, before deleting the pod: the pod is deleted",
        ),
        pytest.param(
            finished(Phase.FAILED, pod("Pending"), run={"holds_slot": True}),
            Expect(delete_pod="report-1", wake_at=FINISHED_AT + TTL),
            id="a finished run holding a slot and a pod: the pod is stopped, the slot kept",
        ),
        pytest.param(
            finished(Phase.FAILED, pod("Failed"), run={"holds_slot": True}),
            Expect(release=True, refill="default"),
            id="a finished run holding a slot whose pod has ended: the slot is handed on",
        ),
        pytest.param(
            waiting(resume_at=NOW + timedelta(minutes=5), current=pod("Running")),
            Expect(delete_pod="report-1", wake_at=NOW + timedelta(minutes=5)),
            id="after committing Waiting, before deleting the pod: the pod is deleted",
        ),
        pytest.param(
            observe(retrying(), pod_records=(ENDED_POD,), pod=pod("Pending")),
            Expect(delete_pod="report-1", wake_at=NOW + timedelta(seconds=30)),
            id="after committing Retrying with the pod still there: the pod is deleted",
        ),
        pytest.param(
            observe(queued(queued_at=None)),
            Expect(enqueue=DEFAULT_ENQUEUE, refill="default"),
            id="a Queued run that fell out of line: it is put back and the queue refilled",
        ),
    ],
)
def test_crash_windows_heal(o: Observed, want: Expect) -> None:
    check(decide(o), want)


def test_healing_converges() -> None:
    """Deciding again once the healing action is done leads to rest, not to a loop."""
    crashed = live(Phase.STARTING, None, pod_rec={"in_cluster": False, "started_at": None})
    assert decide(crashed).create_pod
    created = replace(crashed, pod=pod("Pending"))
    assert decide(created) == Plan(mark_in_cluster=True)
    recorded = replace(created, pod_records=(pod_record(in_cluster=True, started_at=None),))
    assert decide(recorded) == Plan()


# -- retry delays ---------------------------------------------------------------------------


def _retry_after_failure(attempt: int, **retry: Any) -> timedelta:
    o = live(
        Phase.RUNNING,
        pod("Failed", exit_code=1),
        run={
            "attempt": attempt,
            "definition": pinned(retry={"maxAttempts": 100, **retry}),
        },
        pod_rec={"error": {**TASK_ERROR, "retryable": True}},
    )
    plan = decide(o)
    assert plan.change is not None
    assert plan.change.set["phase"] == Phase.RETRYING.value
    due: datetime = plan.change.set["resume_at"]
    assert plan.wake_at == due
    return due - NOW


@pytest.mark.parametrize(
    ("retry", "attempt", "low", "high"),
    [
        # (policy, attempt) -> the backoff minDelay * factor ** (attempt - 1), up to 2x it
        pytest.param({}, 1, 1, 2, id="the first retry waits between 1s and 2s"),
        pytest.param({}, 4, 8, 16, id="the fourth retry waits between 8s and 16s"),
        pytest.param({}, 12, 300, 300, id="a late retry waits maxDelay"),
        pytest.param(
            {"minDelay": "4s", "maxDelay": "1m", "factor": 3.0},
            3,
            36,
            60,
            id="jitter past maxDelay is capped at maxDelay",
        ),
        pytest.param(
            {"minDelay": "10s", "maxDelay": "2s"},
            1,
            2,
            2,
            id="a maxDelay below minDelay wins",
        ),
    ],
)
def test_jittered_retry_delays_stay_in_range(
    retry: Obj, attempt: int, low: float, high: float
) -> None:
    min_delay = parse_duration(retry.get("minDelay", "1s"))
    max_delay = parse_duration(retry.get("maxDelay", "5m"))
    delays = [_retry_after_failure(attempt, **retry) for _ in range(100)]
    for delay in delays:
        assert timedelta(seconds=low) <= delay <= timedelta(seconds=high), delay
        assert delay <= max_delay
        assert delay >= min(min_delay, max_delay)
    if low < high:
        assert len(set(delays)) > 1, "jitter spreads retries out"


def test_retry_delay_without_jitter_is_the_backoff() -> None:
    retry = {"jitter": False, "minDelay": "2s", "factor": 3.0}
    assert [_retry_after_failure(a, **retry) for a in (1, 2, 3)] == [
        timedelta(seconds=s) for s in (2, 6, 18)
    ]


def test_retry_message_names_the_delay_and_the_machine() -> None:
    o = live(Phase.RUNNING, pod("Failed", **OOM))
    plan = decide(o)
    assert plan.change is not None
    message = plan.change.set["message"]
    assert message.startswith("attempt 1 failed (pod report-1 was OOM-killed")
    assert "retrying in " in message and message.endswith(" on small-1x")


# -- purity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: f"deciding twice on a {p} run agrees")
def test_decide_is_pure(phase: Phase) -> None:
    """Same observation, same plan (no jitter here), and the observation is not touched."""
    o = typical(phase)
    before = repr(o)
    assert decide(o) == decide(o)
    assert repr(o) == before


# -- a pod that existed though in_cluster was never set -------------------------------------


@pytest.mark.parametrize(
    ("pod_rec", "want"),
    [
        pytest.param(
            {"in_cluster": False, "output": {"rows": 3}},
            ending("Succeeded", Phase.SUCCEEDED, values={"output": {"rows": 3}}),
            id="a pod that reported its output and vanished before being recorded",
        ),
        pytest.param(
            {"in_cluster": False, "suspend": {"child": "kid"}},
            Expect(
                phase=Phase.WAITING,
                values={"waiting_for": "kid"},
                release=True,
                pod_outcome=(1, "Suspended"),
                refill="default",
            ),
            id="a pod that exited to wait and vanished before being recorded",
        ),
        pytest.param(
            {"in_cluster": False, "started_at": NOW},
            Expect(
                phase=Phase.RESUMING,
                values={"resumes": 1, "pods": 2},
                pod_outcome=(1, "Evicted"),
                new_pod=NewPod(2, 1, "report-2", "small-1x"),
                create_pod=True,
                events=("Evicted",),
            ),
            id="a pod that ran and vanished before being recorded is a disruption",
        ),
    ],
)
def test_reported_pod_is_not_created_again(pod_rec: Obj, want: Expect) -> None:
    # The crash: create_pod succeeded, the operator died before ``pods.in_cluster``; the
    # pod ran, reported, and was deleted (node drain) before any operator looked again.
    check(decide(live(Phase.STARTING, None, pod_rec={"started_at": None} | pod_rec)), want)


@pytest.mark.parametrize(
    ("run_started", "want"),
    [
        pytest.param(None, NOW - timedelta(seconds=7), id="never seen running: the pod's start"),
        pytest.param(
            NOW - timedelta(seconds=9), None, id="seen running: its start stays as it was"
        ),
    ],
)
def test_a_run_ending_before_it_was_seen_running_keeps_when_it_started(
    run_started: datetime | None, want: datetime | None
) -> None:
    o = live(
        Phase.STARTING,
        pod("Succeeded", exit_code=0),
        run={"started_at": run_started},
        pod_rec={"output": 1, "started_at": NOW - timedelta(seconds=7)},
    )
    plan = decide(o)
    assert plan.change is not None and plan.change.set["phase"] == "Succeeded"
    assert plan.change.set.get("started_at") == want


def test_a_pod_created_while_it_was_looked_for_is_not_taken_for_gone() -> None:
    """Another replica's pod: absent when read, recorded in the cluster just after. Whether
    it existed is what the records said before the pod was read: create it (a 409 finds
    it), never resume past it, which would give the run two pods."""
    o = live(Phase.STARTING, None, pod_rec={"in_cluster": True, "started_at": NOW}, known=False)
    assert decide(o) == Plan(create_pod=True, remaining_seconds=None)
    gone = live(Phase.STARTING, None, pod_rec={"in_cluster": True}, known=True)
    plan = decide(gone)
    assert plan.change is not None and plan.change.set["phase"] == Phase.RESUMING.value


def test_a_status_read_back_after_its_merge_patch_agrees_with_the_record() -> None:
    """Nulls inside objects (an error without traceback, an output holding null) vanish
    in a merge patch: the status read back must still agree, or it is patched forever."""
    from durapod.operator import projection

    rec = admitted(
        Phase.FAILED,
        error={"type": "PodRejected", "message": "no"},
        output={"a": None, "b": [None, {"c": None}]},
        finished_at=FINISHED_AT,
    )
    written = projection.status(rec)

    def merged(value: Any) -> Any:  # what the API server stores for a merge patch
        if isinstance(value, dict):
            return {k: merged(v) for k, v in value.items() if v is not None}
        return [merged(v) for v in value] if isinstance(value, list) else value

    stored = merged(written)
    assert written["error"]["traceback"] is None and "traceback" not in stored["error"]
    assert projection.patch(stored, rec) == {}
    assert projection.patch({**stored, "phase": "Running"}, rec) == {"phase": "Failed"}
