"""A Pending run: delayed until due, refused (unknown or invalid TaskDefinition, payload
too large, a duplicate idempotency key) or admitted into its queue with its definition
pinned."""

from __future__ import annotations

from datetime import datetime

from durapod.durations import parse_duration
from durapod.operator.decide import plans
from durapod.operator.decide.plans import ADMIT_START, Event, Observed, Plan
from durapod.resources.models import (
    Phase,
    payload_too_large,
)
from durapod.store.runs import Change
from durapod.timestamps import format_time, parse_time


def not_before(o: Observed) -> datetime | None:
    """When a delayed run (``spec.delay`` or ``spec.notBefore``) may start."""
    if o.spec.not_before:
        return parse_time(o.spec.not_before)
    if o.spec.delay:
        # From the record (sub-second; when the run was first recorded): a whole-second
        # creationTimestamp would start a run up to a second early.
        return o.record.created_at + parse_duration(o.spec.delay)
    return None


def admit(o: Observed) -> Plan:
    r = o.record
    start_at = not_before(o)
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
    if (too_large := payload_too_large(o.spec.payload)) is not None:
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
