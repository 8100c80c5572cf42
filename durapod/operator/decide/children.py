"""A Waiting run: a durable sleep, or a child run whose outcome becomes a checkpoint of
the parent before it resumes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from durapod.operator.decide import plans, queueing
from durapod.operator.decide.plans import ADMIT_RESUME, Observed, Plan
from durapod.resources.models import (
    Phase,
)

Obj = dict[str, Any]


def waiting(o: Observed) -> Plan:
    r = o.record
    if r.resume_at is not None or not r.waiting_for:
        return queueing.when_due(o, ADMIT_RESUME)
    child = o.child
    if child is None or (child.phase is None and not child.lost):
        return Plan(delete_pod=plans.stray_pod(o))  # the child's end brings us back here
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
    plan = plans.requeue(
        o,
        ADMIT_RESUME,
        f"child run {child.name} ended",
        checkpoint=(f"$wait:{child.name}", outcome),
    )
    return replace(plan, delete_pod=plans.stray_pod(o))
