"""What to do next for one run, decided from what was observed: a pure function.

``decide(observed)`` reads the TaskRun's spec, the run record (the truth of its
lifecycle), the current pod and its record, a child run and the time, and returns a
``Plan``: at most one transition of the record, then what to do in the cluster once it is
committed. No I/O here, so every case is a row of a table test; ``reconcile`` gathers
and applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from durapod.durations import format_duration, parse_duration
from durapod.operator import verdicts
from durapod.operator.pods import pod_name
from durapod.operator.verdicts import Outcome, Verdict
from durapod.resources.models import (
    Phase,
    RunError,
    TaskDefinitionSpec,
    TaskRunSpec,
    payload_too_large,
)
from durapod.store.pods import PodRecord
from durapod.store.runs import Change, Enqueue, NewPod, Run
from durapod.timestamps import format_time, parse_time

Obj = dict[str, Any]
LIVE = frozenset({Phase.STARTING, Phase.RESUMING, Phase.RUNNING})
DEFAULT_TTL = "7d"
#: What a queued run does once it holds a slot (``admit_as``).
ADMIT_START, ADMIT_RETRY, ADMIT_RESUME, ADMIT_POD = "start", "retry", "resume", "pod"


@dataclass(frozen=True)
class Child:
    """The run a Waiting run waits for: None phase while it is not finished."""

    name: str
    phase: Phase | None
    output: Any = None
    error: Obj | None = None
    lost: bool = False


@dataclass(frozen=True)
class Observed:
    now: datetime
    #: The TaskRun as read from the API server.
    namespace: str
    name: str
    created: datetime
    spec: TaskRunSpec
    record: Run
    #: For a Pending run: its TaskDefinition's spec, why it is invalid (str), or None (absent).
    definition: TaskDefinitionSpec | str | None = None
    #: For a Pending run with an idempotency key: the run holding the key.
    key_holder: str | None = None
    #: Every pod record of the run, oldest first.
    pod_records: tuple[PodRecord, ...] = ()
    #: The current pod (``<name>-<record.pods>``) as the API server has it; None if absent.
    pod: Obj | None = None
    #: The pod was seen deleted (its last state, or absent from the API server).
    pod_deleted: bool = False
    child: Child | None = None
    #: How long a run naming an unknown TaskDefinition waits for it.
    unknown_task_grace: timedelta = timedelta(seconds=10)

    @property
    def phase(self) -> Phase:
        return Phase(self.record.phase)

    @property
    def pod_record(self) -> PodRecord | None:
        current = [p for p in self.pod_records if p.idx == self.record.pods]
        return current[0] if current else None

    @property
    def pod_name(self) -> str:
        return pod_name(self.name, self.record.pods)


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Plan:
    """One transition (committed first, guarded by the record's version), then actions."""

    change: Change | None = None
    events: tuple[Event, ...] = ()
    #: Create the current pod, with this much of maxDuration left (None: no limit).
    create_pod: bool = False
    remaining_seconds: float | None = None
    #: The current pod exists: record that it is in the cluster.
    mark_in_cluster: bool = False
    delete_pod: str | None = None
    delete_taskrun: bool = False
    #: A queue to hand free slots out from.
    refill: str | None = None
    notify_parent: bool = False
    wake_at: datetime | None = None

    @property
    def idle(self) -> bool:
        return self == Plan(wake_at=self.wake_at)


def decide(o: Observed) -> Plan:
    phase = o.phase
    if phase.finished:
        return _finished(o)
    if o.spec.cancel:
        return _finish(o, Phase.CANCELLED, error=_error("Cancelled", "cancelled by spec.cancel"))
    if phase == Phase.PENDING:
        return _admit(o)
    if phase == Phase.QUEUED:
        return _queued(o)
    if phase in LIVE:
        return _live(o)
    if phase == Phase.RETRYING:
        return _when_due(o, ADMIT_RETRY)
    return _waiting(o)


# -- helpers ------------------------------------------------------------------------------


def _error(kind: str, message: str, reason: str | None = None) -> Obj:
    return RunError(type=kind, reason=reason or kind, message=message).model_dump(exclude_none=True)


def _recorded(error: Obj) -> Obj:
    """An error as the record keeps it: a ``RunError`` (retry hints are the verdict's)."""
    fields = {k: error[k] for k in RunError.model_fields if k in error}
    return RunError.model_validate(fields).model_dump(exclude_none=True)


def _definition(o: Observed) -> TaskDefinitionSpec:
    return TaskDefinitionSpec.model_validate(o.record.definition)


def _ttl(o: Observed) -> timedelta:
    pinned = (o.record.definition or {}).get("ttl")
    return parse_duration(o.spec.ttl or pinned or DEFAULT_TTL)


def _pod_alive(pod: Obj | None) -> bool:
    status = (pod or {}).get("status") or {}
    return pod is not None and status.get("phase") not in ("Succeeded", "Failed")


def _stray_pod(o: Observed) -> str | None:
    """A pod the run no longer needs that still runs (a crash came before its delete)."""
    meta = (o.pod or {}).get("metadata") or {}
    if _pod_alive(o.pod) and not meta.get("deletionTimestamp") and not o.pod_deleted:
        return o.pod_name
    return None


def _enqueue(o: Observed, definition: TaskDefinitionSpec) -> Enqueue:
    queue = definition.queue
    return Enqueue(
        queue.name,
        queue.concurrency_limit,
        queue.concurrency_key_limit,
        o.spec.concurrency_key,
        o.spec.priority,
    )


def _requeue(o: Observed, admit_as: str, why: str, **also: Any) -> Plan:
    """Back in line for a slot of the run's queue; its next pod starts on admission."""
    definition = _definition(o)
    message = f"{why}; waiting for a slot in queue {definition.queue.name}"
    change = Change(
        set={
            "phase": Phase.QUEUED.value,
            "admit_as": admit_as,
            "resume_at": None,
            "waiting_for": None,
            "message": message,
        },
        enqueue=_enqueue(o, definition),
        **also,
    )
    return Plan(change=change, events=(Event("Queued", message),), refill=definition.queue.name)


def _finish(
    o: Observed,
    phase: Phase,
    *,
    output: Any = None,
    error: Obj | None = None,
    pod_outcome: str | None = None,
    also: Obj | None = None,
) -> Plan:
    """End the run: its slot goes back, its pod (if still running) is stopped."""
    r = o.record
    if phase == Phase.SUCCEEDED:
        message = "the task returned"
    else:
        assert error is not None
        message = f"{error.get('reason') or error['type']}: {error['message']}"
    change = Change(
        set={
            "phase": phase.value,
            "output": output,
            "error": _recorded(error) if error else None,
            "message": message,
            "finished_at": o.now,
            "expires_at": o.now + _ttl(o),
            "resume_at": None,
            "waiting_for": None,
            "admit_as": None,
            **(also or {}),
        },
        release=True,
        pod_outcome=(r.pods, pod_outcome or phase.value) if r.pods else None,
    )
    return Plan(
        change=change,
        events=(Event(phase.value, message, warning=phase != Phase.SUCCEEDED),),
        delete_pod=_stray_pod(o),
        notify_parent=o.spec.parent is not None,
        refill=r.queue if r.holds_slot else None,
    )


def _not_before(o: Observed) -> datetime | None:
    """When a delayed run (``spec.delay`` or ``spec.notBefore``) may start."""
    if o.spec.not_before:
        return parse_time(o.spec.not_before)
    if o.spec.delay:
        # From the record (sub-second; when the run was first recorded): a whole-second
        # creationTimestamp would start a run up to a second early.
        return o.record.created_at + parse_duration(o.spec.delay)
    return None


def _remaining(o: Observed, definition: TaskDefinitionSpec) -> float | None:
    """What is left of maxDuration: it counts the time the run's pods have run."""
    if not definition.max_duration:
        return None
    used = timedelta()
    for record in o.pod_records:
        if record.started_at is not None:
            used += (record.finished_at or o.now) - record.started_at
    return (parse_duration(definition.max_duration) - used).total_seconds()


# -- phases -------------------------------------------------------------------------------


def _finished(o: Observed) -> Plan:
    r = o.record
    expires = r.expires_at or ((r.finished_at or o.now) + _ttl(o))
    if o.now >= expires:
        return Plan(delete_taskrun=True, delete_pod=_stray_pod(o))
    if r.holds_slot or r.queued_at:  # a slot still held: give it to the next in line
        return Plan(change=Change(release=True), refill=r.queue, delete_pod=_stray_pod(o))
    return Plan(delete_pod=_stray_pod(o), wake_at=expires)


def _admit(o: Observed) -> Plan:
    r = o.record
    start_at = _not_before(o)
    if start_at is not None and start_at > o.now:
        if r.resume_at == start_at:
            return Plan(wake_at=start_at)
        message = f"delayed until {format_time(start_at)}"
        return Plan(
            change=Change(set={"resume_at": start_at, "message": message}),
            events=(Event("Delayed", message),),
            wake_at=start_at,
        )
    task = o.spec.task
    if o.definition is None:
        message = f'TaskDefinition "{task}" not found in namespace "{o.namespace}"'
        give_up = o.created + o.unknown_task_grace
        if o.now >= give_up:
            return _finish(o, Phase.FAILED, error=_error("UnknownTask", message))
        waiting = f"{message}; waiting for it"
        if r.message == waiting:
            return Plan(wake_at=give_up)
        return Plan(change=Change(set={"message": waiting}), wake_at=give_up)
    if isinstance(o.definition, str):
        message = f"TaskDefinition {task!r} is invalid: {o.definition}"
        return _finish(
            o, Phase.FAILED, error=_error("InvalidTaskDefinition", message, "UnknownTask")
        )
    if (too_large := payload_too_large(o.spec.payload)) is not None:
        return _finish(o, Phase.FAILED, error=_error("PayloadTooLarge", too_large))
    if o.spec.idempotency_key and o.key_holder not in (None, o.name):
        message = f"idempotency key {o.spec.idempotency_key!r} belongs to run {o.key_holder}"
        return _finish(
            o,
            Phase.CANCELLED,
            error=_error("Duplicate", message),
            also={"duplicate_of": o.key_holder},
        )
    definition = o.definition
    pinned = definition.model_dump(by_alias=True, exclude_none=True, mode="json")
    message = f"waiting for a slot in queue {definition.queue.name}"
    change = Change(
        set={
            "phase": Phase.QUEUED.value,
            "definition": pinned,
            "attempt": 0,
            "pods": 0,
            "machine": definition.machine,
            "admit_as": ADMIT_START,
            "resume_at": None,
            "message": message,
        },
        enqueue=_enqueue(o, definition),
    )
    return Plan(change=change, events=(Event("Queued", message),), refill=definition.queue.name)


def _queued(o: Observed) -> Plan:
    r = o.record
    if not r.holds_slot:
        if r.queued_at is None:  # not in line (should not happen): get in line
            return Plan(change=Change(enqueue=_enqueue(o, _definition(o))), refill=r.queue)
        return Plan(refill=r.queue)
    admit_as = r.admit_as or ADMIT_START
    if admit_as == ADMIT_POD:  # its pod was refused by a ResourceQuota: try it again
        return Plan(
            change=Change(
                set={"phase": Phase.STARTING.value, "message": f"creating pod {o.pod_name}"}
            ),
            create_pod=True,
            remaining_seconds=_remaining(o, _definition(o)),
        )
    if admit_as == ADMIT_RESUME:
        return _next_pod(o, Phase.RESUMING)
    return _next_pod(o, Phase.STARTING, attempt=1)


def _next_pod(
    o: Observed,
    phase: Phase,
    *,
    attempt: int = 0,
    resumes: int = 0,
    pod_outcome: str | None = None,
    events: tuple[Event, ...] = (),
) -> Plan:
    """The run's next pod: its record is added with the transition, the pod after it."""
    r = o.record
    definition = _definition(o)
    remaining = _remaining(o, definition)
    if remaining is not None and remaining <= 0:
        return _timed_out(o, definition, pod_outcome)
    index, number = r.pods + 1, r.attempt + attempt
    machine = r.machine or definition.machine
    name = pod_name(o.name, index)
    change = Change(
        set={
            "phase": phase.value,
            "attempt": number,
            "resumes": r.resumes + resumes,
            "pods": index,
            "machine": machine,
            "admit_as": None,
            "resume_at": None,
            "waiting_for": None,
            "message": f"attempt {number}: starting pod {name}",
        },
        new_pod=NewPod(index, number, name, machine),
        pod_outcome=(r.pods, pod_outcome) if pod_outcome and r.pods else None,
    )
    return Plan(change=change, events=events, create_pod=True, remaining_seconds=remaining)


def _timed_out(o: Observed, definition: TaskDefinitionSpec, pod_outcome: str | None) -> Plan:
    message = f"the run used up its maxDuration of {definition.max_duration}"
    return _finish(o, Phase.TIMED_OUT, error=_error("TimedOut", message), pod_outcome=pod_outcome)


def _live(o: Observed) -> Plan:
    r = o.record
    record = o.pod_record
    if record is None:  # the transition that started this pod adds its record: defensive
        machine = r.machine or _definition(o).machine
        return Plan(change=Change(new_pod=NewPod(r.pods, max(r.attempt, 1), o.pod_name, machine)))
    reported = {"output": record.output, "error": record.error, "suspend": record.suspend}
    existed = record.in_cluster or record.started_at is not None or any(reported.values())
    if not existed and o.pod is None and not o.pod_deleted:
        # Maybe never created (a crash came before): create it, or find it (409). A pod
        # that reported or ran did exist, even if a crash kept in_cluster from being set.
        return Plan(create_pod=True, remaining_seconds=_remaining(o, _definition(o)))
    mark = not record.in_cluster and o.pod is not None
    if _pod_alive(o.pod) and not o.pod_deleted:
        pod_phase = ((o.pod or {}).get("status") or {}).get("phase")
        if pod_phase == "Running" and o.phase != Phase.RUNNING:
            message = f"attempt {r.attempt} is running in pod {o.pod_name}"
            return Plan(
                change=Change(
                    set={
                        "phase": Phase.RUNNING.value,
                        "started_at": r.started_at or o.now,
                        "message": message,
                    },
                    pod_started=r.pods,
                ),
                events=(Event("Running", message),),
                mark_in_cluster=mark,
            )
        return Plan(mark_in_cluster=mark)
    gone = {"metadata": {"name": o.pod_name}, "status": {"phase": "Unknown"}}
    verdict = verdicts.judge(o.pod or gone, o.pod is None or o.pod_deleted, reported)
    assert verdict is not None  # the pod has ended
    return _after(o, verdict, reported)


def _after(o: Observed, verdict: Verdict, reported: Obj) -> Plan:
    """Act on how the run's pod ended."""
    r = o.record
    definition = _definition(o)
    outcome = verdict.outcome.value
    if verdict.outcome == Outcome.SUCCEEDED:
        return _finish(o, Phase.SUCCEEDED, output=reported.get("output"), pod_outcome=outcome)
    if verdict.outcome == Outcome.TIMED_OUT:
        return _timed_out(o, definition, outcome)
    if verdict.outcome == Outcome.SUSPENDED:
        return _suspend(o, reported["suspend"])
    if verdict.outcome == Outcome.EVICTED:
        if r.resumes >= definition.max_resumes:
            message = (
                f"{verdict.detail}; the run already resumed "
                f"{definition.max_resumes} times (maxResumes)"
            )
            return _finish(
                o, Phase.FAILED, error=_error("TooManyResumes", message), pod_outcome=outcome
            )
        # A resume keeps the slot: no gap, no queue.
        event = Event("Evicted", f"{verdict.detail}; resuming from the last checkpoint", True)
        return _next_pod(o, Phase.RESUMING, resumes=1, pod_outcome=outcome, events=(event,))
    return _retry_or_fail(o, verdict, definition)


def _retry_or_fail(o: Observed, verdict: Verdict, definition: TaskDefinitionSpec) -> Plan:
    r = o.record
    error = verdict.error or {}
    outcome = verdict.outcome.value
    delay = verdicts.retry_delay(definition.retry, r.attempt, error)
    if delay is None:
        return _finish(o, Phase.FAILED, error=error, pod_outcome=outcome)
    machine = r.machine or definition.machine
    on_oom = definition.retry.on_oom
    if verdict.outcome == Outcome.OOM_KILLED and on_oom and on_oom.upgrade_machine:
        machine = verdicts.next_machine(machine)
    due = o.now + delay
    message = (
        f"attempt {r.attempt} failed ({verdict.detail}); retrying in "
        f"{format_duration(delay)} on {machine}"
    )
    change = Change(
        set={
            "phase": Phase.RETRYING.value,
            "resume_at": due,
            "machine": machine,
            "error": _recorded(error),
            "message": message,
        },
        release=True,
        pod_outcome=(r.pods, outcome),
    )
    return Plan(
        change=change,
        events=(Event("Retrying", message, warning=True),),
        refill=r.queue,
        wake_at=due,
    )


def _suspend(o: Observed, suspend: Obj) -> Plan:
    """The pod exited to wait: the run holds no pod and no slot until it is due."""
    r = o.record
    values: Obj = {"phase": Phase.WAITING.value}
    if suspend.get("until"):
        values["resume_at"] = parse_time(suspend["until"])
        message = f"sleeping until {suspend['until']}"
    else:
        values["waiting_for"] = suspend["child"]
        message = f"waiting for child run {suspend['child']}"
    change = Change(
        set={**values, "message": message},
        release=True,
        pod_outcome=(r.pods, Outcome.SUSPENDED.value),
    )
    return Plan(
        change=change,
        events=(Event("Waiting", f"{message}; no pod is held"),),
        delete_pod=o.pod_name if o.pod is not None and not o.pod_deleted else None,
        refill=r.queue,
        wake_at=values.get("resume_at"),
    )


def _when_due(o: Observed, admit_as: str) -> Plan:
    due = o.record.resume_at
    if due is not None and o.now < due:
        return Plan(wake_at=due, delete_pod=_stray_pod(o))
    why = "retry due" if admit_as == ADMIT_RETRY else "sleep over"
    plan = _requeue(o, admit_as, why)
    return replace(plan, delete_pod=_stray_pod(o))


def _waiting(o: Observed) -> Plan:
    r = o.record
    if r.resume_at is not None or not r.waiting_for:
        return _when_due(o, ADMIT_RESUME)
    child = o.child
    if child is None or (child.phase is None and not child.lost):
        return Plan(delete_pod=_stray_pod(o))  # the child's end brings us back here
    if child.lost:
        outcome: Obj = {
            "error": {"type": "ChildRunLost", "message": f"child run {child.name} was deleted"}
        }
    elif child.phase == Phase.SUCCEEDED:
        outcome = {"output": child.output}
    else:
        assert child.phase is not None
        outcome = {
            "error": child.error
            or {"type": child.phase.value, "message": f"child run ended {child.phase.value}"}
        }
    plan = _requeue(
        o,
        ADMIT_RESUME,
        f"child run {child.name} ended",
        checkpoint=(f"$wait:{child.name}", outcome),
    )
    return replace(plan, delete_pod=_stray_pod(o))
