"""What a committed transition counts: the record before and after, and the change.

Called by the replica that committed the transition (transitions are guarded by the
record's version, so exactly one replica commits each): summed over replicas, every run
is counted once. ``samples`` decides (a pure function, tested as a table); ``transition``
applies its answer to the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram

from durapod.operator import metrics
from durapod.operator.decide.plans import Observed
from durapod.operator.verdicts import Outcome
from durapod.resources.models import FINISHED_PHASES, Phase
from durapod.store.pods import PodRecord
from durapod.store.runs import Change, Run
from durapod.timestamps import utcnow

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One count (a counter's increment) or one observation (a histogram's)."""

    metric: str
    labels: Labels
    value: float = 1.0


#: The metrics a transition counts, by the name they are exposed as.
METRICS: dict[str, Counter | Histogram] = {
    "durapod_runs_created_total": metrics.RUNS_CREATED,
    "durapod_runs_finished_total": metrics.RUNS_FINISHED,
    "durapod_run_duration_seconds": metrics.RUN_DURATION,
    "durapod_run_start_latency_seconds": metrics.RUN_START_LATENCY,
    "durapod_attempt_duration_seconds": metrics.ATTEMPT_DURATION,
    "durapod_pod_endings_total": metrics.POD_ENDINGS,
    "durapod_retries_total": metrics.RETRIES,
    "durapod_resumes_total": metrics.RESUMES,
}


def samples(
    before: Run,
    after: Run,
    change: Change,
    pods: Sequence[PodRecord],
    now: datetime,
    triggered: datetime | None = None,
) -> list[Sample]:
    """What the transition from ``before`` to ``after`` counts.

    ``pods`` are the run's pod records as read before the transition (an outcome set
    there was counted when it was set); ``now`` is when the transition committed;
    ``triggered`` the TaskRun's ``creationTimestamp`` (whole seconds, cut down).
    """
    run: Labels = (("namespace", after.namespace), ("task", after.task), ("queue", after.queue))
    out: list[Sample] = []
    if before.version == 0:  # the record's first transition: exactly once per record
        out.append(Sample("durapod_runs_created_total", run[:2]))
    if before.started_at is None and after.started_at is not None:
        waited = (after.started_at - trigger_time(after.created_at, triggered)).total_seconds()
        out.append(Sample("durapod_run_start_latency_seconds", run, max(waited, 0.0)))
    if change.pod_outcome is not None:
        idx, outcome = change.pod_outcome
        pod = next((p for p in pods if p.idx == idx), None)
        if pod is None or pod.outcome is None:  # a pod judged again keeps its first outcome
            ended = (*run, ("outcome", outcome))
            out.append(Sample("durapod_pod_endings_total", ended))
            if pod is not None and pod.started_at is not None:
                ran = (now - pod.started_at).total_seconds()
                out.append(Sample("durapod_attempt_duration_seconds", ended, max(ran, 0.0)))
    if before.attempt >= 1 and after.attempt > before.attempt:
        out.append(Sample("durapod_retries_total", run, after.attempt - before.attempt))
    if after.resumes > before.resumes:
        out.append(Sample("durapod_resumes_total", run, after.resumes - before.resumes))
    if Phase(after.phase).finished and not Phase(before.phase).finished:
        final = (*run, ("phase", after.phase))
        out.append(Sample("durapod_runs_finished_total", final))
        end = after.finished_at or now
        took = (end - (after.started_at or after.created_at)).total_seconds()
        out.append(Sample("durapod_run_duration_seconds", final, max(took, 0.0)))
    return out


def trigger_time(recorded: datetime, triggered: datetime | None) -> datetime:
    """When a run was triggered: its record's creation, unless its TaskRun is clearly
    older (applied with kubectl or by a schedule: the operator made the record when it
    first saw it, maybe after a backlog); then the end of the TaskRun's creation second,
    the latest it can have been."""
    if triggered is None:
        return recorded
    return min(recorded, triggered + timedelta(seconds=1))


def apply(found: Sequence[Sample]) -> None:
    for sample in found:
        metric = METRICS[sample.metric].labels(**dict(sample.labels))
        if isinstance(metric, Histogram):
            metric.observe(sample.value)
        else:
            metric.inc(sample.value)


def zeros(run: Run) -> None:
    """Make a new run's counters exist at 0 before anything is counted: ``rate()`` and
    ``increase()`` miss the first increment of a series that appears between two scrapes,
    so a task's first failure or eviction would otherwise never show."""
    labels = {"namespace": run.namespace, "task": run.task, "queue": run.queue}
    for phase in FINISHED_PHASES:
        metrics.RUNS_FINISHED.labels(**labels, phase=phase.value)
    for outcome in Outcome:
        metrics.POD_ENDINGS.labels(**labels, outcome=outcome.value)
    metrics.RETRIES.labels(**labels)
    metrics.RESUMES.labels(**labels)


def transition(o: Observed, after: Run | None, change: Change | None) -> None:
    """Count the transition of ``o.record`` to ``after`` (None: it was not committed)."""
    if after is None or change is None:
        return
    # Once admitted: its queue is known, and its task exists (a misspelt name makes none).
    if o.record.phase == Phase.PENDING and after.definition is not None:
        zeros(after)
    apply(samples(o.record, after, change, o.pod_records, utcnow(), o.created))
