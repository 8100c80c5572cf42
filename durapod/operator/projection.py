"""The TaskRun status as a projection of the run record (pure).

The status is written after the record's commit, by whichever replica finds it differs
from the record, and only the fields that differ are patched. Whatever wrote the status
last (a crashed replica, a person, a stale writer), the next reconcile puts it right.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from durapod.durations import format_duration
from durapod.operator.pods import pod_name
from durapod.resources.models import Checkpoint, Condition, Phase, RunError, TaskRunStatus
from durapod.store.runs import Run
from durapod.timestamps import format_time

Obj = dict[str, Any]


def conditions(record: Run) -> list[Condition]:
    """Ready / Succeeded / Failed, so ``kubectl wait --for=condition=Succeeded`` works."""
    phase = Phase(record.phase)
    states = {
        "Ready": not phase.finished,
        "Succeeded": phase == Phase.SUCCEEDED,
        "Failed": phase.finished and phase != Phase.SUCCEEDED,
    }
    return [
        Condition(
            type=kind,
            status="True" if state else "False",
            reason=phase.value,
            message=record.message,
            last_transition_time=format_time(record.transitioned_at),
        )
        for kind, state in states.items()
    ]


def last_checkpoint(step: str, at: datetime) -> Checkpoint:
    return Checkpoint(step=step, at=format_time(at))


def status(record: Run) -> Obj:
    """Every status field durapod owns, as the record says (None: absent)."""
    finished = Phase(record.phase).finished
    duration = None
    if finished and record.started_at and record.finished_at:
        duration = format_duration(record.finished_at - record.started_at)
    model = TaskRunStatus(
        phase=Phase(record.phase),
        attempt=record.attempt,
        resumes=record.resumes,
        pods=record.pods,
        pod_name=pod_name(record.name, record.pods) if record.pods else None,
        machine=record.machine,
        resume_at=format_time(record.resume_at) if record.resume_at else None,
        waiting_for=record.waiting_for,
        admit_as=record.admit_as,
        definition=record.definition,
        last_checkpoint=(
            last_checkpoint(record.shown_step, record.shown_at)
            if record.shown_step and record.shown_at
            else None
        ),
        output=record.output,
        error=RunError.model_validate(record.error) if record.error else None,
        started_at=format_time(record.started_at) if record.started_at else None,
        finished_at=format_time(record.finished_at) if record.finished_at else None,
        duration=duration,
        duplicate_of=record.duplicate_of,
        reason=record.reason,
        conditions=conditions(record),
    )
    projected: Obj = model.model_dump(by_alias=True, mode="json")
    return projected


def _pruned(value: Any) -> Any:
    """A value as it reads back after a merge patch: nulls inside objects are no keys."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def patch(current: Obj | None, record: Run) -> Obj:
    """The merge patch that makes ``current`` (a TaskRun status) match the record."""
    current = current or {}
    return {k: v for k, v in status(record).items() if _pruned(current.get(k)) != _pruned(v)}
