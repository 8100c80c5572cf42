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
        return Plan(delete_taskrun=True, delete_pod=plans.stray_pod(o))
    if r.holds_slot or r.queued_at:  # a slot still held: give it to the next in line
        return Plan(change=Change(release=True), refill=r.queue, delete_pod=plans.stray_pod(o))
    return Plan(delete_pod=plans.stray_pod(o), wake_at=expires)
