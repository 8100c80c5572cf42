"""A finished run: its leftovers let go (a slot, a stray pod), its TaskRun deleted once
its TTL has passed."""

from __future__ import annotations

from durapod.operator.decide import plans
from durapod.operator.decide.plans import Observed, Plan
from durapod.store.runs import Change


def finished(o: Observed) -> Plan:
    r = o.record
    expires = r.expires_at or ((r.finished_at or o.now) + plans.ttl(o))
    if o.now >= expires:
        return Plan(delete_taskrun=not o.deleting, delete_pod=plans.stray_pod(o))
    if (r.holds_slot and not plans.pod_running(o)) or r.queued_at:
        # A slot still held (its pod has ended now), or a place in line: let it go.
        return Plan(change=Change(release=True), refill=r.queue, delete_pod=plans.stray_pod(o))
    return Plan(delete_pod=plans.stray_pod(o), wake_at=expires)
