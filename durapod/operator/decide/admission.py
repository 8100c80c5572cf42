"""A Pending run: delayed until due, refused (unknown or invalid TaskDefinition, payload
too large, a duplicate idempotency key) or admitted into its queue with its definition
pinned."""

from __future__ import annotations

from datetime import datetime, timedelta

from durapod.durations import parse_duration
from durapod.operator.decide import plans
from durapod.operator.decide.plans import ADMIT_START, Event, Observed, Plan
from durapod.resources.models import Phase, TaskRunSpec, payload_too_large
from durapod.store.runs import Change
from durapod.timestamps import format_time, parse_time


def not_before(spec: TaskRunSpec, recorded: datetime, created: datetime) -> datetime | None:
    """When a delayed run (``spec.delay`` or ``spec.notBefore``) may start.

    ``delay`` counts from the TaskRun's creation: its record's sub-second time (a
    whole-second creationTimestamp would start it up to a second early), unless the record
    came late (no operator ran): then the creationTimestamp, a second on.
    """
    if spec.not_before:
        return parse_time(spec.not_before)
    if spec.delay:
        return min(recorded, created + timedelta(seconds=1)) + parse_duration(spec.delay)
    return None


def admit(o: Observed) -> Plan:
    r = o.record
    start_at = not_before(o.spec, o.record.created_at, o.created)
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
            return plans.finish(o, Phase.FAILED, error=plans.run_error("UnknownTask", message))
        waiting = f"{message}; waiting for it"
        if r.message == waiting:
            return Plan(wake_at=give_up)
        return Plan(change=Change(set={"message": waiting}), wake_at=give_up)
    if isinstance(o.definition, str):
        message = f"TaskDefinition {task!r} is invalid: {o.definition}"
        return plans.finish(
            o, Phase.FAILED, error=plans.run_error("InvalidTaskDefinition", message, "UnknownTask")
        )
    # The record's payload: what the runner gets (a spec edited since changes nothing).
    if (too_large := payload_too_large(o.record.payload)) is not None:
        return plans.finish(o, Phase.FAILED, error=plans.run_error("PayloadTooLarge", too_large))
    if o.spec.idempotency_key and o.key_holder not in (None, o.name):
        message = f"idempotency key {o.spec.idempotency_key!r} belongs to run {o.key_holder}"
        return plans.finish(
            o,
            Phase.CANCELLED,
            error=plans.run_error("Duplicate", message),
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
        enqueue=plans.enqueue(o, definition),
    )
    return Plan(change=change, events=(Event("Queued", message),), refill=definition.queue.name)
