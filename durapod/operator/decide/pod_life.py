"""A run with a pod: create it if it never was, note it running, and act on how it
ended (succeeded, suspended, timed out, disrupted, OOM-killed, failed or crashed)."""

from __future__ import annotations

from typing import Any

from durapod.durations import format_duration, parse_duration
from durapod.operator import verdicts
from durapod.operator.decide import plans
from durapod.operator.decide.plans import Event, Observed, Plan
from durapod.operator.verdicts import Outcome, Verdict
from durapod.resources.models import (
    Phase,
    TaskDefinitionSpec,
)
from durapod.store.runs import Change, NewPod
from durapod.timestamps import format_time, parse_time

Obj = dict[str, Any]


def live(o: Observed) -> Plan:
    r = o.record
    record = o.pod_record
    if record is None:  # the transition that started this pod adds its record: defensive
        machine = r.machine or plans.pinned(o).machine
        return Plan(change=Change(new_pod=NewPod(r.pods, max(r.attempt, 1), o.pod_name, machine)))
    reported = {"output": record.output, "error": record.error, "suspend": record.suspend}
    existed = o.pod_known or any(reported.values())
    if not existed and o.pod is None and not o.pod_deleted:
        # Maybe never created (a crash came before): create it, or find it (409). A pod
        # that reported or ran did exist, even if a crash kept in_cluster from being set.
        return Plan(create_pod=True, remaining_seconds=plans.time_left(o, plans.pinned(o)))
    mark = not record.in_cluster and o.pod is not None
    if plans.pod_alive(o.pod) and not o.pod_deleted:
        pod_phase = ((o.pod or {}).get("status") or {}).get("phase")
        if pod_phase == "Running" and o.phase != Phase.RUNNING:
            message = f"attempt {r.attempt} is running in pod {o.pod_name}"
            return Plan(
                change=Change(
                    set={
                        "phase": Phase.RUNNING.value,
                        "started_at": r.started_at or o.now,
                        "message": message,
                        "reason": None,
                    },
                    pod_started=r.pods,
                ),
                events=(Event("Running", message),),
                mark_in_cluster=mark,
            )
        if (stuck := verdicts.not_starting(o.pod or {})) is not None:
            return not_starting(o, *stuck, mark=mark)
        return Plan(mark_in_cluster=mark)
    gone = {"metadata": {"name": o.pod_name}, "status": {"phase": "Unknown"}}
    verdict = verdicts.judge(o.pod or gone, o.pod is None or o.pod_deleted, reported)
    assert verdict is not None  # the pod has ended
    return after(o, verdict, reported)


def not_starting(o: Observed, reason: str, detail: str, *, mark: bool) -> Plan:
    """The pod cannot start (no node can hold it, its image cannot be pulled): say so on
    the run, and fail it once it has waited its TaskDefinition's startDeadline."""
    r = o.record
    definition = plans.pinned(o)
    record = o.pod_record
    assert record is not None  # live() returned earlier without one
    deadline = record.created_at + parse_duration(definition.start_deadline)
    if o.now >= deadline:
        message = (
            f"pod {o.pod_name} did not start within its startDeadline of "
            f"{definition.start_deadline}: {reason}: {detail}"
        )
        error = plans.run_error("StartDeadlineExceeded", message, reason)
        return plans.finish(o, Phase.FAILED, error=error, pod_outcome="NotStarted")
    if r.reason == reason:
        return Plan(mark_in_cluster=mark, wake_at=deadline)
    message = (
        f"attempt {r.attempt}: pod {o.pod_name} cannot start ({reason}: {detail}); "
        f"the run fails at {format_time(deadline)} unless it starts (startDeadline "
        f"{definition.start_deadline})"
    )
    return Plan(
        change=Change(set={"reason": reason, "message": message}),
        events=(Event(reason, message, warning=True),),
        mark_in_cluster=mark,
        wake_at=deadline,
    )


def after(o: Observed, verdict: Verdict, reported: Obj) -> Plan:
    """Act on how the run's pod ended."""
    r = o.record
    definition = plans.pinned(o)
    outcome = verdict.outcome.value
    if verdict.outcome == Outcome.SUCCEEDED:
        return plans.finish(o, Phase.SUCCEEDED, output=reported.get("output"), pod_outcome=outcome)
    if verdict.outcome == Outcome.TIMED_OUT:
        return plans.timed_out(o, definition, outcome)
    if verdict.outcome == Outcome.SUSPENDED:
        return suspend(o, reported["suspend"])
    if verdict.outcome == Outcome.EVICTED:
        if r.resumes >= definition.max_resumes:
            message = (
                f"{verdict.detail}; the run already resumed "
                f"{definition.max_resumes} times (maxResumes)"
            )
            return plans.finish(
                o,
                Phase.FAILED,
                error=plans.run_error("TooManyResumes", message),
                pod_outcome=outcome,
            )
        # A resume keeps the slot: no gap, no queue.
        event = Event("Evicted", f"{verdict.detail}; resuming from the last checkpoint", True)
        return plans.next_pod(o, Phase.RESUMING, resumes=1, pod_outcome=outcome, events=(event,))
    return retry_or_fail(o, verdict, definition)


def retry_or_fail(o: Observed, verdict: Verdict, definition: TaskDefinitionSpec) -> Plan:
    r = o.record
    error = verdict.error or {}
    outcome = verdict.outcome.value
    delay = verdicts.retry_delay(definition.retry, r.attempt, error)
    if delay is None:
        return plans.finish(o, Phase.FAILED, error=error, pod_outcome=outcome)
    machine = r.machine or definition.machine
    on_oom = definition.retry.on_oom
    if verdict.outcome == Outcome.OOM_KILLED and on_oom and on_oom.upgrade_machine:
        machine = verdicts.next_machine(machine)
    due = o.now + delay
    message = (
        f"attempt {r.attempt} failed ({verdict.detail}); retrying in "
        f"{format_duration(delay)} on {machine}"
    )
    change = Change(
        set={
            "phase": Phase.RETRYING.value,
            "resume_at": due,
            "machine": machine,
            "error": plans.recorded(error),
            "message": message,
            "reason": error.get("reason") or error.get("type"),
        },
        release=True,
        pod_outcome=(r.pods, outcome),
    )
    return Plan(
        change=change,
        events=(Event("Retrying", message, warning=True),),
        refill=r.queue,
        wake_at=due,
    )


def suspend(o: Observed, suspend: Obj) -> Plan:
    """The pod exited to wait: the run holds no pod and no slot until it is due."""
    r = o.record
    values: Obj = {"phase": Phase.WAITING.value, "reason": None}
    if suspend.get("until"):
        values["resume_at"] = parse_time(suspend["until"])
        message = f"sleeping until {suspend['until']}"
    else:
        values["waiting_for"] = suspend["child"]
        message = f"waiting for child run {suspend['child']}"
    change = Change(
        set={**values, "message": message},
        release=True,
        pod_outcome=(r.pods, Outcome.SUSPENDED.value),
    )
    return Plan(
        change=change,
        events=(Event("Waiting", f"{message}; no pod is held"),),
        # An exited pod is kept (with its log, for ``durapod runs logs``) until its TaskRun
        # goes: it holds no node resources and no quota; only one still running is deleted.
        delete_pod=plans.stray_pod(o),
        refill=r.queue,
        wake_at=values.get("resume_at"),
    )
