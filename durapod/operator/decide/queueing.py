"""A run in line for a slot of its queue: once it holds one, its next pod starts; a
Retrying or sleeping run goes back in line when it is due."""

from __future__ import annotations

from dataclasses import replace

from durapod.operator.decide import plans
from durapod.operator.decide.plans import (
    ADMIT_POD,
    ADMIT_RESUME,
    ADMIT_RETRY,
    ADMIT_START,
    Observed,
    Plan,
)
from durapod.resources.models import Phase
from durapod.store.runs import Change


def queued(o: Observed) -> Plan:
    r = o.record
    if not r.holds_slot:
        if r.queued_at is None:  # not in line (should not happen): get in line
            return Plan(change=Change(enqueue=plans.enqueue(o, plans.pinned(o))), refill=r.queue)
        return Plan(refill=r.queue)
    admit_as = r.admit_as or ADMIT_START
    if admit_as == ADMIT_POD:  # its pod was refused by a ResourceQuota: try it again
        if r.resume_at is not None and o.now < r.resume_at and not o.unblocked:
            return Plan(wake_at=r.resume_at)  # no pod has ended since: wait a little
        return Plan(
            change=Change(
                set={
                    "phase": Phase.STARTING.value,
                    "admit_as": None,
                    "resume_at": None,
                    "message": f"creating pod {o.pod_name}",
                }
            ),
            create_pod=True,
            remaining_seconds=plans.time_left(o, plans.pinned(o)),
        )
    if admit_as == ADMIT_RESUME:
        return plans.next_pod(o, Phase.RESUMING)
    return plans.next_pod(o, Phase.STARTING, attempt=1)


def when_due(o: Observed, admit_as: str) -> Plan:
    due = o.record.resume_at
    if due is not None and o.now < due:
        return Plan(wake_at=due, delete_pod=plans.stray_pod(o))
    why = "retry due" if admit_as == ADMIT_RETRY else "sleep over"
    plan = plans.requeue(o, admit_as, why)
    return replace(plan, delete_pod=plans.stray_pod(o))
