"""The operator's spans of a run: its root when its TaskRun came without one (kubectl
apply), each admission into its queue, and one span per attempt (pod).

An attempt's span is emitted once its pod's end is judged, by the replica whose
transition committed that judgement, with the id its pod was given in ``TRACEPARENT``
before it started (the runner's step spans are its children). Spans are emitted after
the commit: a crash in between loses at most that span, never a transition. Export runs
on the SDK's own thread; a reconcile never waits on it, and a failure here is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from durapod import traceparent, tracing
from durapod.operator import verdicts
from durapod.operator.decide import Observed, Plan
from durapod.operator.decide.plans import ADMIT_START
from durapod.resources.models import Phase
from durapod.store.pods import PodRecord
from durapod.store.runs import Run
from durapod.timestamps import parse_time, utcnow

log = logging.getLogger("durapod.operator")
Obj = dict[str, Any]
#: Pod outcomes that are the attempt's failure (its span's status is ERROR).
FAILED = frozenset({"TaskError", "Crashed", "OOMKilled", "TimedOut", "NotStarted"})


def root(run: Obj) -> tracing.Root:
    """The root of a run whose record is about to be made: its TaskRun's annotation (a
    trigger's), or, with tracing on, a new root span for a TaskRun made without one."""
    meta = run["metadata"]
    given = traceparent.annotated(meta)
    if given is not None or not tracing.enabled():
        return tracing.Root(given=given)
    return tracing.begin_root(
        "taskrun",
        meta["namespace"],
        run["spec"]["task"],
        start=parse_time(meta["creationTimestamp"]),
        attributes={"durapod.run.name": meta["name"], "durapod.run.id": meta["uid"]},
    )


def settle(made: tracing.Root, record: Run | None) -> None:
    """Export the new root span if the record made keeps it (another replica may have
    made the record first, with its own)."""
    made.settle(record.traceparent if record is not None else None, utcnow())


def pod_parent(record: Run) -> str | None:
    """The ``TRACEPARENT`` of the record's current pod: its attempt span (None while
    tracing is off, or for a run without a trace)."""
    root_span = traceparent.parse(record.traceparent)
    if root_span is None or not tracing.enabled():
        return None
    return str(traceparent.attempt(root_span, record.id, record.pods))


def committed(o: Observed, plan: Plan) -> None:
    """Emit the spans of the transition ``plan`` just committed, from the run as observed."""
    root_span = traceparent.parse(o.record.traceparent)
    if root_span is None or not tracing.enabled():
        return
    try:
        for done in spans(o, plan):
            tracing.emit(root_span, done)
    except Exception:
        log.warning("the spans of run %s/%s were not emitted", o.namespace, o.name, exc_info=True)


def spans(o: Observed, plan: Plan) -> list[tracing.Done]:
    """The spans a committed transition ends: the wait in line when it admits the run's
    next pod, and the attempt whose pod's end it judges first."""
    change = plan.change
    if change is None:
        return []
    r = o.record
    run = {"k8s.namespace.name": o.namespace, "durapod.run.name": o.name, "durapod.task": r.task}
    found = []
    if o.phase == Phase.QUEUED and change.new_pod is not None:
        found.append(
            tracing.Done(
                "admission",
                start=r.transitioned_at,  # when it went into line
                end=o.now,
                attributes={
                    **run,
                    "durapod.queue": r.queue,
                    "durapod.admit_as": r.admit_as or ADMIT_START,
                },
            )
        )
    if change.pod_outcome is not None:
        index, outcome = change.pod_outcome
        pod = next((p for p in o.pod_records if p.idx == index), None)
        # A pod judged before (a run cancelled while it waits to retry or for a child)
        # keeps its first outcome: its span, with that id, was emitted then.
        if pod is not None and pod.outcome is None:
            found.append(attempt(o, plan, pod, outcome, run))
    return found


def attempt(o: Observed, plan: Plan, pod: PodRecord, outcome: str, run: Obj) -> tracing.Done:
    """The span of the attempt ``pod`` ran, ended as ``outcome``: why (the disruption, the
    error), and the run's Events of that moment as span events."""
    assert plan.change is not None
    error = pod.error or plan.change.set.get("error") or {}
    reason = why(o, plan, outcome, error)
    attributes: Obj = {
        **run,
        "durapod.attempt": pod.attempt,
        "durapod.pod.index": pod.idx,
        "k8s.pod.name": pod.name,
        "durapod.machine": pod.machine,
        "durapod.outcome": outcome,
        "durapod.reason": reason,
    }
    if error.get("type"):
        attributes["durapod.error.type"] = error["type"]
    events = [tracing.SpanEvent("running", pod.started_at)] if pod.started_at else []
    events += [tracing.SpanEvent(e.reason, o.now, {"message": e.message}) for e in plan.events]
    return tracing.Done(
        "attempt",
        start=pod.created_at,
        end=o.now,
        span_id=traceparent.attempt_span_id(o.record.id, pod.idx),
        attributes=attributes,
        events=events,
        error=f"{reason}: {error.get('message') or outcome}" if outcome in FAILED else None,
    )


def why(o: Observed, plan: Plan, outcome: str, error: Obj) -> str:
    """One word for how the attempt ended: the disruption's reason for an evicted pod
    (EvictionByEvictionAPI, PreemptionByScheduler, PodDeleted...), else the error's."""
    if outcome == "Evicted":
        return (verdicts.disrupted(o.pod) if o.pod is not None else None) or "PodDeleted"
    assert plan.change is not None
    found = plan.change.set.get("reason") or error.get("reason") or error.get("type")
    return str(found or outcome)
