"""What every decision is made of: the observation, the plan, and the transitions the
phases share (finish, back in line, the next pod).

A ``Plan`` is at most one transition of the run record (committed first, guarded by its
version) and then what to do in the cluster once it is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from durapod.durations import parse_duration
from durapod.operator.pods import pod_name
from durapod.resources.models import (
    Phase,
    RunError,
    TaskDefinitionSpec,
    TaskRunSpec,
)
from durapod.store.pods import PodRecord
from durapod.store.runs import Change, Enqueue, NewPod, Run

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
    #: Did the current pod's record say, before the pod was read, that it exists or ran?
    #: (Read after, it could say so of a pod created since: absent then is not gone.)
    #: None: as ``pod_records`` say.
    known: bool | None = None
    child: Child | None = None
    #: A pod ended in the namespace since this run's pod was refused by a ResourceQuota.
    unblocked: bool = False
    #: The TaskRun is being deleted (a finalizer holds it): its DELETED event will come.
    deleting: bool = False
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
    def pod_known(self) -> bool:
        if self.known is not None:
            return self.known
        record = self.pod_record
        return record is not None and (record.in_cluster or record.started_at is not None)

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


def run_error(kind: str, message: str, reason: str | None = None) -> Obj:
    return RunError(type=kind, reason=reason or kind, message=message).model_dump(exclude_none=True)


def recorded(error: Obj) -> Obj:
    """An error as the record keeps it: a ``RunError`` (retry hints are the verdict's)."""
    fields = {k: error[k] for k in RunError.model_fields if k in error}
    return RunError.model_validate(fields).model_dump(exclude_none=True)


def pinned(o: Observed) -> TaskDefinitionSpec:
    return TaskDefinitionSpec.model_validate(o.record.definition)


def ttl(o: Observed) -> timedelta:
    pinned = (o.record.definition or {}).get("ttl")
    return parse_duration(o.spec.ttl or pinned or DEFAULT_TTL)


def pod_alive(pod: Obj | None) -> bool:
    status = (pod or {}).get("status") or {}
    return pod is not None and status.get("phase") not in ("Succeeded", "Failed")


def pod_running(o: Observed) -> bool:
    """The run's pod still runs (terminating included): it still holds its queue slot."""
    return pod_alive(o.pod) and not o.pod_deleted


def stray_pod(o: Observed) -> str | None:
    """A pod the run no longer needs that still runs (a crash came before its delete)."""
    meta = (o.pod or {}).get("metadata") or {}
    if pod_alive(o.pod) and not meta.get("deletionTimestamp") and not o.pod_deleted:
        return o.pod_name
    return None


def enqueue(o: Observed, definition: TaskDefinitionSpec) -> Enqueue:
    queue = definition.queue
    return Enqueue(
        queue.name,
        queue.concurrency_limit,
        queue.concurrency_key_limit,
        o.spec.concurrency_key,
        o.spec.priority,
    )


def requeue(o: Observed, admit_as: str, why: str, **also: Any) -> Plan:
    """Back in line for a slot of the run's queue; its next pod starts on admission."""
    definition = pinned(o)
    message = f"{why}; waiting for a slot in queue {definition.queue.name}"
    change = Change(
        set={
            "phase": Phase.QUEUED.value,
            "admit_as": admit_as,
            "resume_at": None,
            "waiting_for": None,
            "message": message,
            "reason": None,
        },
        enqueue=enqueue(o, definition),
        **also,
    )
    return Plan(change=change, events=(Event("Queued", message),), refill=definition.queue.name)


def finish(
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
    # A pod can end before any operator saw it running: its runner's start still counts.
    started = [p.started_at for p in o.pod_records if p.started_at is not None]
    begun = {"started_at": min(started)} if r.started_at is None and started else {}
    if phase == Phase.SUCCEEDED:
        message = "the task returned"
    else:
        assert error is not None
        message = f"{error.get('reason') or error['type']}: {error['message']}"
    change = Change(
        set={
            "phase": phase.value,
            "output": output,
            "error": recorded(error) if error else None,
            "message": message,
            "reason": (error.get("reason") or error["type"]) if error else None,
            "finished_at": o.now,
            "expires_at": o.now + ttl(o),
            "resume_at": None,
            "waiting_for": None,
            "admit_as": None,
            **begun,
            **(also or {}),
        },
        # The slot goes back once no pod of the run runs: a cancelled pod terminating for
        # its grace period still counts against the queue (the pod's end comes back here).
        release=not pod_running(o),
        pod_outcome=(r.pods, pod_outcome or phase.value) if r.pods else None,
    )
    return Plan(
        change=change,
        events=(Event(phase.value, message, warning=phase != Phase.SUCCEEDED),),
        delete_pod=stray_pod(o),
        notify_parent=o.spec.parent is not None,
        refill=r.queue if r.holds_slot and not pod_running(o) else None,
    )


def time_left(o: Observed, definition: TaskDefinitionSpec) -> float | None:
    """What is left of maxDuration: it counts the time the run's pods have run."""
    if not definition.max_duration:
        return None
    used = timedelta()
    for record in o.pod_records:
        if record.started_at is not None:
            used += (record.finished_at or o.now) - record.started_at
    return (parse_duration(definition.max_duration) - used).total_seconds()


def next_pod(
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
    definition = pinned(o)
    remaining = time_left(o, definition)
    if remaining is not None and remaining <= 0:
        return timed_out(o, definition, pod_outcome)
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
            "reason": None,
        },
        new_pod=NewPod(index, number, name, machine),
        pod_outcome=(r.pods, pod_outcome) if pod_outcome and r.pods else None,
    )
    return Plan(change=change, events=events, create_pod=True, remaining_seconds=remaining)


def timed_out(o: Observed, definition: TaskDefinitionSpec, pod_outcome: str | None) -> Plan:
    message = f"the run used up its maxDuration of {definition.max_duration}"
    return finish(o, Phase.TIMED_OUT, error=run_error("TimedOut", message), pod_outcome=pod_outcome)
