"""What to do next for one run, decided from what was observed: a pure function.

``decide(observed)`` reads the TaskRun's spec, the run record (the truth of its
lifecycle), the current pod and its record, a child run and the time, and returns a
``Plan``: at most one transition of the record, then what to do in the cluster once it is
committed. No I/O here, so every case is a row of a table test; ``reconcile`` gathers
and applies. One module per part of a run's life: ``admission``, ``queueing``,
``pod_life``, ``children``, ``expiry``, on the shared ``plans``.
"""

from __future__ import annotations

from durapod.operator.decide import admission, children, expiry, plans, pod_life, queueing
from durapod.operator.decide.plans import ADMIT_RETRY, LIVE, Child, Event, Observed, Plan
from durapod.resources.models import Phase

__all__ = ["Child", "Event", "Observed", "Plan", "decide"]


def decide(o: Observed) -> Plan:
    phase = o.phase
    if phase.finished:
        return expiry.finished(o)
    if o.spec.cancel:
        return plans.finish(
            o, Phase.CANCELLED, error=plans.run_error("Cancelled", "cancelled by spec.cancel")
        )
    if phase == Phase.PENDING:
        return admission.admit(o)
    if phase == Phase.QUEUED:
        return queueing.queued(o)
    if phase in LIVE:
        return pod_life.live(o)
    if phase == Phase.RETRYING:
        return queueing.when_due(o, ADMIT_RETRY)
    return children.waiting(o)
